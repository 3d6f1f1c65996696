"""A small sweep trained three ways: one run after another, packed, and fused.

    sequential  each run alone (worker.trainer.train), one after another, in one process
    packed      --procs processes at once, each training its share of the runs alone, the
                device's threads split between them (on a GPU: the processes share it)
    fused       all runs together in one process (worker.fused.train_fused): run by run
                ("fused-loop", bit for bit the run alone) and as one wide model ("fused-wide")

Only training and per-epoch evaluation are timed (each mode's data is ready before its clock
starts; an untimed warm-up creates the kernels first). It prints the wall time of each mode and
its speed-up over sequential, then checks that every mode gives every run the same results:
fused-loop bit for bit on CPU, every mode the final test accuracy of sequential within
ACCURACY_TOLERANCE; the weight difference is printed. Exit code 1 when a result differs.

    python bench/sweep_modes.py                                     # Fashion-MNIST, cnn4, CPU
    python bench/sweep_modes.py --dataset cifar10-synthetic --device cuda --runs 8 --train-size 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import JobSpec, ResolvedSpec, resolve_spec  # noqa: E402
from worker.fused import train_fused  # noqa: E402
from worker.trainer import PreparedData, TrainResult, train  # noqa: E402

LOSSES = ("ce", "nce+rce", "gce", "sce", "nce+mae", "fl", "mae", "ngce+rce")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
ACCURACY_TOLERANCE = 0.01
"""Runs whose sums are taken in another order (the wide model's grouped kernels, another number
of threads when packed, cuDNN's own choices) drift apart as they train, as any run does from a
rounding change; their final test accuracies stay this close."""
MODES = ("sequential", "packed", "fused-loop", "fused-wide")

Outcome = dict[str, Any]  # per run: "weights" (state dict on the CPU), "history"


def sweep_specs(args: argparse.Namespace) -> list[ResolvedSpec]:
    """--runs runs: losses × seeds, the data set's recipe otherwise."""
    dataset = "cifar10" if args.dataset == "cifar10-synthetic" else args.dataset
    cells = [(LOSSES[i % len(LOSSES)], i // len(LOSSES) + i % 2) for i in range(args.runs)]
    return [resolve_spec(JobSpec(dataset=dataset, loss=loss, seed=seed, epochs=args.epochs, train_size=args.train_size,
                                 noise={"type": "symmetric", "rate": 0.4}))
            for loss, seed in cells]


def sweep_data(args: argparse.Namespace, specs: list[ResolvedSpec]) -> list[PreparedData]:
    """Each run's own data: its noisy labels and subset (Fashion-MNIST), or random images of
    CIFAR-10's shape with random labels drawn by the run's seed (the speed does not depend on them)."""
    if args.dataset == "cifar10-synthetic":
        out = []
        for spec in specs:
            g = torch.Generator().manual_seed(spec.seed)
            n = spec.training_samples
            x = torch.randint(0, 256, (n + args.test_size, 3, 32, 32), dtype=torch.uint8, generator=g)
            y = torch.randint(0, 10, (n + args.test_size,), generator=g)
            out.append(PreparedData(x[:n], y[:n], x[n:], y[n:], 10, CIFAR10_MEAN, CIFAR10_STD))
        return out
    from shared.settings import get_settings
    from worker.datasets import load_dataset
    from worker.runner import make_labels, prepare_data

    ds = load_dataset(args.dataset, get_settings().data_dir)
    ds = dataclasses.replace(ds, x_test=ds.x_test[: args.test_size], y_test=ds.y_test[: args.test_size])
    return [prepare_data(ds, make_labels(spec, ds)) for spec in specs]


def outcome(result: TrainResult) -> Outcome:
    return {"weights": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
            "history": result.history}


def sequential(args: argparse.Namespace, specs: list[ResolvedSpec], datas: list[PreparedData]) -> list[Outcome]:
    return [outcome(train(spec, data, device=args.device)) for spec, data in zip(specs, datas)]


def fused(args: argparse.Namespace, specs: list[ResolvedSpec], datas: list[PreparedData], wide: bool) -> list[Outcome]:
    results = train_fused(specs, datas, device=args.device, wide=wide)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return [outcome(r) for r in results]


def _packed_worker(args: argparse.Namespace, share: list[int], threads: int, folder: str, barrier: Any) -> None:
    torch.set_num_threads(threads)
    specs = sweep_specs(args)
    datas = sweep_data(args, specs)
    barrier.wait()
    for i in share:
        torch.save(outcome(train(specs[i], datas[i], device=args.device)), f"{folder}/{i}.pt")


def packed(args: argparse.Namespace, specs: list[ResolvedSpec]) -> tuple[float, list[Outcome]]:
    """--procs processes, run i in process i % procs; timed from the moment all have their data."""
    procs = min(args.procs, len(specs))
    threads = max(1, torch.get_num_threads() // procs) if args.device == "cpu" else torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(procs + 1)
    with tempfile.TemporaryDirectory() as folder:
        workers = [context.Process(target=_packed_worker,
                                   args=(args, list(range(p, len(specs), procs)), threads, folder, barrier))
                   for p in range(procs)]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - started
        if any(w.exitcode != 0 for w in workers):
            raise RuntimeError(f"a packed process failed: exit codes {[w.exitcode for w in workers]}")
        return seconds, [torch.load(f"{folder}/{i}.pt", weights_only=True) for i in range(len(specs))]


def warm_up(args: argparse.Namespace, specs: list[ResolvedSpec], datas: list[PreparedData]) -> None:
    """Two batches of one epoch alone and together, untimed: the first mode timed would
    otherwise pay for creating the kernels (oneDNN primitives, cuDNN plans) of the rest."""
    size = 2 * specs[0].batch_size
    short = [s.model_copy(update={"epochs": 1, "train_size": size, "validation_split": 0.0}) for s in specs]
    small = [dataclasses.replace(d, x_train=d.x_train[:size], y_train=d.y_train[:size], x_val=None, y_val=None,
                                 y_train_clean=None, x_test=d.x_test[:size], y_test=d.y_test[:size]) for d in datas]
    train(short[0], small[0], device=args.device)
    for wide in (False, True):
        train_fused(short, small, device=args.device, wide=wide)


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖a − b‖ / ‖a‖ over every weight (the parameters, not the batch norms' statistics)."""
    names = [k for k in a if a[k].is_floating_point() and "running_" not in k]
    difference = sum((a[k].double() - b[k].double()).square().sum() for k in names).sqrt()
    return (difference / sum(a[k].double().square().sum() for k in names).sqrt()).item()


TABLE2_RUNS, TABLE2_EPOCHS, CIFAR10_TRAIN, CIFAR10_TEST = 135, 120, 50_000, 10_000


def print_table2(seconds: dict[str, float], specs: list[ResolvedSpec], args: argparse.Namespace) -> None:
    """Table 2 of the paper for CIFAR-10: 135 runs of 120 epochs over 50,000 training and 10,000
    test images, at each mode's speed here (its time per image-epoch, training and evaluation
    together; keep --test-size at a fifth of --train-size for CIFAR-10's proportions)."""
    measured = len(specs) * args.epochs * (specs[0].training_samples + args.test_size)
    whole = TABLE2_RUNS * TABLE2_EPOCHS * (CIFAR10_TRAIN + CIFAR10_TEST)
    print(f"Table 2 ({TABLE2_RUNS} runs × {TABLE2_EPOCHS} epochs × {CIFAR10_TRAIN} + {CIFAR10_TEST} images) "
          "at these speeds: " + ", ".join(f"{mode} {seconds[mode] / measured * whole / 60:.0f} min"
                                          for mode in seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["fashion-mnist", "cifar10-synthetic"], default="fashion-mnist")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=2, help="processes of the packed mode")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of: {', '.join(MODES)}")
    parser.add_argument("--table2", action="store_true",
                        help="also extrapolate each mode to the paper's Table 2 sweep on CIFAR-10")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")

    specs = sweep_specs(args)
    datas = sweep_data(args, specs)
    print(f"{args.dataset}: {specs[0].model}, {len(specs)} runs ({', '.join(f'{s.loss}/seed {s.seed}' for s in specs)}), "
          f"{specs[0].training_samples} samples, {args.epochs} epochs, batch {specs[0].batch_size}, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    warm_up(args, specs, datas)
    seconds: dict[str, float] = {}
    outcomes: dict[str, list[Outcome]] = {}
    for mode in modes:
        if args.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        if mode == "packed":
            seconds[mode], outcomes[mode] = packed(args, specs)
            continue
        if mode == "sequential":
            outcomes[mode] = sequential(args, specs, datas)
        else:
            outcomes[mode] = fused(args, specs, datas, wide=mode == "fused-wide")
        seconds[mode] = time.perf_counter() - started
    reference = "sequential" if "sequential" in modes else modes[0]
    for mode in modes:
        ratio = seconds[reference] / seconds[mode]
        print(f"{mode:>11}: {seconds[mode]:8.2f} s   {seconds[mode] / len(specs):7.2f} s/run   "
              f"speed-up over {reference}: {ratio:.2f}×")
    if args.table2:
        print_table2(seconds, specs, args)
    exact = {"fused-loop"} if args.device == "cpu" else set()
    failed = False
    print("run  " + "  ".join(f"{mode + ' acc / Δw':>26}" for mode in modes))
    for i in range(len(specs)):
        base = outcomes[reference][i]
        cells = []
        for mode in modes:
            difference = relative_difference(base["weights"], outcomes[mode][i]["weights"])
            accuracy = outcomes[mode][i]["history"][-1]["test_acc"]
            failed |= abs(accuracy - base["history"][-1]["test_acc"]) > ACCURACY_TOLERANCE
            failed |= mode in exact and difference != 0.0
            cells.append(f"{accuracy:.4f} / {difference:.1e}")
        print(f"{i:3d}  " + "  ".join(f"{cell:>26}" for cell in cells))
    print(f"Δw: ‖w − w_{reference}‖ / ‖w_{reference}‖ over the weights (0: bit for bit)")
    print("results: " + ("DIFFER" if failed else "the same") + f" ({', '.join(sorted(exact)) or 'no mode'} bit for bit "
          f"as {reference}; every mode's final test accuracy within {ACCURACY_TOLERANCE:.0%} of it)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
