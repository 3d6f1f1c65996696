// The compare page: every compared job's curves in one chart per figure, one line per job in
// the colour and dash of its row in the table (the table is the legend when there are many);
// pointing at a line or a row picks that job out in every chart. The curves come in one answer
// (…/compare/metrics), asked again while a compared job is queued or running.
(function () {
  "use strict";
  const box = document.getElementById("compare-charts");
  if (!box || !window.uPlot || !window.noisyfit || !window.noisyfit.charts) return;
  const charts = window.noisyfit.charts;
  const rows = Array.from(document.querySelectorAll("#compare-table tbody tr[data-job]"));
  const readout = document.getElementById("compare-focus");
  const percent = { yRange: [0, 100], format: (v) => String(Number(v.toFixed(1))) };
  const FIGURES = [
    { key: "test_acc", title: "Clean test accuracy (%)", yLabel: "%", scale: 100, ...percent },
    { key: "train_acc", title: "Accuracy on the noisy training labels (%)", yLabel: "%", scale: 100, ...percent },
    { key: "memorized", title: "Corrupted samples memorised (%)", yLabel: "% of corrupted", scale: 100, ...percent },
    { key: "train_loss", title: "Training loss", yLabel: "loss" },
    { key: "val_acc", title: "Accuracy on the noisy validation labels (%)", yLabel: "%", scale: 100, ...percent,
      optional: true },
  ];
  let drawn = []; // { figure, chart }

  rows.forEach((row, i) => {
    const line = row.querySelector("svg.swatch line");
    const { stroke, dash } = charts.style(i);
    line.setAttribute("stroke", stroke);
    line.setAttribute("stroke-width", "3");
    if (dash.length) line.setAttribute("stroke-dasharray", dash.join(" "));
    const pick = () => focus(i);
    row.addEventListener("mouseenter", pick);
    row.addEventListener("focusin", pick);
    row.addEventListener("mouseleave", () => focus(null));
    row.addEventListener("focusout", () => focus(null));
  });

  function focus(i) {
    for (const { chart } of drawn) chart.focus(i);
    marked(i);
  }

  // The row of the line nearest the pointer (or of the row pointed at) is marked and read out.
  function marked(i) {
    rows.forEach((row, j) => row.classList.toggle("focused", i === j));
    readout.textContent = i == null ? "" : `${rows[i].dataset.job}: ${rows[i].dataset.label}`;
  }

  function build(data) {
    const present = FIGURES.filter((f) => !f.optional || data.jobs.some((job) => Array.isArray(job[f.key])));
    const xMax = data.epochs.length ? data.epochs[data.epochs.length - 1] : 1;
    drawn = present.map((figure) => ({
      figure,
      chart: charts.lineChart(box, {
        title: figure.title, yLabel: figure.yLabel, xMax, yRange: figure.yRange, format: figure.format,
        series: rows.map((row) => row.dataset.label), legend: box.dataset.legend === "true", spanGaps: true,
        points: rows.length <= 6,
        onFocus: marked, height: 260,
      }),
    }));
  }

  function fill(data) {
    const byId = new Map(data.jobs.map((job) => [job.id, job]));
    for (const { figure, chart } of drawn) {
      chart.setData(data.epochs, rows.map((row) => {
        const column = (byId.get(row.dataset.job) || {})[figure.key];
        if (!Array.isArray(column)) return data.epochs.map(() => null);
        return column.map((v) => (typeof v === "number" ? v * (figure.scale || 1) : null));
      }));
    }
  }

  function showError(message) {
    const element = document.getElementById("charts-error");
    element.textContent = message;
    element.hidden = false;
  }

  async function load() {
    const response = await fetch(box.dataset.metrics, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        message = (await response.json()).error.message;
      } catch (ignored) { /* the status says enough */ }
      throw new Error(message);
    }
    const data = await response.json();
    if (!drawn.length) build(data);
    fill(data);
    const thinned = data.jobs.filter((job) => job.thinned).length;
    document.getElementById("compare-thinned").hidden = !thinned;
    if (data.epochs.length) charts.drawnFirst();
    box.dataset.loaded = "true";
    if (data.active) setTimeout(() => load().catch(failed), Number(box.dataset.liveMs) || 5000);
  }

  function failed(error) {
    showError(`The curves could not be read: ${error.message}. Reload the page.`);
  }

  load().catch(failed);
})();
