"""Plots of a job and of a sweep, as PNG bytes (the paper's Figures 1 and 2 in spirit).

Built on matplotlib's object API with the Agg canvas, never pyplot: no global figure state,
safe in a worker thread, no display needed.
"""

import functools
import io
from collections.abc import Iterable
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.textpath import TextPath
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import IdentityTransform

DPI = 100
JOB_SIZE = (11.0, 4.0)  # inches: two panels side by side
SWEEP_SIZE = (6.5, 4.5)
HEATMAP_PANEL = 5.5  # inches per matrix, square
HEATMAP_ANNOTATE_UP_TO = 12  # classes: each cell carries its value up to this many
JOB_MARGINS = {"left": 0.065, "right": 0.984, "bottom": 0.146, "wspace": 0.157}  # what tight_layout chose, fixed
JOB_TOP = (0.909, 0.829)  # without, with a title
TITLE_Y = 1.0  # an axes title's height, given: else every draw measures the axes for top tick labels (none here)
PNG_COMPRESSION = 3  # zlib level: about half the time of the default 6, files 0-15% larger


def job_title(spec: dict[str, Any]) -> str:
    """What a job plot is of: the loss with its weights, the noise, the data set."""
    loss = spec.get("loss", "?")
    weights = f"α={spec['alpha']:g}" + (f", β={spec['beta']:g}" if spec.get("beta") else "") if "alpha" in spec else ""
    return f"{loss}{f' ({weights})' if weights else ''} · {_noise(spec.get('noise') or {})} · {spec.get('dataset', '?')}"


def sweep_title(base: dict[str, Any], grid: dict[str, list[Any]]) -> str:
    """What a sweep plot is of: its losses, its noise and its data set(s), from the base and the grid."""
    losses = [str(v) for v in grid.get("loss", [base.get("loss", "ce")])]
    datasets = [str(v) for v in grid.get("dataset", [base.get("dataset", "?")])]
    noise = base.get("noise") or {}
    kinds = [str(v) for v in grid.get("noise.type", [noise.get("type", "none")])]
    rates = grid.get("noise.rate")
    if rates:
        numbers = [r for r in rates if _is_number(r)]
        span = f"{min(numbers):g}–{max(numbers):g}" if len(numbers) > 1 else ", ".join(map(str, rates))
        noise_text = f"{'/'.join(kinds)} noise, rate {span}"
    else:
        noise_text = " / ".join(_noise({**noise, "type": kind}) for kind in kinds)
    loss_text = ", ".join(losses) if len(losses) <= 4 else f"{len(losses)} losses"
    return f"{loss_text} · {noise_text} · {', '.join(datasets)}"


def _noise(noise: dict[str, Any]) -> str:
    kind, rate = noise.get("type", "none"), noise.get("rate")
    if kind == "none":
        return "no noise"
    return f"{kind} noise {100 * rate:g}%" if _is_number(rate) and kind != "transition" else f"{kind} noise"


def job_plot(history: list[dict], title: str = "") -> bytes:
    return _png(job_figure(history, title), tight=False)


def job_figure(history: list[dict], title: str = "") -> Figure:
    """Left: test accuracy and accuracy on the noisy training labels per epoch. Right: on the
    corrupted training samples, the share predicted as their noisy label (memorisation) and as
    their true label. `title` (job_title) heads both; epochs are whole-number ticks. Missing keys
    and values leave gaps, never an error."""
    fig = Figure(figsize=JOB_SIZE, dpi=DPI)  # laid out by hand: tight_layout took a third of the plot's time
    fig.subplots_adjust(**JOB_MARGINS, top=JOB_TOP[bool(title)])
    if title:
        fig.suptitle(title)
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
    numbered = [e for e in epochs if _is_number(e)]
    if numbered:  # at least a whole epoch wide, so that a short run still gets whole-number ticks
        margin = max(0.5, 0.03 * (max(numbered) - min(numbered)))
        for ax in (accuracy, corrupted):
            ax.set_xlim(min(numbered) - margin, max(numbered) + margin)
    return fig


def label_heatmap(estimated: list[list[float]], true: list[list[float]] | None = None,
                  classes: list[str] | None = None, title: str = "") -> bytes:
    return _png(heatmap_figure(estimated, true, classes, title), tight=False)


def heatmap_figure(estimated: list[list[float]], true: list[list[float]] | None = None,
                   classes: list[str] | None = None, title: str = "") -> Figure:
    """The estimated noise transition matrix (rows: true class, columns: given label, each row
    summing to 1) as a heatmap, and the true one beside it when known; same colour scale, 0 to 1.
    Up to HEATMAP_ANNOTATE_UP_TO classes, the ticks name them and each cell carries its value."""
    panels = [("estimated", estimated)] + ([("true", true)] if true is not None else [])
    fig = Figure(figsize=heatmap_size(true is not None), dpi=DPI)  # a fixed layout: "constrained" took ~0.4 s a job
    fig.subplots_adjust(left=0.1 if true is None else 0.07, right=0.86, bottom=0.2, top=0.86, wspace=0.45)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    k = len(estimated)
    names = classes if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    for ax, (name, matrix) in zip(axes, panels):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"{name}: P(given label | true class)", y=TITLE_Y)
        ax.set_xlabel("given label")
        ax.set_ylabel("true class")
        if k <= HEATMAP_ANNOTATE_UP_TO:
            ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize="small")
            ax.set_yticks(range(k), names, fontsize="small")
            _write_cells(ax, matrix)
    fig.colorbar(image, cax=fig.add_axes((0.89, 0.2, 0.02, 0.66)))
    if title:
        fig.suptitle(title)
    return fig


def _write_cells(ax: Any, matrix: list[list[float]]) -> None:
    """Each cell's value written in its middle, black on the bright cells, white on the dark.

    One collection of text outlines rather than a Text per cell: matplotlib lays out and renders
    each Text on its own (~1.5 ms apiece, 0.3 s for two 10×10 panels); the collection draws all
    of them in one call, and at this size looks the same."""
    cells = [(j, i, f"{value:.2f}", "black" if value > 0.6 else "white")
             for i, row in enumerate(matrix) for j, value in enumerate(row)]
    ax.add_collection(PathCollection(
        [_centred_text(text) for _, _, text, _ in cells], sizes=[1.0], offsets=[(x, y) for x, y, _, _ in cells],
        offset_transform=ax.transData, transform=IdentityTransform(),
        facecolors=[colour for *_, colour in cells], edgecolors="none", linewidths=0), autolim=False)


@functools.lru_cache(maxsize=1024)
def _centred_text(text: str) -> Path:
    """`text` as an outline in points (x-small), centred on the origin: a PathCollection with
    sizes=[1] scales it to pixels at the figure's dpi."""
    outline = TextPath((0, 0), text, prop=FontProperties(size="x-small"))
    drawn = outline.vertices[outline.codes != Path.CLOSEPOLY]  # a closing vertex may sit at the origin
    return Path(outline.vertices - (drawn.min(axis=0) + drawn.max(axis=0)) / 2, outline.codes)


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
    ax.set_title(title, y=TITLE_Y)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="best", fontsize="small")


def sweep_plot(rows: list[dict], x: str = "noise.rate", series: str = "loss", title: str = "") -> bytes:
    return _png(sweep_figure(rows, x, series, title))


def sweep_figure(rows: list[dict], x: str = "noise.rate", series: str = "loss", title: str = "") -> Figure:
    """Mean test accuracy against `x` (noise rate), one line per `series` value (loss), error
    bars one sample std; headed by `title` (sweep_title). Without `x` in the cells, the first
    numeric grid field is the axis; every other varying field joins the line label. A
    whole-number axis (epochs, seeds) has whole-number ticks. Where runs held out a noisy
    validation split, its mean accuracy is a dashed line of the same colour, and a star marks
    the cell of the highest (shared.sweeps.best)."""
    from shared.sweeps import best  # the sweep's rules bring the database models: off a job's (the engine's) path

    fig = Figure(figsize=SWEEP_SIZE, dpi=DPI)
    ax = fig.subplots()
    if title:
        ax.set_title(title, fontsize="medium")
    chosen = best(rows)
    chosen = chosen["cell"] if chosen is not None and chosen["by"] == "validation" else None
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
        # The colour cycle has 10 entries; a dash-dot line tells the 11th from the 1st.
        style = "-" if index < 10 else "-."
        drawn = ax.errorbar(xs, ys, yerr=errors, marker="o", linestyle=style, capsize=3, label=label or None)
        validated = [(x_, 100 * r["val_mean"]) for x_, r in zip(xs, members) if _is_number(r.get("val_mean"))]
        if validated:
            colour = drawn.lines[0].get_color()
            ax.plot(*zip(*validated), marker="s", linestyle="--", color=colour, alpha=0.7,
                    label=f"{label} (noisy val)" if label else "noisy val")
            for x_, r in zip(xs, members):
                if chosen is not None and r["cell"] == chosen:
                    ax.plot([x_], [100 * r["val_mean"]], marker="*", markersize=16, color=colour, linestyle="none",
                            label="best by noisy val")

    if not numeric:
        ax.set_xticks(range(len(ticks)), ticks)
    elif rows and all(isinstance(row["cell"].get(x), int) for row in rows):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    elif rows and _spans_decades([row["cell"][x] for row in rows]):
        ax.set_xscale("log")  # α and β grids: 0.1, 1, 10, 100
    ax.set_xlabel(x)
    ax.set_ylabel("accuracy (%): test, noisy validation dashed" if chosen is not None else "test accuracy (%)")
    ax.grid(alpha=0.3)
    if not rows:
        _note(ax, "no finished runs yet")
    elif any(lines):
        ax.legend(loc="best", fontsize="small")
    return fig


def _spans_decades(values: list[float]) -> bool:
    return min(values) > 0 and max(values) / min(values) >= 100


def _label(cell: dict, fields: Iterable[str], series: str) -> str:
    return ", ".join(str(cell.get(f)) if f == series else f"{f}={cell.get(f)}" for f in fields)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _png(fig: Figure, tight: bool = True) -> bytes:
    """The figure as PNG; laid out tightly unless it has a layout engine or `tight` is False
    (a figure placed by hand)."""
    FigureCanvasAgg(fig)
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
    return buffer.getvalue()
