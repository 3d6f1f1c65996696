"""Sweeps as pure functions: grid expansion, aggregation over seeds, and the result tables."""

import csv
import io
import itertools
import math
import random

import pytest

from shared.catalog import DATASETS, PAPER_GRIDS, PAPER_LOSSES
from shared.spec import JobSpec, resolve_spec
from shared.sweeps import (
    GridError,
    aggregate,
    best,
    cell_key,
    expand_grid,
    kendall_tau_b,
    paper_base,
    paper_grid,
    recommendation,
    summary,
    table_csv,
    table_markdown,
    validation_test_kendall_tau,
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
        ({"loss,alpha": [["ce", 1.0, 2.0]]}, "grid.loss,alpha", "a list of 2 values, one per field (loss, alpha)"),
        ({"loss,alpha": ["ce"]}, "grid.loss,alpha", "a list of 2 values"),
        ({"loss,seed": [["ce", 0]]}, "grid.loss,seed", "links the seed"),
        ({"loss": ["ce"], "loss,alpha": [["gce", 1.0]]}, "grid.loss", "sets 'loss' twice"),
        ({"loss,lossy": [["ce", 1]]}, "grid.loss,lossy", "'lossy' is not a field of the job spec"),
        ({"noise": [{"type": "none"}], "alpha,noise.rate": [[1.0, 0.1]]}, "grid.alpha,noise.rate", "both 'noise'"),
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


# Linked fields and the select preset


def test_linked_fields_vary_together_and_null_leaves_a_field_to_the_presets():
    grid = {"loss,alpha,beta": [["ce", None, None], ["nce+rce", 1.0, 10.0]], "seed": [0, 1]}
    specs = list(expand_grid({**BASE, "alpha": 3.0}, grid))
    assert [(s["loss"], s["alpha"], s["beta"], s["seed"]) for s in specs] == [
        ("ce", None, None, 0), ("ce", None, None, 1), ("nce+rce", 1.0, 10.0, 0), ("nce+rce", 1.0, 10.0, 1)]
    assert resolve_spec(JobSpec.parse({**specs[0], "loss_params": {}})).alpha == 1.0, "the preset's, not the base's 3"
    assert cell_key(specs[2], grid) == ("nce+rce", 1.0, 10.0)


def test_the_select_preset_resolves_on_every_built_in_data_set_and_holds_out_a_noisy_split():
    grid = paper_grid("select", "mnist", seeds=[0])
    assert grid["validation_split"] == [0.2]
    losses = {loss for loss, _, _ in grid["loss,alpha,beta"]}
    assert losses == {"ce", "gce", "sce", "nce+rce", "nce+mae", "nfl+rce"}
    for dataset in DATASETS:
        for spec in expand_grid(paper_base("select", {"dataset": dataset}), paper_grid("select", dataset, [0])):
            resolved = resolve_spec(JobSpec.parse(spec))
            assert resolved.validation_split == 0.2 and resolved.epochs == 10
    assert grid["loss,alpha,beta"] is not PAPER_GRIDS["select"]["loss,alpha,beta"], "a copy"
    assert paper_base("select", {"dataset": "mnist", "epochs": 3})["epochs"] == 3, "the base's own value wins"
    assert paper_base("table2", {"dataset": "mnist"}) == {"dataset": "mnist"}


def resolved_job(id: str, loss: str, alpha: float, beta: float, seed: int, test: float, val: float | None) -> dict:
    """A finished job as the API stores it: the resolved spec (beta 0 for a single term)."""
    spec = {"dataset": "mnist", "loss": loss, "alpha": alpha, "beta": beta, "seed": seed, "validation_split": 0.2,
            "loss_params": {}}
    return {"id": id, "status": "succeeded", "spec": spec,
            "result": {"final_test_accuracy": test, "final_val_accuracy": val}}


SELECT_GRID = {"loss,alpha,beta": [["ce", None, None], ["nce+rce", 1.0, 10.0], ["nce+rce", 10.0, 0.1]],
               "validation_split": [0.2], "seed": [0, 1]}
SELECT_JOBS = [
    resolved_job("a", "ce", 1.0, 0.0, 0, test=0.60, val=0.50),
    resolved_job("b", "ce", 1.0, 0.0, 1, test=0.62, val=0.54),
    resolved_job("c", "nce+rce", 1.0, 10.0, 0, test=0.80, val=0.58),
    resolved_job("d", "nce+rce", 1.0, 10.0, 1, test=0.84, val=0.60),
    resolved_job("e", "nce+rce", 10.0, 0.1, 0, test=0.90, val=0.55),
    resolved_job("f", "nce+rce", 10.0, 0.1, 1, test=0.92, val=0.57),
]


def test_validation_figures_are_mean_and_sample_std_over_seeds_and_a_null_cell_matches_the_preset():
    ce, apl_1_10, apl_10_01 = aggregate(SELECT_JOBS, SELECT_GRID)
    assert [run["id"] for run in ce["runs"]] == ["a", "b"], "alpha 1 and beta 0 of ce's resolved spec match nulls"
    assert ce["val_mean"] == pytest.approx(0.52) and ce["val_std"] == pytest.approx(0.04 / math.sqrt(2))
    assert apl_1_10["val_mean"] == pytest.approx(0.59) and apl_1_10["mean"] == pytest.approx(0.82)
    assert ce["resolved"] == {"loss": "ce", "alpha": 1.0, "beta": 0.0, "loss_params": {}}


def test_best_and_the_recommendation_go_by_validation_not_by_test():
    rows = aggregate(SELECT_JOBS, SELECT_GRID)
    chosen = best(rows)
    assert chosen["by"] == "validation" and chosen["cell"] == {"loss": "nce+rce", "alpha": 1.0, "beta": 10.0,
                                                               "validation_split": 0.2}
    assert max(rows, key=lambda r: r["mean"])["cell"]["alpha"] == 10.0, "the test set would pick another cell"
    assert recommendation(rows) == {
        "cell": chosen["cell"], "loss": "nce+rce", "alpha": 1.0, "beta": 10.0, "loss_params": {},
        "val_mean": pytest.approx(0.59), "val_std": pytest.approx(0.02 / math.sqrt(2)),
        "mean": pytest.approx(0.82), "std": pytest.approx(0.04 / math.sqrt(2)), "n": 2,
    }


def test_the_recommendation_never_changes_with_the_test_figures():
    rows = aggregate(SELECT_JOBS, SELECT_GRID)
    for shuffled in itertools.permutations([0.1, 0.5, 0.99]):
        other = [{**row, "mean": mean} for row, mean in zip(rows, shuffled)]
        chosen = recommendation(other)
        assert (chosen["loss"], chosen["alpha"], chosen["beta"]) == ("nce+rce", 1.0, 10.0)
        assert chosen["val_mean"] == pytest.approx(0.59)


def test_a_single_term_is_recommended_without_beta():
    jobs = [{**job, "result": {**job["result"], "final_val_accuracy": 0.9}} if job["spec"]["loss"] == "ce" else job
            for job in SELECT_JOBS]
    chosen = recommendation(aggregate(jobs, SELECT_GRID))
    assert (chosen["loss"], chosen["alpha"], chosen["beta"]) == ("ce", 1.0, None)


def test_without_validation_best_goes_by_test_and_nothing_is_recommended():
    rows = rows_for_table()
    assert best(rows)["by"] == "test" and best(rows)["mean"] == pytest.approx(0.92)
    assert recommendation(rows) is None
    assert summary([]) == {"best": None, "recommendation": None, "validation_test_kendall_tau": None}


def test_no_recommendation_when_the_cells_differ_in_more_than_the_loss_setting():
    rows = [{"cell": {"loss": "ce", "noise.rate": r}, "mean": 0.5, "std": None, "n": 1, "val_mean": v, "val_std": None}
            for r, v in ((0.2, 0.6), (0.4, 0.5))]
    assert best(rows)["cell"] == {"loss": "ce", "noise.rate": 0.2} and recommendation(rows) is None


def test_tables_mark_the_best_by_validation_and_say_what_is_recommended():
    rows = aggregate(SELECT_JOBS, SELECT_GRID)
    lines = list(csv.reader(io.StringIO(table_csv(rows))))
    assert lines[0][-3:] == ["val_mean_accuracy_fraction", "val_std_accuracy_fraction", "best_by_validation"]
    assert [line[-1] for line in lines[1:]] == ["0", "1", "0"]
    assert float(lines[2][-3]) == pytest.approx(0.59)
    text = table_markdown(rows)
    assert "| loss | alpha | beta | validation_split | accuracy (%) | n | noisy val accuracy (%) |" in text
    assert "| nce+rce | 1.0 | 10.0 | 0.2 | 82.00 ± 2.83 | 2 | 59.00 ± 1.41 † |" in text
    assert "| ce |  |  | 0.2 | 61.00 ± 1.41 | 2 | 52.00 ± 2.83 |" in text
    assert "† best by noisy validation: loss=nce+rce, alpha=1.0, beta=10.0, validation_split=0.2" in text
    assert "recommended: nce+rce, alpha 1, beta 10 (noisy validation 59.00%, test 82.00%)" in text
    # val means 0.52, 0.59, 0.56 against test means 0.61, 0.82, 0.91: pairs (ce, 1/10) and (ce, 10/0.1)
    # agree, (1/10, 10/0.1) disagree: τ = (2 - 1) / 3
    assert "Kendall's τ between the validation and the test ranking: 0.33 over 3 cells" in text


def test_a_pivot_table_shows_validation_beside_the_test_figures():
    rows = [{"cell": {"loss": loss, "noise.rate": 0.4}, "mean": m, "std": None, "n": 1, "val_mean": v, "val_std": None}
            for loss, m, v in (("ce", 0.9, 0.5), ("nce+rce", 0.8, 0.6))]
    assert table_markdown(rows).splitlines()[2:4] == [
        "| ce | **90.00** (val 50.00) |", "| nce+rce | 80.00 (val 60.00) † |"]


# Kendall's τ-b


@pytest.mark.parametrize(("xs", "ys", "tau"), [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 3], [1, 3, 2], 1 / 3),  # concordant (1,2), (1,3); discordant (2,3)
    # 4 concordant, 0 discordant; one pair tied in x only, one in y only: 4 / sqrt(5 · 5)
    ([1, 2, 2, 3], [1, 2, 3, 3], 0.8),
    ([1, 1, 2], [5, 5, 6], 1.0),  # a pair tied in both: 2 / sqrt(2 · 2)
    ([1, 2, 3, 4, 5], [3, 1, 4, 5, 2], 0.2),  # C = 6, D = 4 of 10 pairs
])
def test_kendall_tau_b_matches_hand_computed_values(xs, ys, tau):
    assert kendall_tau_b(xs, ys) == pytest.approx(tau)
    assert kendall_tau_b(ys, xs) == pytest.approx(tau), "symmetric"


def test_kendall_tau_b_is_undefined_without_an_order():
    assert kendall_tau_b([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert kendall_tau_b([1.0], [2.0]) is None and kendall_tau_b([], []) is None
    with pytest.raises(ValueError, match="as many"):
        kendall_tau_b([1.0, 2.0], [1.0])


def tau_b_by_tie_groups(xs: list[float], ys: list[float]) -> float:
    """τ-b as Kendall wrote it: S / sqrt((n0 - n1)(n0 - n2)), n1 = Σ t(t-1)/2 over the tie groups of x."""
    def sign(v: float) -> int:
        return (v > 0) - (v < 0)

    n = len(xs)
    s = sum(sign(xs[i] - xs[j]) * sign(ys[i] - ys[j]) for i, j in itertools.combinations(range(n), 2))
    n0 = n * (n - 1) / 2

    def ties(values: list[float]) -> float:
        return sum(t * (t - 1) / 2 for t in (values.count(v) for v in set(values)))

    return s / math.sqrt((n0 - ties(xs)) * (n0 - ties(ys)))


def test_kendall_tau_b_agrees_with_the_tie_group_formula_on_random_rankings():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(3, 12)
        xs = [float(rng.randint(0, 4)) for _ in range(n)]
        ys = [float(rng.randint(0, 4)) for _ in range(n)]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            assert kendall_tau_b(xs, ys) == pytest.approx(tau_b_by_tie_groups(xs, ys))


def test_kendall_tau_b_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed (no dependency of noisyfit): "
                                                      "compared with the tie-group formula instead")
    rng = random.Random(1)
    for _ in range(50):
        xs = [float(rng.randint(0, 4)) for _ in range(9)]
        ys = [float(rng.randint(0, 4)) for _ in range(9)]
        expected = stats.kendalltau(xs, ys, variant="b").statistic
        got = kendall_tau_b(xs, ys)
        assert (got is None and math.isnan(expected)) or got == pytest.approx(expected)


def test_validation_test_tau_needs_three_cells_with_both_figures():
    row = lambda v, m: {"cell": {}, "mean": m, "val_mean": v}  # noqa: E731
    assert validation_test_kendall_tau([row(0.5, 0.6), row(0.6, 0.7)]) is None
    assert validation_test_kendall_tau([row(0.5, 0.6), row(0.6, 0.7), row(None, 0.9)]) is None
    assert validation_test_kendall_tau([row(0.5, 0.6), row(0.6, 0.7), row(0.7, 0.65)]) == pytest.approx(1 / 3)
