// The submit form: as the data set, loss or noise changes, the preset values that a blank field
// takes and the loss's formula are asked again (…/submit/preset) and shown under their fields; a
// choice that cannot run is said at its field at once. A sent form's button is disabled, so a
// double click makes one job.
(function () {
  "use strict";
  const form = document.getElementById("submit-form");
  if (!form) return;
  const WATCHED = ["dataset", "loss", "noise_type", "noise_rate"];
  const WAIT_MS = 250;
  let timer = null;
  let asked = 0;

  function hint(name, text, placeholder) {
    const element = document.getElementById(`${name}-hint`);
    if (element) element.textContent = text;
    const input = form.elements.namedItem(name);
    if (input && placeholder !== undefined) input.placeholder = placeholder;
  }

  // A field's message (null clears it); the field is marked invalid while it has one.
  function problem(name, message) {
    const element = form.querySelector(`[data-error-for="${name}"]`);
    const input = form.elements.namedItem(name);
    if (!element || !input) return;
    element.textContent = message || "";
    element.hidden = !message;
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", element.id);
    } else {
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", `${name}-hint`);
    }
  }

  function show(preset) {
    const formula = document.getElementById("loss-formula");
    if (preset.error) {
      for (const name of WATCHED) problem(name, preset.error.field === name ? preset.error.message : null);
      if (!WATCHED.includes(preset.error.field)) formula.replaceChildren(paragraph(preset.error.message));
      return;
    }
    for (const name of WATCHED) problem(name, null);
    formula.replaceChildren(...preset.formula.map(paragraph));
    hint("alpha", `preset: ${preset.alpha}`, String(preset.alpha));
    hint("beta", preset.takes_beta ? `preset: ${preset.beta}` : "preset: not used by this loss",
      preset.takes_beta ? String(preset.beta) : "");
    hint("epochs", `preset: ${preset.epochs}`, String(preset.epochs));
    hint("train_size", `a seeded subset; preset: all ${preset.train_size}`, String(preset.train_size));
    const more = document.getElementById("preset-more");
    more.textContent = `With the preset's model ${preset.model}, lr ${preset.lr}, batch size ${preset.batch_size}.`;
  }

  function paragraph(text) {
    const p = document.createElement("p");
    p.textContent = text;
    return p;
  }

  async function ask() {
    const mine = ++asked;
    // (form.dataset is the form's "dataset" input, so the form's data attributes are read by name)
    const url = new URL(form.getAttribute("data-preset"), location.href);
    for (const name of WATCHED) url.searchParams.set(name, form.elements.namedItem(name).value);
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok || mine !== asked) return; // a later change asked again meanwhile
    show(await response.json());
    form.setAttribute("data-preset-shown", String(mine));
  }

  function changed() {
    clearTimeout(timer);
    timer = setTimeout(() => ask().catch((error) => console.warn("the preset could not be read", error)), WAIT_MS);
  }

  for (const name of WATCHED) {
    const input = form.elements.namedItem(name);
    input.addEventListener("input", changed);
    input.addEventListener("change", changed);
  }
  // Clean labels take no rate: choosing "none" sets it to 0 (and the form remembers the rate it had).
  const rate = form.elements.namedItem("noise_rate");
  form.elements.namedItem("noise_type").addEventListener("change", (event) => {
    if (event.target.value === "none") {
      rate.dataset.before = rate.value;
      rate.value = "0";
    } else if (rate.dataset.before && Number(rate.value) === 0) {
      rate.value = rate.dataset.before;
    }
    changed();
  });
  form.addEventListener("submit", () => {
    form.querySelector("button[type=submit]").disabled = true;
  });
})();
