"""bench/label_issues.py's own arithmetic, on arrays small enough to score by hand: the flagged
set's precision, recall and F1, the noise-rate error, and the side-by-side verdict. No cleanlab:
the script asks for it by name, with what to install, when it is missing."""

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_label_issues", ROOT / "bench" / "label_issues.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_label_issues"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()


def test_a_flagged_set_is_scored_against_the_corrupted_samples():
    corrupted = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)  # true noise rate 0.4
    flagged = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)  # 3 hits of 4 flagged, 3 of 4 found
    figures = bench.score(bench.Estimate(flagged, 0.55, {}), corrupted)
    assert figures["count"] == 4
    assert figures["precision"] == pytest.approx(0.75) and figures["recall"] == pytest.approx(0.75)
    assert figures["f1"] == pytest.approx(0.75)
    assert figures["noise_rate_true"] == pytest.approx(0.4)
    assert figures["noise_rate_error"] == pytest.approx(0.15)


def test_an_empty_flagged_set_has_no_precision_and_an_underestimate_a_positive_error():
    corrupted = np.array([1, 0, 0, 0], dtype=bool)
    figures = bench.score(bench.Estimate(np.zeros(4, dtype=bool), 0.0, {}), corrupted)
    assert figures["precision"] is None and figures["recall"] == 0.0 and figures["f1"] is None
    assert figures["noise_rate_error"] == pytest.approx(0.25)


def _row(estimator: str, probabilities: str, precision: float, recall: float, error: float, runs: int,
         wall: float, cpu: float) -> dict[str, Any]:
    return {"noise": "symmetric 0.4", "estimator": estimator, "probabilities": probabilities, "precision": precision,
            "recall": recall, "f1": 2 * precision * recall / (precision + recall), "noise_rate_error": error,
            "runs": runs, "train_wall_s": wall, "train_cpu_s": cpu}


def test_the_verdict_sets_one_apl_run_of_ours_against_cleanlabs_cross_validated_recipe():
    rows = [
        _row("cleanlab", bench.CROSS_VALIDATED, 0.8, 0.9, 0.05, 5, 400.0, 800.0),
        _row("cleanlab", bench.IN_SAMPLE, 0.1, 0.1, 0.5, 1, 100.0, 200.0),  # neither of the two compared
        _row("noisyfit", bench.IN_SAMPLE, 0.85, 0.9, 0.02, 1, 100.0, 160.0),
        _row("noisyfit", bench.CROSS_VALIDATED, 0.1, 0.1, 0.5, 5, 400.0, 800.0),
    ]
    (verdict,) = bench.verdict(rows)
    assert verdict["precision"] == pytest.approx(0.05) and verdict["recall"] == pytest.approx(0.0)
    assert verdict["noise_rate_error"] == pytest.approx(-0.03)
    assert verdict["compute_wall"] == pytest.approx(0.25) and verdict["compute_cpu"] == pytest.approx(0.2)
    assert verdict["runs"] == "1 / 5" and verdict["as_good"]

    rows[2]["recall"] = 0.89
    assert not bench.verdict(rows)[0]["as_good"]


def test_without_cleanlab_the_script_says_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "cleanlab"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # what an absent package looks like to import
    with pytest.raises(SystemExit) as stop:
        bench.require_cleanlab()
    assert "pip install -e '.[bench]'" in str(stop.value.code)


def test_the_summary_averages_the_figures_and_adds_up_the_runs_and_seconds():
    rows = [{**_row("noisyfit", bench.IN_SAMPLE, 0.8, 0.6, 0.1, 1, 100.0, 50.0), "noise": "symmetric 0.2",
             "estimate_wall_s": 0.5, "estimate_cpu_s": 0.25},
            {**_row("noisyfit", bench.IN_SAMPLE, 0.6, 1.0, 0.3, 1, 300.0, 150.0), "noise": "symmetric 0.4",
             "estimate_wall_s": 1.5, "estimate_cpu_s": 0.75},
            {**_row("noisyfit", bench.IN_SAMPLE, 0.6, 1.0, 0.3, 1, 300.0, 150.0), "noise": "asymmetric 0.2",
             "estimate_wall_s": 1.0, "estimate_cpu_s": 0.5, "precision": None, "f1": None}]
    (summary,) = bench.summary(rows)
    assert (summary["estimator"], summary["probabilities"], summary["settings"]) == ("noisyfit", bench.IN_SAMPLE, 3)
    assert summary["precision"] == pytest.approx(0.7)  # the undefined precision left out, not taken as 0
    assert summary["recall"] == pytest.approx((0.6 + 1.0 + 1.0) / 3)
    assert summary["noise_rate_error"] == pytest.approx((0.1 + 0.3 + 0.3) / 3)
    assert summary["runs"] == 3 and summary["train_wall_s"] == pytest.approx(700.0)
    assert summary["train_cpu_s"] == pytest.approx(350.0) and summary["estimate_wall_s"] == pytest.approx(3.0)
