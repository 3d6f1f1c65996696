"""Train in the foreground, without any server; the artifacts land in a local folder.

    python -m worker.cli train SPEC.json --out runs/demo
    python -m worker.cli train --dataset fashion-mnist --loss nce+rce --noise symmetric:0.6 \\
        --epochs 5 --train-size 10000 --out runs/nce-rce

A spec file, the flags and --set KEY=VALUE (dotted for nested fields, e.g. noise.rate=0.4) are
merged in that order, then resolved against the paper's presets (shared.spec). Bad input exits
with status 2 and says what to change. Ctrl-C stops at the next step; running the same command
again resumes from the folder's last resume checkpoint.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from shared.settings import get_settings
from shared.errors import SpecError
from shared.spec import JobSpec, resolve_spec
from worker.datasets import DatasetError
from worker.runner import run_job
from worker.sinks import LocalSink
from worker.trainer import Callback, ResumeError, TrainState

USAGE_ERROR = 2
INTERRUPTED = 130

FLAGS: dict[str, type] = {  # spec fields that have their own flag
    "dataset": str,
    "loss": str,
    "model": str,
    "alpha": float,
    "beta": float,
    "epochs": int,
    "seed": int,
    "train_size": int,
    "validation_split": float,
    "batch_size": int,
    "lr": float,
    "augment": str,
    "precision": str,
}


class UsageError(Exception):
    """Input that cannot run as given; the message says what to change."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noisyfit", description="Train on noisy labels without a server.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="run one training job in the foreground")
    train.add_argument("spec", nargs="?", type=Path, help="a JSON job spec (optional: flags alone will do)")
    train.add_argument("--out", required=True, type=Path, help="folder for the artifacts (resumes if it holds a run)")
    for name, kind in FLAGS.items():
        train.add_argument("--" + name.replace("_", "-"), type=kind)
    train.add_argument("--noise", metavar="TYPE[:RATE]", help="e.g. none, symmetric:0.6, asymmetric:0.4")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any spec field (repeatable)")
    train.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    train.add_argument("--data-dir", type=Path, help="data set cache (default: NOISYFIT_DATA_DIR)")
    train.add_argument("--download", action="store_true", help="download a missing data set")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage and the problem (status 2)
        return int(exit.code or 0)
    try:
        spec = resolved_spec(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    data_dir = args.data_dir or get_settings().data_dir
    progress = Progress()
    previous = signal.signal(signal.SIGINT, progress.interrupt)
    try:
        result = run_job(spec, LocalSink(args.out), data_dir, args.download, [progress], args.device)
    except ResumeError as error:
        print(f"error: {error}; choose another --out", file=sys.stderr)
        return USAGE_ERROR
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    if result["status"] == "stopped":
        print(f"stopped after {result['epochs_completed']} epochs; run the same command again to resume")
        return INTERRUPTED
    print(
        f"final test accuracy {result['final_test_accuracy']:.4f}, best {result['best_test_accuracy']:.4f}; "
        f"artifacts in {args.out}"
    )
    return 0


def resolved_spec(args: argparse.Namespace) -> dict[str, Any]:
    raw = read_spec_file(args.spec) if args.spec else {}
    for name in FLAGS:
        if getattr(args, name) is not None:
            raw[name] = getattr(args, name)
    if args.noise is not None:
        raw["noise"] = parse_noise(args.noise)
    for assignment in args.set:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {assignment!r}")
        set_path(raw, key, parse_value(value))
    try:
        return resolve_spec(JobSpec.model_validate(raw))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in error.errors())
        raise UsageError(problems) from None
    except SpecError as error:
        raise UsageError(f"{error.field}: {error.message}") from None


def read_spec_file(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read the spec file: {error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{path} must hold a JSON object (a job spec)")
    return spec


def parse_noise(text: str) -> dict[str, Any]:
    kind, _, rate = text.partition(":")
    if not rate:
        return {"type": kind}
    try:
        return {"type": kind, "rate": float(rate)}
    except ValueError:
        raise UsageError(f"--noise takes TYPE[:RATE], e.g. symmetric:0.6; got {text!r}") from None


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(spec: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        spec = spec.setdefault(key, {})
        if not isinstance(spec, dict):
            raise UsageError(f"--set {dotted}: {key} is not an object")
    spec[last] = value


class Progress(Callback):
    """A tqdm bar per epoch; the first Ctrl-C asks the loop to stop at the next step."""

    log_every = 1

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.stop_requested = False

    def on_step(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if self.bar is None:
            epochs = state.spec.epochs
            self.bar = tqdm(total=metrics["batches"], desc=f"epoch {metrics['epoch']}/{epochs}", unit="batch")
        self.bar.update(metrics["batch"] - self.bar.n)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}")

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        summary = f"loss {metrics['train_loss']:.4f}  train {metrics['train_acc']:.4f}  test {metrics['test_acc']:.4f}"
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.set_postfix_str(summary)
            self.close()
        else:
            print(f"epoch {metrics['epoch']}/{state.spec.epochs}: {summary}")

    def should_stop(self) -> bool:
        return self.stop_requested

    def interrupt(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    sys.exit(main())
