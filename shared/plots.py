"""Plots of a job and of a sweep, as PNG bytes (the paper's Figures 1 and 2 in spirit).

Built on matplotlib's object API with the Agg canvas, never pyplot: no global figure state,
safe in a worker thread, no display needed.
"""

import io
from collections.abc import Iterable
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
JOB_SIZE = (11.0, 4.0)  # inches: two panels side by side
SWEEP_SIZE = (6.5, 4.5)
HEATMAP_PANEL = 5.5  # inches per matrix, square
HEATMAP_ANNOTATE_UP_TO = 12  # classes: each cell carries its value up to this many


def job_plot(history: list[dict]) -> bytes:
    """Left: test accuracy and accuracy on the noisy training labels per epoch. Right: on the
    corrupted training samples, the share predicted as their noisy label (memorisation) and as
    their true label. Missing keys and values leave gaps, never an error."""
    fig = Figure(figsize=JOB_SIZE, dpi=DPI)
    accuracy, corrupted = fig.subplots(1, 2)
    epochs = [entry.get("epoch", i + 1) for i, entry in enumerate(history)]

    drawn = _lines(accuracy, epochs, history, {"test_acc": "test (clean labels)", "train_acc": "train (noisy labels)"})
    _style(accuracy, "accuracy", drawn)
    drawn = _lines(
        corrupted,
        epochs,
        history,
        {"memorized": "predicted as noisy label (memorised)", "true_label_acc_on_corrupted": "predicted as true label"},
    )
    _style(corrupted, "corrupted training samples", drawn)
    if not drawn:
        _note(corrupted, "no corrupted samples recorded")
    return _png(fig)


def label_heatmap(estimated: list[list[float]], true: list[list[float]] | None = None,
                  classes: list[str] | None = None, title: str = "") -> bytes:
    """The estimated noise transition matrix (rows: true class, columns: given label, each row
    summing to 1) as a heatmap, and the true one beside it when known; same colour scale, 0 to 1."""
    panels = [("estimated", estimated)] + ([("true", true)] if true is not None else [])
    fig = Figure(figsize=heatmap_size(true is not None), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    k = len(estimated)
    names = classes if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    for ax, (name, matrix) in zip(axes, panels):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"{name}: P(given label | true class)")
        ax.set_xlabel("given label")
        ax.set_ylabel("true class")
        if k <= HEATMAP_ANNOTATE_UP_TO:
            ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize="small")
            ax.set_yticks(range(k), names, fontsize="small")
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                            color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return _png(fig)


def heatmap_size(with_truth: bool) -> tuple[float, float]:
    """Inches of label_heatmap's figure: one square panel per matrix and room for the colour bar."""
    return (HEATMAP_PANEL * (2 if with_truth else 1) + 1.0, HEATMAP_PANEL)


def _lines(ax: Any, epochs: list, history: list[dict], series: dict[str, str]) -> bool:
    drawn = False
    for key, label in series.items():
        points = [(e, 100 * entry[key]) for e, entry in zip(epochs, history) if _is_number(entry.get(key))]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=label)
            drawn = True
    return drawn


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def _style(ax: Any, title: str, legend: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize="small")


def sweep_plot(rows: list[dict], x: str = "noise.rate", series: str = "loss") -> bytes:
    """Mean test accuracy against `x` (noise rate), one line per `series` value (loss), error
    bars one sample std. Without `x` in the cells, the first numeric grid field is the axis;
    every other varying field joins the line label."""
    fig = Figure(figsize=SWEEP_SIZE, dpi=DPI)
    ax = fig.subplots()
    rows = [row for row in rows if row.get("mean") is not None]
    fields = list(dict.fromkeys(name for row in rows for name in row["cell"]))
    if x not in fields:
        x = next((f for f in fields if all(_is_number(r["cell"].get(f)) for r in rows)), fields[0] if fields else "")
    numeric = all(_is_number(row["cell"].get(x)) for row in rows)
    ticks = list(dict.fromkeys(str(row["cell"].get(x)) for row in rows))
    varying = [f for f in fields if f != x and len({repr(r["cell"].get(f)) for r in rows}) > 1]
    varying.sort(key=lambda f: f != series)

    lines: dict[str, list[dict]] = {}
    for row in rows:
        lines.setdefault(_label(row["cell"], varying, series), []).append(row)
    for index, (label, members) in enumerate(lines.items()):
        members.sort(key=lambda r: r["cell"].get(x) if numeric else ticks.index(str(r["cell"].get(x))))
        xs = [r["cell"].get(x) if numeric else ticks.index(str(r["cell"].get(x))) for r in members]
        ys = [100 * r["mean"] for r in members]
        errors = [100 * (r.get("std") or 0.0) for r in members]
        # The colour cycle has 10 entries; a dashed line tells the 11th from the 1st.
        style = "-" if index < 10 else "--"
        ax.errorbar(xs, ys, yerr=errors, marker="o", linestyle=style, capsize=3, label=label or None)

    if not numeric:
        ax.set_xticks(range(len(ticks)), ticks)
    elif rows and _spans_decades([row["cell"][x] for row in rows]):
        ax.set_xscale("log")  # α and β grids: 0.1, 1, 10, 100
    ax.set_xlabel(x)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if not rows:
        _note(ax, "no finished runs yet")
    elif any(lines):
        ax.legend(loc="best", fontsize="small")
    return _png(fig)


def _spans_decades(values: list[float]) -> bool:
    return min(values) > 0 and max(values) / min(values) >= 100


def _label(cell: dict, fields: Iterable[str], series: str) -> str:
    return ", ".join(str(cell.get(f)) if f == series else f"{f}={cell.get(f)}" for f in fields)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
