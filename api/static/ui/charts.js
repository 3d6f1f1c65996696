// Line charts for the dashboard, on uPlot (api/static/vendor/uplot). Colours are Okabe–Ito's
// colour-blind-safe palette and every line has its own dash pattern as well, so lines are told
// apart without colour; the x axis (epochs) has whole-number ticks; a chart follows the width
// of its box. The container's data-points attribute counts the x values drawn.
(function () {
  "use strict";
  const noisyfit = (window.noisyfit = window.noisyfit || {});
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  const DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3]];
  const LIVE_LEGEND_WIDTH = 520;
  const FIRST_CHART = "noisyfit:first-chart";
  const WHOLE_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000];

  function shortNumber(value) {
    if (value === 0) return "0";
    const size = Math.abs(value);
    return size >= 1e4 || size < 1e-3 ? value.toExponential(1) : String(Number(value.toPrecision(3)));
  }

  // A legend value: the hovered point's, or with no point hovered the line's latest (or none).
  function shown(u, value, seriesIndex, index, format, latest = true) {
    if (index == null) {
      if (!latest) return "–";
      const column = u.data[seriesIndex] || [];
      for (let i = column.length - 1; i >= 0; i--) if (column[i] != null) return format(column[i]);
      return "–";
    }
    return value == null ? "–" : format(value);
  }

  // Line i's colour and dash: the 7 colours and 4 dashes give 28 lines that all look different.
  function style(i) {
    return { stroke: PALETTE[i % PALETTE.length], dash: DASHES[i % DASHES.length] };
  }

  // options: title, yLabel, series: [label, ...], xLabel ("epoch"), xMin (0), xMax (the last
  // epoch to expect), yRange ([min, max] or none), format (a value as shown), height;
  // legend (false: none, for many lines, whose page names them itself), onFocus(i or null:
  // the line nearest the pointer, which the chart then draws over the others faded),
  // xSplits (where the x axis has its ticks) and xValues (their labels) in place of whole epochs;
  // spanGaps (draw a line across missing points); points (false: lines only); legendLatest
  // (false: the legend shows values only while the pointer is on the chart); hooks (uPlot's,
  // such as draw); yRange may be a function, asked again at every redraw.
  function lineChart(parent, options) {
    const box = document.createElement("figure");
    box.className = "chart";
    box.setAttribute("role", "img");
    box.setAttribute("aria-label", options.title);
    box.dataset.points = "0";
    parent.appendChild(box);
    const format = options.format || shortNumber;
    const xLabel = options.xLabel || "epoch";
    const width = () => Math.max(200, Math.floor(box.clientWidth));
    const focusing = typeof options.onFocus === "function";
    const latest = options.legendLatest !== false;
    const plot = new uPlot({
      title: options.title,
      width: width(),
      height: options.height || 240,
      // On a narrow screen the legend names the lines only; wider, it also reads out the hovered epoch.
      legend: { show: options.legend !== false, live: width() >= LIVE_LEGEND_WIDTH },
      focus: { alpha: focusing ? 0.25 : 1 },
      cursor: focusing ? { focus: { prox: 24 } } : {},
      hooks: { ...(options.hooks || {}),
        ...(focusing ? { setSeries: [(u, i) => options.onFocus(i == null ? null : i - 1)] } : {}) },
      scales: {
        x: { time: false, range: (u, min, max) => [options.xMin ?? 0, Math.max(options.xMax || 1, max || 0)] },
        y: options.yRange ? { range: typeof options.yRange === "function" ? () => options.yRange() : () => options.yRange } : {},
      },
      axes: [
        { label: xLabel, incrs: WHOLE_STEPS, ...(options.xSplits ? { splits: () => options.xSplits } : {}),
          values: options.xValues || ((u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : ""))) },
        { label: options.yLabel, size: 64, values: (u, ticks) => ticks.map((t) => format(t)) },
      ],
      series: [
        { label: xLabel, value: (u, v, s, idx) => shown(u, v, s, idx, String, latest) },
        ...options.series.map((label, i) => ({
          label,
          ...style(i),
          spanGaps: options.spanGaps === true,
          width: 2,
          points: options.points === false ? { show: false } : { size: 6 },
          value: (u, v, s, idx) => shown(u, v, s, idx, format, latest),
        })),
      ],
    }, [[], ...options.series.map(() => [])], box);
    new ResizeObserver(() => {
      const w = width();
      if (w !== plot.width) plot.setSize({ width: w, height: plot.height });
    }).observe(box);
    return {
      plot,
      element: box,
      setData(xs, columns) {
        plot.setData([xs, ...columns]);
        box.dataset.points = String(xs.length);
      },
      // Draw line i over the others (the others faded), or all alike again with null.
      focus(i) {
        plot.setSeries(i == null ? null : i + 1, { focus: true });
      },
    };
  }

  // A page's first chart with points: the performance mark "noisyfit:first-chart" (once), in the
  // next frame, by when uPlot has drawn the data it was given.
  function drawnFirst() {
    requestAnimationFrame(() => {
      if (!performance.getEntriesByName(FIRST_CHART).length) performance.mark(FIRST_CHART);
    });
  }

  noisyfit.charts = { PALETTE, DASHES, style, lineChart, shortNumber, drawnFirst };
})();
