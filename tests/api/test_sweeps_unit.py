"""Sweeps as pure functions: grid expansion, aggregation over seeds, and the result tables."""

import csv
import io
import math

import pytest

from shared.catalog import PAPER_GRIDS, PAPER_LOSSES
from shared.sweeps import (
    GridError,
    aggregate,
    cell_key,
    expand_grid,
    paper_grid,
    table_csv,
    table_markdown,
)

BASE = {"dataset": "mnist", "epochs": 2, "noise": {"type": "symmetric", "rate": 0.0}, "loss_params": {"q": 0.7}}


def job(id: str, loss: str, rate: float, seed: int, acc: float | None, status: str = "succeeded") -> dict:
    spec = {**BASE, "loss": loss, "seed": seed, "noise": {"type": "symmetric", "rate": rate}}
    result = None if acc is None else {"final_test_accuracy": acc, "best_test_accuracy": acc}
    return {"id": id, "status": status, "spec": spec, "result": result}


def test_expansion_sets_dotted_fields_and_keeps_the_rest_of_the_base():
    specs = list(expand_grid(BASE, {"noise.rate": [0.2, 0.4], "loss_params.q": [0.1], "seed": [0, 1]}))
    assert len(specs) == 4
    assert specs[0] == {**BASE, "noise": {"type": "symmetric", "rate": 0.2}, "loss_params": {"q": 0.1}, "seed": 0}
    assert [(s["noise"]["rate"], s["seed"]) for s in specs] == [(0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1)]
    assert BASE["noise"]["rate"] == 0.0 and BASE["loss_params"] == {"q": 0.7}, "the base is not modified"
    assert specs[0]["noise"] is not specs[1]["noise"], "cells share no object the grid sets a part of"


def test_expansion_creates_missing_nested_objects_and_prefixed_loss_parameters():
    (spec,) = expand_grid({"dataset": "mnist"}, {"noise.type": ["pairflip"], "loss_params.nfl.gamma": [1.0]})
    assert spec == {"dataset": "mnist", "noise": {"type": "pairflip"}, "loss_params": {"nfl.gamma": 1.0}}


def test_expansion_count_is_the_product_of_the_value_lists():
    grid = {"loss": ["ce", "nce+rce", "gce"], "alpha": [0.1, 1.0], "seed": [0, 1, 2, 3]}
    assert len(list(expand_grid(BASE, grid))) == 3 * 2 * 4
    assert list(expand_grid(BASE, grid)) == list(expand_grid(BASE, grid)), "deterministic order"
    assert list(expand_grid(BASE, {})) == [BASE]


@pytest.mark.parametrize(
    "grid, field, words",
    [
        ({"lossy": ["ce"]}, "grid.lossy", "not a field of the job spec"),
        ({"noise.level": [0.1]}, "grid.noise.level", "noise.rate"),
        ({"epochs.max": [1]}, "grid.epochs.max", "has no parts"),
        ({"seed": []}, "grid.seed", "non-empty list"),
        ({"seed": 3}, "grid.seed", "non-empty list"),
        ({"loss": ["ce", "ce"]}, "grid.loss", "repeats a value"),
        ({"noise": [{"type": "none"}], "noise.rate": [0.1]}, "grid.noise.rate", "both 'noise' and 'noise.rate'"),
        ({"seed": list(range(40)), "alpha": [float(a) for a in range(30)]}, "grid", "1200 cells"),
    ],
)
def test_invalid_grids_are_refused_with_the_entry_to_change(grid, field, words):
    with pytest.raises(GridError) as error:
        expand_grid(BASE, grid)
    assert error.value.field == field
    assert words in str(error.value)
    assert isinstance(error.value, ValueError)


def test_the_cell_limit_is_a_parameter():
    with pytest.raises(GridError, match="at most 5"):
        expand_grid(BASE, {"seed": [0, 1, 2, 3, 4, 5]}, max_cells=5)


def test_paper_grids_come_from_the_catalog_with_the_seeds():
    grid = paper_grid("table2", "cifar10")
    assert grid == {**PAPER_GRIDS["table2"], "seed": [0, 1, 2]}
    assert len(list(expand_grid({"dataset": "cifar10"}, grid))) == 5 * len(PAPER_LOSSES) * 3
    assert paper_grid("table3", "mnist", seeds=[7])["seed"] == [7]
    assert paper_grid("alpha-beta", "mnist")["validation_split"] == [0.2]
    with pytest.raises(GridError, match="unknown sweep preset 'table9'"):
        paper_grid("table9", "mnist")
    with pytest.raises(GridError, match="asymmetric"):
        paper_grid("table3", "my-uploaded-set")


def test_cell_key_reads_the_grid_fields_but_the_seed():
    grid = {"loss": ["ce"], "noise.rate": [0.4], "noise.matrix": [[[1.0]]], "seed": [0, 1]}
    spec = {"loss": "ce", "seed": 1, "noise": {"type": "transition", "rate": 0.4, "matrix": [[1.0]]}}
    key = cell_key(spec, grid)
    assert key == cell_key({**spec, "seed": 0}, grid)
    assert key[:2] == ("ce", 0.4)
    hash(key)


def test_aggregation_matches_hand_computed_mean_and_sample_std():
    grid = {"loss": ["ce", "nce+rce"], "noise.rate": [0.2, 0.4], "seed": [0, 1, 2]}
    jobs = [
        job("a", "ce", 0.2, 0, 0.80),
        job("b", "ce", 0.2, 1, 0.90),
        job("c", "ce", 0.2, 2, 0.70),
        job("d", "nce+rce", 0.2, 0, 0.95),
        job("e", "nce+rce", 0.2, 1, 0.99, status="failed"),
        job("f", "nce+rce", 0.2, 2, None, status="running"),
        job("g", "nce+rce", 0.4, 0, 0.50),
        job("h", "nce+rce", 0.4, 1, 0.60),
        job("x", "gce", 0.2, 0, 0.10),  # not in the grid
    ]
    rows = aggregate(jobs, grid)
    assert [r["cell"] for r in rows] == [
        {"loss": "ce", "noise.rate": 0.2},
        {"loss": "ce", "noise.rate": 0.4},
        {"loss": "nce+rce", "noise.rate": 0.2},
        {"loss": "nce+rce", "noise.rate": 0.4},
    ]
    ce_02, ce_04, apl_02, apl_04 = rows
    # 0.8, 0.9, 0.7: mean 0.8, deviations ±0.1 → s² = (0.01 + 0.01) / 2 = 0.01
    assert ce_02["n"] == 3 and ce_02["mean"] == pytest.approx(0.8) and ce_02["std"] == pytest.approx(0.1)
    assert ce_04 == {"cell": {"loss": "ce", "noise.rate": 0.4}, "mean": None, "std": None, "n": 0,
                     "val_mean": None, "val_std": None, "resolved": None, "runs": []}
    assert apl_02["n"] == 1 and apl_02["mean"] == pytest.approx(0.95) and apl_02["std"] is None
    assert [(r["id"], r["status"]) for r in apl_02["runs"]] == [("d", "succeeded"), ("e", "failed"), ("f", "running")]
    # 0.5, 0.6: s = |0.6 - 0.5| / √2
    assert apl_04["mean"] == pytest.approx(0.55) and apl_04["std"] == pytest.approx(0.1 / math.sqrt(2))
    assert apl_04["runs"][1] == {"id": "h", "seed": 1, "status": "succeeded", "final_test_accuracy": 0.6,
                                 "final_val_accuracy": None}
    assert apl_04["resolved"] == {"loss": "nce+rce", "alpha": None, "beta": None, "loss_params": {"q": 0.7}}
    assert apl_04["val_mean"] is None and apl_04["val_std"] is None, "no run held out a validation split"


def test_aggregation_matches_integer_and_float_grid_values():
    rows = aggregate([job("a", "ce", 0.0, 0, 0.5)], {"noise.rate": [0], "seed": [0]})
    assert rows[0]["n"] == 1


def rows_for_table() -> list[dict]:
    grid = {"noise.type": ["symmetric"], "loss": ["ce", "nce+rce"], "noise.rate": [0.2, 0.4], "seed": [0, 1]}
    jobs = [
        job("a", "ce", 0.2, 0, 0.80),
        job("b", "ce", 0.2, 1, 0.90),
        job("c", "ce", 0.4, 0, 0.60),
        job("d", "nce+rce", 0.2, 0, 0.91),
        job("e", "nce+rce", 0.2, 1, 0.93),
        job("f", "nce+rce", 0.4, 1, 0.70),
        job("g", "nce+rce", 0.4, 0, 0.72),
    ]
    return aggregate(jobs, grid)


def test_csv_has_a_header_and_a_line_per_cell_with_fractions():
    text = table_csv(rows_for_table())
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["noise.type", "loss", "noise.rate", "mean_accuracy_fraction", "std_accuracy_fraction", "n", "runs",
                        "val_mean_accuracy_fraction", "val_std_accuracy_fraction", "best_by_validation"]
    assert len(lines) == 5
    assert lines[1][:3] == ["symmetric", "ce", "0.2"] and lines[1][5:7] == ["2", "2"]
    assert float(lines[1][3]) == pytest.approx(0.85) and float(lines[1][4]) == pytest.approx(0.1 / math.sqrt(2))
    assert lines[2][3:7] == ["0.6", "", "1", "1"], "one run: no std"
    assert all(line[7:] == ["", "", "0"] for line in lines[1:]), "no validation split: no figures, no best"


def test_csv_quotes_values_that_hold_commas():
    rows = [{"cell": {"noise.matrix": [[0.9, 0.1], [0.1, 0.9]]}, "mean": 0.5, "std": None, "n": 1, "runs": [{}]}]
    lines = list(csv.reader(io.StringIO(table_csv(rows))))
    assert lines[1][0] == "[[0.9, 0.1], [0.1, 0.9]]"


def test_markdown_pivots_losses_against_noise_rates_in_percent():
    text = table_markdown(rows_for_table())
    assert text == (
        "noise.type = symmetric\n"
        "\n"
        "| loss \\ noise.rate | 0.2 | 0.4 |\n"
        "| --- | --- | --- |\n"
        "| ce | 85.00 ± 7.07 | 60.00 |\n"
        "| nce+rce | **92.00 ± 1.41** | **71.00 ± 1.41** |\n"
    )


def test_markdown_puts_varying_non_pivot_fields_in_the_row_label_and_marks_empty_cells():
    rows = [
        {"cell": {"loss": "ce", "alpha": 1.0, "noise.rate": 0.2}, "mean": 0.5, "std": 0.01, "n": 2, "runs": []},
        {"cell": {"loss": "ce", "alpha": 10.0, "noise.rate": 0.2}, "mean": None, "std": None, "n": 0, "runs": []},
    ]
    lines = table_markdown(rows).splitlines()
    assert lines[0] == "| loss / alpha \\ noise.rate | 0.2 |"
    assert lines[2:] == ["| ce, 1.0 | **50.00 ± 1.00** |", "| ce, 10.0 | – |"]


def test_markdown_falls_back_to_a_flat_table_without_the_pivot_fields():
    rows = [
        {"cell": {"alpha": 0.1, "beta": 1.0}, "mean": 0.9012, "std": 0.0034, "n": 3, "runs": []},
        {"cell": {"alpha": 1.0, "beta": 1.0}, "mean": None, "std": None, "n": 0, "runs": []},
    ]
    assert table_markdown(rows) == (
        "| alpha | beta | accuracy (%) | n |\n"
        "| --- | --- | --- | --- |\n"
        "| 0.1 | 1.0 | 90.12 ± 0.34 | 3 |\n"
        "| 1.0 | 1.0 | – | 0 |\n"
    )
    assert table_markdown(rows_for_table(), pivot=None).startswith("| noise.type | loss | noise.rate |")
