// A sweep's page: a chart of accuracy against the swept value, one line per line of the grid
// (a loss), error bars one standard deviation, read from the grid itself (#sweep-grid: the
// columns' values, each cell's data-mean/data-std), and drawn again when the live grid changes.
// A swept value that is not a number gets evenly spaced places on the x axis, named by its value.
(function () {
  "use strict";
  const box = document.getElementById("sweep-charts");
  if (!box || !window.uPlot || !window.noisyfit || !window.noisyfit.charts) return;
  const charts = window.noisyfit.charts;
  const CAP = 4; // half the width of an error bar's caps, in CSS pixels
  const DODGE = 5; // lines at the same x are drawn this far apart, so their bars do not hide each other
  let drawn = null; // { key, charts: [{ chart, figure }] }

  function readGrid() {
    const table = document.getElementById("sweep-grid");
    if (!table) return null;
    const columns = Array.from(table.querySelectorAll("thead th[data-value]"), (th) => JSON.parse(th.dataset.value));
    const numeric = columns.every((v) => typeof v === "number");
    // A chart's x values ascend: numbers in their order, other values in the table's.
    const order = columns.map((v, i) => i);
    if (numeric) order.sort((a, b) => columns[a] - columns[b]);
    const lines = Array.from(table.querySelectorAll("tbody tr[data-line]"), (tr) => {
      const cells = new Map(Array.from(tr.querySelectorAll("td[data-x]"), (td) => [Number(td.dataset.x), td.dataset]));
      const column = (key) => order.map((x) => (cells.has(x) && cells.get(x)[key] != null ? Number(cells.get(x)[key]) * 100 : null));
      return { label: tr.dataset.line, mean: column("mean"), std: column("std"), valMean: column("valMean"), valStd: column("valStd") };
    });
    return { column: table.dataset.column, values: order.map((x) => columns[x]), numeric, lines };
  }

  function errorBars(grid, figure) {
    return (u) => {
      const ctx = u.ctx;
      const px = devicePixelRatio || 1;
      grid.lines.forEach((line, i) => {
        if (!u.series[i + 1].show) return;
        const means = line[figure.mean];
        const stds = line[figure.std];
        const shift = (i - (grid.lines.length - 1) / 2) * DODGE * px;
        ctx.save();
        ctx.strokeStyle = charts.style(i).stroke;
        ctx.lineWidth = 1.5 * px;
        ctx.beginPath();
        u.data[0].forEach((xValue, j) => {
          if (means[j] == null || stds[j] == null) return;
          const x = u.valToPos(xValue, "x", true) + shift;
          const low = u.valToPos(means[j] - stds[j], "y", true);
          const high = u.valToPos(means[j] + stds[j], "y", true);
          ctx.moveTo(x, low);
          ctx.lineTo(x, high);
          ctx.moveTo(x - CAP * px, low);
          ctx.lineTo(x + CAP * px, low);
          ctx.moveTo(x - CAP * px, high);
          ctx.lineTo(x + CAP * px, high);
        });
        ctx.stroke();
        ctx.restore();
      });
    };
  }

  // The y range: every mean and its error bar, with a margin, within 0–100.
  function yRange(grid, figure) {
    const ends = grid.lines.flatMap((line) => line[figure.mean].flatMap((m, j) =>
      (m == null ? [] : [m - (line[figure.std][j] || 0), m + (line[figure.std][j] || 0)])));
    if (!ends.length) return [0, 100];
    const low = Math.min(...ends);
    const high = Math.max(...ends);
    const margin = Math.max(1, (high - low) * 0.1);
    return [Math.max(0, low - margin), Math.min(100, high + margin)];
  }

  function xAxis(grid) {
    if (!grid.numeric) {
      const names = grid.values.map((v) => (typeof v === "string" ? v : JSON.stringify(v)));
      const xs = names.map((_, i) => i);
      return { xs, xMin: -0.5, xMax: names.length - 0.5, xValues: (u, ticks) => ticks.map((t) => names[t] ?? "") };
    }
    const low = Math.min(...grid.values);
    const high = Math.max(...grid.values);
    const pad = high > low ? (high - low) * 0.06 : 0.5;
    return { xs: grid.values, xMin: low - pad, xMax: high + pad, xValues: (u, ticks) => ticks.map((t) => charts.shortNumber(t)) };
  }

  function draw() {
    const grid = readGrid();
    if (!grid || grid.values.length < 2 || !grid.lines.length) {
      box.textContent = "The sweep varies no value besides the loss setting: its table above says it all.";
      return;
    }
    const figures = [{ title: "Clean test accuracy (%)", mean: "mean", std: "std" }];
    if (box.dataset.validation === "true") {
      figures.push({ title: "Accuracy on the noisy validation split (%)", mean: "valMean", std: "valStd" });
    }
    const axis = xAxis(grid);
    const key = JSON.stringify([grid.values, grid.lines.map((l) => l.label), figures.length]);
    if (!drawn || drawn.key !== key) {
      box.replaceChildren();
      const state = { grid };
      drawn = { key, state, charts: figures.map((figure) => ({ figure, chart: charts.lineChart(box, {
        title: figure.title, yLabel: "%", xLabel: grid.column || "cell", xMin: axis.xMin, xMax: axis.xMax,
        xSplits: axis.xs, xValues: axis.xValues, series: grid.lines.map((l) => l.label), spanGaps: true, legendLatest: false,
        format: (v) => String(Number(v.toFixed(2))), height: 300,
        hooks: { draw: [(u) => errorBars(state.grid, figure)(u)] }, yRange: () => yRange(state.grid, figure),
      }) })) };
    }
    drawn.state.grid = grid;
    for (const { figure, chart } of drawn.charts) chart.setData(axis.xs, grid.lines.map((line) => line[figure.mean]));
    box.dataset.lines = String(grid.lines.length);
  }

  draw();
  document.addEventListener("noisyfit:refreshed", draw);
})();
