"""How well the label-quality report finds the noise, on real Fashion-MNIST with known noise.

For each noise setting and loss, one job with cross_fit_folds = K gives both reports: the one it
writes (cross-fitted probabilities) and the one from its final model's own probabilities
(label_probabilities.npz `in_sample`). Prints a Markdown table; --out writes the rows as JSON.
Also times assess_labels on 60,000 × 10 synthetic probabilities (the bootstrap included).

    python bench/label_quality.py --train-size 5000 --epochs 10 --folds 3 --out var/label_quality.json
"""

import argparse
import dataclasses
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.spec import JobSpec, resolve_spec
from worker.datasets import load_dataset
from worker.label_quality import assess_labels
from worker.runner import run_job
from worker.sinks import LocalSink

NOISES = [("symmetric", 0.6), ("symmetric", 0.4), ("asymmetric", 0.4)]
LOSSES = ["ce", "nce+rce"]


def cell(dataset, noise: tuple[str, float], loss: str, args: argparse.Namespace) -> list[dict]:
    spec = resolve_spec(JobSpec(dataset="fashion-mnist", noise={"type": noise[0], "rate": noise[1]}, loss=loss,
                                epochs=args.epochs, train_size=args.train_size, seed=args.seed,
                                cross_fit_folds=args.folds))
    with tempfile.TemporaryDirectory() as folder:
        sink = LocalSink(folder)
        result = run_job(spec, sink, None, device=args.device, dataset=dataset)
        crossed = json.loads(sink.get("label_report.json"))
        with np.load(io.BytesIO(sink.get("label_probabilities.npz"))) as npz:
            in_sample, given = npz["in_sample"], npz["given"]
        with np.load(io.BytesIO(sink.get("noisy_labels.npz"))) as npz:
            clean = npz["clean"][npz["train_indices"]]
        csv_losses = final_model_losses(sink)
    own = assess_labels(in_sample, given, 10, losses=csv_losses, clean=clean, seed=args.seed).report
    base = {"noise": f"{noise[0]} {noise[1]:g}", "loss": loss, "test_acc": result["final_test_accuracy"],
            "train_seconds": result["timings"]["train_seconds"],
            "cross_fit_seconds": result["timings"]["cross_fit_seconds"]}
    return [{**base, "probabilities": name, **figures(report)} for name, report in
            (("in_sample", own), (f"cross_fitted (K={args.folds})", crossed))]


def final_model_losses(sink: LocalSink) -> np.ndarray:
    """The final model's per-sample loss from suspected_mislabels.csv, in train_indices order
    (which is ascending)."""
    lines = sink.get("suspected_mislabels.csv").decode().splitlines()[1:]
    rows = sorted((int(line.split(",")[0]), float(line.split(",")[4])) for line in lines)
    return np.array([loss for _, loss in rows])


def figures(report: dict) -> dict:
    clean = report["against_clean"]
    methods = clean["flagged_by_method"]
    return {
        "estimate": report["noise_rate"]["estimate"], "low": report["noise_rate"]["low"],
        "high": report["noise_rate"]["high"], "true": clean["noise_rate"], "covered": clean["noise_rate_covered"],
        "per_class_covered": clean["per_class_covered"], "abs_error": clean["noise_rate_error"],
        "matrix_error": clean["transition_matrix_error"],
        **{f"{short}_{key}": methods[name][key] for short, name in (("prune", "prune_by_noise_rate"),
                                                                     ("offdiag", "confident_off_diagonal"))
           for key in ("count", "precision", "recall", "f1")},
        **{f"ap_{name}": value for name, value in clean["average_precision_by_score"].items()},
    }


def table(rows: list[dict]) -> str:
    head = ("| noise | loss | probabilities | test acc | noise rate est. [95% interval] | true | covered | "
            "|T err| | prune P / R / F1 | off-diag P / R / F1 | AP loss / self-conf / margin |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['noise']} | {r['loss']} | {r['probabilities']} | {r['test_acc']:.3f} | "
            f"{r['estimate']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {r['true']:.3f} | "
            f"{'yes' if r['covered'] else 'no'} ({r['per_class_covered']}/10 classes) | {r['matrix_error']:.3f} | "
            f"{r['prune_precision']:.3f} / {r['prune_recall']:.3f} / {r['prune_f1']:.3f} | "
            f"{r['offdiag_precision']:.3f} / {r['offdiag_recall']:.3f} / {r['offdiag_f1']:.3f} | "
            f"{r['ap_loss']:.3f} / {r['ap_self_confidence']:.3f} / {r['ap_margin']:.3f} |"
        )
    return "\n".join(lines)


def time_assessment(repeats: int = 3) -> tuple[float, float]:
    """Best of `repeats` (CPU seconds, wall seconds) of assess_labels on 60,000 × 10 with clean
    labels (200 bootstrap resamples). CPU time is what an idle core would take: this machine is
    shared, and its wall time is mostly waiting for a core."""
    rng = np.random.default_rng(0)
    n, k = 60_000, 10
    true = rng.integers(0, k, n)
    given = np.where(rng.random(n) < 0.4, rng.integers(0, k, n), true)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += 4
    probabilities = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        assess_labels(probabilities, given, k, clean=true)
        best_cpu, best_wall = min(best_cpu, time.process_time() - cpu), min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-size", type=int, default=2000, help="test images evaluated each epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="var/data")
    parser.add_argument("--noises", default=",".join(f"{kind}:{rate:g}" for kind, rate in NOISES),
                        help="TYPE:RATE,... (default: %(default)s)")
    parser.add_argument("--losses", default=",".join(LOSSES), help="default: %(default)s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    cpu, wall = time_assessment()
    print(f"assess_labels, 60,000 × 10, 200 resamples: {cpu:.2f} s CPU, {wall:.2f} s wall (best of 3)", flush=True)
    dataset = load_dataset("fashion-mnist", args.data_dir)
    dataset = dataclasses.replace(dataset, x_test=dataset.x_test[:args.test_size], y_test=dataset.y_test[:args.test_size])
    rows: list[dict] = []
    noises = [(kind, float(rate)) for kind, rate in (item.split(":") for item in args.noises.split(","))]
    for noise in noises:
        for loss in args.losses.split(","):
            rows += cell(dataset, noise, loss, args)
            print(table(rows[-2:]).splitlines()[-2:], flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                               indent=1))
    print(f"fashion-mnist, train_size {args.train_size}, {args.epochs} epochs, seed {args.seed}, K = {args.folds}")
    print(table(rows))


if __name__ == "__main__":
    main()
