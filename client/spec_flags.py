"""A job spec from the command line, read the same way by `noisyfit submit`, `noisyfit sweep
submit` and `noisyfit train`: a spec file, then the per-field flags, `--noise TYPE:RATE`, then
`--set KEY=VALUE` (dotted for nested fields: `noise.rate=0.4`, `loss_params.q=0.7`); later wins.

The result is the raw spec as a user writes it; the API (or, for `train`, the engine) validates
and resolves it against the paper's presets (shared.spec).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from shared.catalog import AUGMENTATIONS, DATASETS, MODELS, PRECISIONS
from shared.sweeps import set_path

Json = dict[str, Any]

FIELD_FLAGS: dict[str, tuple[type, str]] = {  # spec fields that have their own flag
    "dataset": (str, f"{', '.join(DATASETS)} or an uploaded data set's id"),
    "loss": (str, "e.g. ce, gce, nce+rce"),
    "model": (str, f"{', '.join(MODELS)} (default: the data set's preset)"),
    "alpha": (float, "weight of the (first) loss term"),
    "beta": (float, "weight of the second term of a combination"),
    "epochs": (int, "default: the data set's preset"),
    "seed": (int, "default: 0"),
    "train_size": (int, "a seeded, class-balanced subset of the training set"),
    "validation_split": (float, "share of the training set held out with its noisy labels"),
    "batch_size": (int, ""),
    "lr": (float, "learning rate"),
    "augment": (str, ", ".join(AUGMENTATIONS)),
    "precision": (str, ", ".join(PRECISIONS)),
    "cross_fit_folds": (int, "label report from K extra models, each blind to one fold (0: off; 2-10)"),
    "deterministic": (bool, "CUDA: deterministic kernels and algorithms, the same weights on every run (slower)"),
}


class UsageError(Exception):
    """The command line or a file it names cannot be used as given."""


def add_spec_options(parser: argparse.ArgumentParser) -> None:
    for name, (kind, help) in FIELD_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:  # --deterministic / --no-deterministic; unset leaves the spec's value
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help or None)
        else:
            parser.add_argument(flag, type=kind, help=help or None)
    parser.add_argument(
        "--noise", metavar="TYPE:RATE", help="none, symmetric:0.6, asymmetric:0.4, pairflip:0.2, transition:MATRIX.json"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any spec field, dotted for nested ones, e.g. loss_params.q=0.7 (repeatable)",
    )  # fmt: skip


def spec_from_args(args: argparse.Namespace, spec: Json | None = None) -> Json:
    """`spec` (a file's contents) with the flags applied; the flags win."""
    spec = dict(spec or {})
    for name in FIELD_FLAGS:
        value = getattr(args, name)
        if value is not None:
            spec[name] = value
    if args.noise is not None:
        spec["noise"] = parse_noise(args.noise)
    for assignment in args.set:
        key, value = split_assignment(assignment, "--set")
        set_path(spec, key, parse_value(value))
    return spec


def parse_noise(text: str) -> Json:
    kind, _, value = text.partition(":")
    if kind == "none":
        return {"type": "none", "rate": 0.0}
    if kind == "transition":
        if not value:
            raise UsageError("--noise transition:FILE needs a JSON file holding the K×K matrix")
        return {"type": "transition", "matrix": read_json(value)}
    try:
        return {"type": kind, "rate": float(value)}
    except ValueError:
        raise UsageError(f"--noise {text!r}: write TYPE:RATE, e.g. symmetric:0.4 (or none, or transition:FILE)") from None


def parse_value(text: str) -> Any:
    """JSON where it parses (numbers, true, null, lists), the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_assignment(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{flag} {text!r}: write KEY=VALUE")
    return key.strip(), value


def read_json(path: str) -> Any:
    """A JSON file's contents; '-' reads stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None


def read_object(path: str, holds: str) -> Json:
    """A JSON file that must hold an object (`holds` says what it should be)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object: {holds}")
    return data
