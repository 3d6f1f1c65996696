"""Finding wrong labels: noisyfit against cleanlab, side by side, on real Fashion-MNIST with
known noise.

For each noise setting, on the same noisy training set and with the same spec per training run
(model, recipe, epochs, seed; only the loss differs), two sets of probabilities are made:

- "cross-validated CE": cleanlab's documented recipe. 5 CE models, each trained on 4 of 5 folds by our
  engine (worker/cross_fit.py, what a job's `cross_fit_folds: 5` runs), predict the fold they
  did not see: out-of-sample probabilities, 5 training runs.
- "APL in-sample": one NCE+RCE model (an Active Passive Loss, the job's own training) and its
  probabilities of the samples it trained on: 1 training run.

Two estimators read each: cleanlab (`cleanlab.filter.find_label_issues` with its defaults for
the flagged set, `cleanlab.count.num_label_issues` for the noise rate) and noisyfit
(worker.label_quality.assess_labels: the flagged set by prune_by_noise_rate, the calibrated
joint's off-diagonal mass with a bootstrap interval). Each row is scored against the known
corrupted samples: precision, recall and F1 of the flagged set, the noise-rate estimate's error,
the training runs and seconds (wall and CPU), and the estimator's seconds. Prints a Markdown
table per noise setting, the side-by-side verdict, and the means over the settings; --out writes
the figures as JSON.

cleanlab is AGPL: it is the `bench` extra (pip install -e '.[bench]'), installed by no image, and
imported here only (require_cleanlab, which says what to install when it is missing).

    python bench/label_issues.py --train-size 5000 --epochs 6 --out var/label_issues.json
    python bench/label_issues.py --from-json var/label_issues.json   # the tables again, no training
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.spec import JobSpec, resolve_spec
from worker.cross_fit import cross_fitted_probabilities
from worker.datasets import LoadedData, load_dataset
from worker.label_quality import assess_labels, detection
from worker.runner import fold_assignment, make_labels, prepare_data
from worker.sinks import LocalSink
from worker.trainer import per_sample_losses, predict, train

NOISES = [("symmetric", 0.2), ("symmetric", 0.4), ("symmetric", 0.6), ("asymmetric", 0.2), ("asymmetric", 0.4)]
APL = "nce+rce"
BENCH_EXTRA = "pip install -e '.[bench]'"


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # seconds of this process's CPU time, all its threads


class Stopwatch:
    """Wall and CPU seconds of a `with` block: on a shared machine wall time is mostly waiting."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


@dataclass(frozen=True)
class Probabilities:
    """Predicted probabilities of the training samples and what making them cost."""

    name: str
    values: np.ndarray  # float32 [n, K]
    runs: int  # training runs
    training: Timing  # training and predicting the training samples
    test_acc: float | None = None


@dataclass(frozen=True)
class Estimate:
    """What an estimator says of the given labels."""

    flagged: np.ndarray  # bool [n]
    noise_rate: float
    details: dict[str, Any]


Estimator = Callable[[np.ndarray, np.ndarray, int, int], Estimate]


# ---------------------------------------------------------------------------------------
# The estimators
# ---------------------------------------------------------------------------------------


def require_cleanlab() -> Any:
    """The cleanlab package, or exit with what to install."""
    try:
        return importlib.import_module("cleanlab.filter"), importlib.import_module("cleanlab.count")
    except ImportError:
        sys.exit(f"bench/label_issues.py compares against cleanlab, which is not installed: run {BENCH_EXTRA} "
                 "(the bench extra; cleanlab is AGPL and no image installs it)")


def cleanlab_estimate(probabilities: np.ndarray, given: np.ndarray, num_classes: int, seed: int) -> Estimate:
    """cleanlab's defaults: find_label_issues (filter_by='prune_by_noise_rate') for the flagged
    set and num_label_issues (estimation_method='off_diagonal') for the noise rate; n_jobs=1
    changes only its speed (documented) and keeps its time in this process. The calibrated
    joint's off-diagonal mass (the quantity noisyfit reports) goes into the details."""
    filter_, count = require_cleanlab()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    flagged = filter_.find_label_issues(given, probabilities, n_jobs=1)
    issues = count.num_label_issues(given, probabilities)
    joint = count.estimate_joint(given, probabilities)
    return Estimate(np.asarray(flagged, dtype=bool), float(issues) / len(given),
                    {"num_label_issues": int(issues), "joint_noise_rate": float(1.0 - np.trace(joint))})


def noisyfit_estimate(probabilities: np.ndarray, given: np.ndarray, num_classes: int, seed: int) -> Estimate:
    """noisyfit's report as a job writes it (bootstrap interval included), without clean labels."""
    quality = assess_labels(probabilities, given, num_classes, seed=seed)
    rate = quality.report["noise_rate"]
    return Estimate(quality.flagged, rate["estimate"], {"low": rate["low"], "high": rate["high"]})


ESTIMATORS: dict[str, Estimator] = {"cleanlab": cleanlab_estimate, "noisyfit": noisyfit_estimate}
CROSS_VALIDATED, IN_SAMPLE = "cross-validated CE", "APL in-sample"
ROWS = [("cleanlab", CROSS_VALIDATED), ("cleanlab", IN_SAMPLE), ("noisyfit", IN_SAMPLE), ("noisyfit", CROSS_VALIDATED)]


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def score(estimate: Estimate, corrupted: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of the flagged set as a guess of `corrupted`; the noise-rate
    estimate beside the true share of corrupted samples, and its absolute error."""
    true = float(np.mean(corrupted))
    return {**detection(estimate.flagged, corrupted), "noise_rate_estimate": estimate.noise_rate,
            "noise_rate_true": true, "noise_rate_error": abs(estimate.noise_rate - true)}


def verdict(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per noise setting, noisyfit on one APL run against cleanlab's cross-validated recipe
    (the issue's goal: precision and recall at least as good, at a fifth of its compute): the
    differences, ours − cleanlab's, and the training seconds, ours / cleanlab's."""
    out = []
    for noise in dict.fromkeys(r["noise"] for r in rows):
        ours = _row(rows, noise, "noisyfit", IN_SAMPLE)
        anchor = _row(rows, noise, "cleanlab", CROSS_VALIDATED)
        compute = {key: ours[f"train_{key}_s"] / anchor[f"train_{key}_s"] for key in ("wall", "cpu")}
        out.append({
            "noise": noise,
            "precision": _difference(ours["precision"], anchor["precision"]),
            "recall": _difference(ours["recall"], anchor["recall"]),
            "f1": _difference(ours["f1"], anchor["f1"]),
            "noise_rate_error": ours["noise_rate_error"] - anchor["noise_rate_error"],
            "runs": f"{ours['runs']} / {anchor['runs']}",
            "compute_wall": compute["wall"], "compute_cpu": compute["cpu"],
            "as_good": (ours["precision"] or 0) >= (anchor["precision"] or 0)
                       and (ours["recall"] or 0) >= (anchor["recall"] or 0),
        })
    return out


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (estimator, probabilities): the means over the noise settings of P, R, F1 and the
    noise-rate error (of the settings where each is defined); the training runs and seconds
    summed over them."""
    out = []
    for estimator, probabilities in dict.fromkeys((r["estimator"], r["probabilities"]) for r in rows):
        mine = [r for r in rows if (r["estimator"], r["probabilities"]) == (estimator, probabilities)]
        out.append({
            "estimator": estimator, "probabilities": probabilities, "settings": len(mine),
            **{key: _mean([r[key] for r in mine]) for key in ("precision", "recall", "f1", "noise_rate_error")},
            **{key: sum(r[key] for r in mine) for key in ("runs", "train_wall_s", "train_cpu_s", "estimate_wall_s",
                                                          "estimate_cpu_s")},
        })
    return out


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _row(rows: list[dict[str, Any]], noise: str, estimator: str, probabilities: str) -> dict[str, Any]:
    return next(r for r in rows if (r["noise"], r["estimator"], r["probabilities"]) == (noise, estimator, probabilities))


def _difference(ours: float | None, anchor: float | None) -> float | None:
    return None if ours is None or anchor is None else ours - anchor


# ---------------------------------------------------------------------------------------
# Training: the same noisy set, the same spec but for the loss
# ---------------------------------------------------------------------------------------


def noisy_set_rows(dataset: LoadedData, noise: tuple[str, float], args: argparse.Namespace) -> list[dict[str, Any]]:
    def spec(loss: str, folds: int = 0):
        return resolve_spec(JobSpec(dataset=dataset.name, noise={"type": noise[0], "rate": noise[1]}, loss=loss,
                                    epochs=args.epochs, train_size=args.train_size, seed=args.seed,
                                    cross_fit_folds=folds))

    ce, apl = spec("ce", args.folds), spec(APL)
    labels = make_labels(ce, dataset)  # the noise and the subset depend on the seed, not the loss
    data = prepare_data(dataset, labels).to(args.device)
    given = labels.noisy[labels.train_indices]
    corrupted = labels.corrupted[labels.train_indices]

    with Stopwatch() as clock, tempfile.TemporaryDirectory() as folder:
        fold = fold_assignment(given, args.folds, args.seed)
        crossed = cross_fitted_probabilities(ce, data, fold, LocalSink(folder), device=args.device)
    made = [Probabilities(CROSS_VALIDATED, crossed, args.folds, clock.timing)]
    with Stopwatch() as clock:
        outcome = train(apl, data, device=args.device, evaluate=False)
        in_sample = per_sample_losses(outcome.model, data, apl).probabilities
    _, predicted, _ = predict(outcome.model, data.x_test, data.y_test, data.mean, data.std, apl.eval_batch_size)
    test_acc = float((predicted.cpu() == data.y_test.cpu()).float().mean())
    made.append(Probabilities(IN_SAMPLE, in_sample, 1, clock.timing, test_acc))

    by_name = {p.name: p for p in made}
    rows = []
    for estimator, name in ROWS:
        probabilities = by_name[name]
        with Stopwatch() as clock:
            estimate = ESTIMATORS[estimator](probabilities.values, given, dataset.num_classes, args.seed)
        rows.append({
            "noise": f"{noise[0]} {noise[1]:g}", "estimator": estimator, "probabilities": name,
            "runs": probabilities.runs, "test_acc": probabilities.test_acc,
            "train_wall_s": probabilities.training.wall, "train_cpu_s": probabilities.training.cpu,
            "estimate_wall_s": clock.timing.wall, "estimate_cpu_s": clock.timing.cpu,
            **score(estimate, corrupted), "details": estimate.details,
        })
    return rows


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| noise | estimator | probabilities | runs | flagged | P | R | F1 | noise rate est. | true | error "
            "| training s (CPU) | estimation s (CPU) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['noise']} | {r['estimator']} | {r['probabilities']} | {r['runs']} | {r['count']} | "
            f"{_f(r['precision'])} | {_f(r['recall'])} | {_f(r['f1'])} | {r['noise_rate_estimate']:.3f} | "
            f"{r['noise_rate_true']:.3f} | {r['noise_rate_error']:.3f} | "
            f"{r['train_wall_s']:.0f} ({r['train_cpu_s']:.0f}) | {r['estimate_wall_s']:.2f} ({r['estimate_cpu_s']:.2f}) |"
        )
    return "\n".join(lines)


def verdict_table(verdicts: list[dict[str, Any]]) -> str:
    head = "| noise | ΔP | ΔR | ΔF1 | Δ noise-rate error | runs | training s, wall | training s, CPU | P and R as good |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for v in verdicts:
        lines.append(
            f"| {v['noise']} | {_signed(v['precision'])} | {_signed(v['recall'])} | {_signed(v['f1'])} | "
            f"{_signed(v['noise_rate_error'])} | {v['runs']} | {v['compute_wall']:.2f}× | {v['compute_cpu']:.2f}× | "
            f"{'yes' if v['as_good'] else 'no'} |"
        )
    return "\n".join(lines)


def summary_table(summaries: list[dict[str, Any]]) -> str:
    head = ("| estimator | probabilities | runs | training s (CPU) | estimation s (CPU) | P | R | F1 "
            "| noise-rate error |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        lines.append(
            f"| {s['estimator']} | {s['probabilities']} | {s['runs']} | {s['train_wall_s']:.0f} ({s['train_cpu_s']:.0f}) | "
            f"{s['estimate_wall_s']:.2f} ({s['estimate_cpu_s']:.2f}) | {_f(s['precision'])} | {_f(s['recall'])} | "
            f"{_f(s['f1'])} | {s['noise_rate_error']:.3f} |"
        )
    return "\n".join(lines)


def report(rows: list[dict[str, Any]], args: dict[str, Any]) -> str:
    return "\n".join([
        f"fashion-mnist, train_size {args['train_size']}, {args['epochs']} epochs, seed {args['seed']}, "
        f"{args['folds']} folds, device {args['device']}",
        table(rows),
        "\nnoisyfit on one APL run against cleanlab's recipe (differences: ours − cleanlab's; training: ours / theirs)",
        verdict_table(verdict(rows)),
        f"\nover the {len(dict.fromkeys(r['noise'] for r in rows))} noise settings (means; runs and seconds: sums)",
        summary_table(summary(rows)),
    ])


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of cleanlab's recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-size", type=int, default=2000, help="test images the APL model is scored on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="var/data")
    parser.add_argument("--noises", default=",".join(f"{kind}:{rate:g}" for kind, rate in NOISES),
                        help="TYPE:RATE,... (default: %(default)s)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--from-json", type=Path, help="print the tables of a saved --out, without training")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(report(saved["rows"], saved["args"]))
        return
    require_cleanlab()  # before any training

    dataset = load_dataset("fashion-mnist", args.data_dir)
    dataset = dataclasses.replace(dataset, x_test=dataset.x_test[:args.test_size], y_test=dataset.y_test[:args.test_size])
    rows: list[dict[str, Any]] = []
    for kind, rate in (item.split(":") for item in args.noises.split(",")):
        rows += noisy_set_rows(dataset, (kind, float(rate)), args)
        print(table(rows[-len(ROWS):]), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                            "verdict": verdict(rows), "summary": summary(rows)}, indent=1))
    print()
    print(report(rows, {k: str(v) for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()
