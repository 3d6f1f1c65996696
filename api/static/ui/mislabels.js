// A job's mislabels page: "label is wrong" / "label is right" marks, kept in this browser
// (localStorage, one entry per job, so they survive paging and reloads), exported as a CSV of
// index,label (the predicted class, or -1 to drop) or sent as a new version of the data set.
(function () {
  "use strict";
  const panel = document.getElementById("decisions");
  if (!panel) return;
  const KEY = `noisyfit:decisions:${panel.dataset.job}`;
  const count = document.getElementById("decision-count");
  const action = document.getElementById("decision-action");
  const cards = Array.from(document.querySelectorAll("li.suspect[data-index]"));

  // { index: { mark: "wrong" | "right", predicted: class } }
  function load() {
    try {
      return JSON.parse(localStorage.getItem(KEY) || "{}");
    } catch (ignored) {
      return {};
    }
  }

  let marks = load();

  function save() {
    if (Object.keys(marks).length) localStorage.setItem(KEY, JSON.stringify(marks));
    else localStorage.removeItem(KEY);
  }

  function wrongOnes() {
    return Object.entries(marks).filter(([, m]) => m.mark === "wrong").map(([index, m]) => [Number(index), m.predicted])
      .sort((a, b) => a[0] - b[0]);
  }

  function show() {
    for (const card of cards) {
      const mark = (marks[card.dataset.index] || {}).mark;
      card.dataset.mark = mark || "";
      for (const button of card.querySelectorAll("button[data-mark]")) {
        button.setAttribute("aria-pressed", String(button.dataset.mark === mark));
      }
    }
    const wrong = wrongOnes().length;
    const right = Object.keys(marks).length - wrong;
    count.textContent = wrong || right
      ? `${wrong} marked wrong, ${right} marked right (on every page).`
      : "No marks yet: mark a sample \"label is wrong\" or \"label is right\".";
    panel.dataset.wrong = String(wrong);
  }

  for (const card of cards) {
    for (const button of card.querySelectorAll("button[data-mark]")) {
      button.addEventListener("click", () => {
        const index = card.dataset.index;
        marks = load(); // another tab may have marked meanwhile
        if ((marks[index] || {}).mark === button.dataset.mark) delete marks[index];
        else marks[index] = { mark: button.dataset.mark, predicted: Number(card.dataset.predicted) };
        save();
        show();
      });
    }
  }

  function decisions() {
    const drop = action.value === "drop";
    const wrong = wrongOnes();
    return drop ? { changes: [], drop: wrong.map(([index]) => index) } : { changes: wrong, drop: [] };
  }

  document.getElementById("export-decisions").addEventListener("click", () => {
    const drop = action.value === "drop";
    const lines = ["index,label", ...wrongOnes().map(([index, predicted]) => `${index},${drop ? -1 : predicted}`)];
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    link.download = `${panel.dataset.job}-decisions.csv`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  });

  document.getElementById("clear-decisions").addEventListener("click", () => {
    marks = {};
    save();
    show();
  });

  document.getElementById("version-form").addEventListener("submit", (event) => {
    marks = load();
    if (!wrongOnes().length) {
      event.preventDefault();
      count.textContent = "Mark at least one sample \"label is wrong\" first: a version changes those.";
      return;
    }
    document.getElementById("decisions-field").value = JSON.stringify(decisions());
  });

  window.addEventListener("storage", (event) => {
    if (event.key === KEY) {
      marks = load();
      show();
    }
  });
  show();
})();
