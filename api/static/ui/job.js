// A job's page: its charts, filled with the past metric events (GET …/metrics, paged) and then
// live from its event stream (…/events, Server-Sent Events) until the `done` event; status
// events refresh the page's summary and artifacts (noisyfit.refresh, app.js).
(function () {
  "use strict";
  const box = document.getElementById("charts");
  if (!box || !window.uPlot || !window.noisyfit || !window.noisyfit.charts) return;
  const noisyfit = window.noisyfit;
  const PAGE = 1000;
  const FINISHED = ["succeeded", "failed", "cancelled"];
  const percent = { yRange: [0, 100], format: (v) => String(Number(v.toFixed(1))) };
  const CHARTS = [
    { title: "Accuracy (%)", yLabel: "%", scale: 100, ...percent, series: [
      ["test_acc", "clean test accuracy"],
      ["train_acc", "accuracy on the noisy training labels"],
      ...(box.dataset.validation === "true" ? [["val_acc", "accuracy on the noisy validation labels"]] : []),
    ] },
    { title: "Corrupted training samples (%)", yLabel: "% of corrupted", scale: 100, ...percent, series: [
      ["memorized", "predicted as their noisy label (memorised)"],
      ["true_label_acc_on_corrupted", "predicted as their true label"],
    ] },
    { title: `Training loss (${box.dataset.loss})`, yLabel: "loss", series: [["train_loss", "training loss"]] },
    { title: "Learning rate", yLabel: "learning rate", series: [["lr", "learning rate"]] },
  ];
  const epochs = Number(box.dataset.epochs) || 1;
  const charts = CHARTS.map((def) => ({
    def,
    chart: noisyfit.charts.lineChart(box, {
      title: def.title, yLabel: def.yLabel, xMax: epochs, yRange: def.yRange, format: def.format,
      series: def.series.map(([, label]) => label),
    }),
  }));
  const rows = new Map(); // epoch -> its event (a resumed job may send an epoch again)
  let drawing = false;

  function draw() {
    drawing = false;
    const xs = Array.from(rows.keys()).sort((a, b) => a - b);
    for (const { def, chart } of charts) {
      chart.setData(xs, def.series.map(([key]) => xs.map((epoch) => {
        const value = rows.get(epoch)[key];
        return typeof value === "number" ? value * (def.scale || 1) : null;
      })));
    }
    if (xs.length) noisyfit.charts.drawnFirst(); // bench/ui.py reads the mark
  }

  function redraw() {
    if (!drawing) {
      drawing = true;
      requestAnimationFrame(draw);
    }
  }

  function record(event) {
    if (event.type === "epoch" && typeof event.epoch === "number") rows.set(event.epoch, event);
  }

  function showProgress(epoch) {
    const head = document.getElementById("job-head");
    const bar = head && head.querySelector("[data-progress] progress");
    const text = head && head.querySelector("[data-progress] .progress-text");
    if (bar && epoch > Number(bar.value)) {
      bar.value = epoch;
      if (text) text.textContent = `${epoch} / ${bar.max}`;
    }
  }

  function showError(message) {
    const element = document.getElementById("charts-error");
    element.textContent = message;
    element.hidden = false;
  }

  async function errorOf(response) {
    try {
      return (await response.json()).error.message;
    } catch (ignored) {
      return `HTTP ${response.status}`;
    }
  }

  function refreshSummary() {
    return noisyfit.refresh(["job-head", "job-artifacts"]).catch(() => false);
  }

  function follow(after) {
    const url = new URL(box.dataset.events, location.href);
    if (after) url.searchParams.set("after", after);
    const source = new EventSource(url);
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      record(event);
      if (event.type === "epoch") {
        redraw();
        showProgress(event.epoch);
      } else if (event.type === "status" || event.type === "done") {
        refreshSummary();
      }
      if (event.type === "done") source.close();
    };
    source.addEventListener("refused", (message) => {
      source.close();
      const error = JSON.parse(message.data).error;
      showError(`The live updates stopped: ${error.message}. Reload the page.`);
    });
    source.onerror = async () => {
      if (source.readyState === EventSource.CLOSED) {
        showError("The live updates stopped (the server refused the stream); reload the page.");
        return;
      }
      await refreshSummary(); // reconnecting: stop if the job finished without our seeing `done`
      const head = document.getElementById("job-head");
      if (head && FINISHED.includes(head.dataset.status)) source.close();
    };
  }

  async function load() {
    let after = null;
    let done = false;
    for (;;) {
      const url = new URL(box.dataset.metrics, location.href);
      url.searchParams.set("limit", String(PAGE));
      if (after) url.searchParams.set("after", after);
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(await errorOf(response));
      const page = await response.json();
      for (const event of page.events) {
        record(event);
        done = done || event.type === "done";
      }
      after = page.next;
      if (page.events.length < PAGE) break;
    }
    draw();
    const renderedFinished = box.dataset.finished === "true";
    if (done && !renderedFinished) refreshSummary(); // it finished between the page and its metrics
    if (!done && !renderedFinished) follow(after);
  }

  load().catch((error) => showError(`The metrics could not be read: ${error.message}. Reload the page.`));
})();
