"""Job and sweep plots come back as PNG images of a fixed size, whatever the data lacks."""

import io

import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from shared.plots import (
    DPI, HEATMAP_ANNOTATE_UP_TO, JOB_SIZE, SWEEP_SIZE, heatmap_figure, job_figure, job_plot, job_title, sweep_figure,
    sweep_plot, sweep_title,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes):
    assert png.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(png), format="png")


def history(epochs: int = 5) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_acc": 0.5 + 0.08 * e,
            "test_acc": 0.6 + 0.05 * e - 0.02 * max(0, e - 3),
            "memorized": 0.1 + 0.1 * e,
            "true_label_acc_on_corrupted": 0.6 - 0.1 * e,
        }
        for e in range(1, epochs + 1)
    ]


def test_job_plot_is_a_png_of_two_panels_at_the_set_size():
    png = job_plot(history())
    image = decode(png)
    assert image.shape[:2] == (JOB_SIZE[1] * DPI, JOB_SIZE[0] * DPI)
    assert len(png) > 10_000, "lines, axes and legends were drawn"
    assert image[..., :3].std() > 0.05, "not a blank image"


@pytest.mark.parametrize(
    "entries",
    [
        [],
        [{"epoch": 1}],
        [{"test_acc": 0.5}, {"test_acc": 0.6, "train_acc": None}],  # no epoch numbers, a None value
        [{"epoch": 1, "train_acc": 0.4, "test_acc": 0.5}, {"epoch": 2, "memorized": 0.2}],
    ],
)
def test_job_plot_tolerates_missing_keys(entries):
    image = decode(job_plot(entries))
    assert image.shape[:2] == (JOB_SIZE[1] * DPI, JOB_SIZE[0] * DPI)


def test_job_plot_without_corrupted_samples_differs_from_one_with_them():
    clean = [{k: v for k, v in e.items() if k in ("epoch", "train_acc", "test_acc")} for e in history()]
    assert job_plot(clean) != job_plot(history())


def sweep_rows() -> list[dict]:
    rows = []
    for loss, base in (("ce", 0.9), ("nce+rce", 0.95)):
        for rate in (0.0, 0.2, 0.4, 0.6, 0.8):
            rows.append({"cell": {"loss": loss, "noise.rate": rate}, "mean": base - rate / 2, "std": 0.01, "n": 3})
    return rows


def test_sweep_plot_is_a_png_at_the_set_size():
    png = sweep_plot(sweep_rows())
    image = decode(png)
    assert image.shape[:2] == (SWEEP_SIZE[1] * DPI, SWEEP_SIZE[0] * DPI)
    assert len(png) > 10_000


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [{"cell": {"loss": "ce", "noise.rate": 0.2}, "mean": None, "std": None, "n": 0}],
        [{"cell": {"loss": "ce", "noise.rate": 0.2}, "mean": 0.8, "std": None, "n": 1}],
        [  # the α/β search: no noise rate, no loss in the cells
            {"cell": {"alpha": a, "beta": b}, "mean": 0.5 + a / 100, "std": 0.02, "n": 3}
            for a in (0.1, 1.0, 10.0)
            for b in (1.0, 10.0)
        ],
        [{"cell": {"model": m}, "mean": 0.7, "std": 0.01, "n": 2} for m in ("cnn4", "cnn8")],  # categorical axis
    ],
)
def test_sweep_plot_handles_empty_partial_and_other_grids(rows):
    image = decode(sweep_plot(rows))
    assert image.shape[:2] == (SWEEP_SIZE[1] * DPI, SWEEP_SIZE[0] * DPI)


def test_sweep_plot_draws_the_noisy_validation_and_marks_its_best_cell():
    plain = sweep_rows()
    validated = [{**row, "val_mean": row["mean"] - 0.1 + 0.01 * i, "val_std": 0.01} for i, row in enumerate(plain)]
    image = decode(sweep_plot(validated))
    assert image.shape[:2] == (SWEEP_SIZE[1] * DPI, SWEEP_SIZE[0] * DPI)
    assert sweep_plot(validated) != sweep_plot(plain)
    only_val = [{**row, "val_mean": 0.5} for row in plain[:2]]  # equal val means: the first is the best
    assert decode(sweep_plot(only_val)).shape[:2] == (SWEEP_SIZE[1] * DPI, SWEEP_SIZE[0] * DPI)


def whole_ticks(axis) -> bool:
    lo, hi = axis.get_view_interval()
    ticks = [t for t in axis.get_major_locator()() if lo <= t <= hi]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("epochs", [1, 3, 7, 200])
def test_job_plot_has_whole_number_epoch_ticks_and_a_title(epochs):
    spec = {"dataset": "fashion-mnist", "loss": "nce+rce", "alpha": 1.0, "beta": 10.0,
            "noise": {"type": "symmetric", "rate": 0.4}}
    title = job_title(spec)
    assert title == "nce+rce (α=1, β=10) · symmetric noise 40% · fashion-mnist"
    figure = job_figure(history(epochs), title)
    assert figure.get_suptitle() == title
    assert all(whole_ticks(ax.xaxis) for ax in figure.axes)


def test_titles_name_the_loss_and_the_noise():
    assert job_title({"dataset": "mnist", "loss": "ce", "alpha": 1.0, "beta": 0.0,
                      "noise": {"type": "none", "rate": 0.0}}) == "ce (α=1) · no noise · mnist"
    base = {"dataset": "cifar10", "loss": "nce+rce", "noise": {"type": "symmetric", "rate": 0.4}}
    assert sweep_title(base, {"noise.rate": [0.2, 0.8], "loss": ["ce", "nce+rce"]}) == (
        "ce, nce+rce · symmetric noise, rate 0.2–0.8 · cifar10")
    assert sweep_title(base, {"alpha": [0.1, 1.0]}) == "nce+rce · symmetric noise 40% · cifar10"
    figure = sweep_figure(sweep_rows(), title="a title")
    assert figure.axes[0].get_title() == "a title"


def test_a_sweep_over_epochs_has_whole_number_ticks():
    rows = [{"cell": {"epochs": e}, "mean": 0.5 + e / 100, "std": 0.01, "n": 2} for e in (1, 2, 3)]
    assert whole_ticks(sweep_figure(rows).axes[0].xaxis)


def cell_pixels(canvas: FigureCanvasAgg, ax, i: int, j: int) -> np.ndarray:
    """RGB of the middle 60% of cell (row i, column j) of an imshow panel, as drawn."""
    (x0, y0), (x1, y1) = ax.transData.transform([(j - 0.3, i + 0.3), (j + 0.3, i - 0.3)])
    height = canvas.get_width_height()[1]
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    return rgb[round(height - y1):round(height - y0), round(x0):round(x1)]


@pytest.mark.parametrize("k", [2, HEATMAP_ANNOTATE_UP_TO, HEATMAP_ANNOTATE_UP_TO + 1])
def test_heatmap_cells_carry_their_value_in_a_colour_that_reads_up_to_the_limit(k):
    identity = np.eye(k).tolist()
    figure = heatmap_figure(identity, identity, title="a title")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    written = k <= HEATMAP_ANNOTATE_UP_TO
    for ax in figure.axes[:2]:
        for i, j in [(0, 0), (k - 1, k - 1), (0, k - 1), (k - 1, 0)]:
            cell = cell_pixels(canvas, ax, i, j)
            ink = (cell < 60).all(-1) if i == j else (cell > 200).all(-1)  # black on bright 1.00, white on dark 0.00
            assert ink.any() == written, (ax.get_title(), i, j)
