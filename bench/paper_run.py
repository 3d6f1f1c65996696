"""Time per run of the paper's CIFAR-10 recipe: cnn8, 50,000 samples, batch 128, crop and flip,
120 epochs, each epoch evaluated (the training set and the 10,000 test images).

Trains a few epochs on random images of CIFAR-10's shape (the speed does not depend on them) and
extrapolates the whole run from the median epoch: epochs × median epoch time.

    python bench/paper_run.py --device cuda              # fp32 and bf16, 3 epochs each
    python bench/paper_run.py --device cpu --epochs 1 --train-size 512 --test-size 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.spec import JobSpec, resolve_spec  # noqa: E402
from worker.trainer import Callback, PreparedData, train  # noqa: E402

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PAPER_EPOCHS = 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed (the whole run is extrapolated)")
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--test-size", type=int, default=10_000)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    n = args.train_size + args.test_size
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = PreparedData(x[: args.train_size], y[: args.train_size], x[args.train_size:], y[args.train_size:], 10,
                        CIFAR10_MEAN, CIFAR10_STD)
    for precision in args.precisions.split(","):
        spec = resolve_spec(JobSpec(dataset="cifar10", epochs=PAPER_EPOCHS, precision=precision))
        stop = StopAfter(args.epochs)
        started = time.perf_counter()
        result = train(spec, data, [stop], device=args.device)
        seconds = time.perf_counter() - started
        epochs = [m["epoch_seconds"] for m in result.history]
        median = statistics.median(epochs)
        print(f"cifar10 recipe ({spec.model}, batch {spec.batch_size}, {args.train_size} samples, {spec.augment}), "
              f"{precision}, {args.device}: epochs {' '.join(f'{s:.2f}' for s in epochs)} s "
              f"(training {statistics.median(m['samples_per_second'] for m in result.history):.0f} img/s); "
              f"{args.epochs} epochs in {seconds:.1f} s; "
              f"a whole run of {PAPER_EPOCHS} epochs: about {PAPER_EPOCHS * median:.0f} s")


class StopAfter(Callback):
    """Stops the run after `epochs` epochs."""

    def __init__(self, epochs: int):
        self.epochs, self.done = epochs, 0

    def on_epoch_end(self, state, metrics) -> None:
        self.done = state.epoch

    def should_stop(self) -> bool:
        return self.done >= self.epochs


if __name__ == "__main__":
    main()
