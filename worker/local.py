"""One job in the foreground, without any server: the engine behind `noisyfit train`.

`train` resolves a raw spec against the paper's presets (as the API does), runs it into a
local folder with the artifacts a worker stores, and hands the caller the same `step` and
`epoch` events the service streams. The first Ctrl-C stops at the next step; training the same
spec into the same folder again resumes from its last resume checkpoint.
"""

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.errors import SpecError
from shared.settings import get_settings
from shared.spec import JobSpec, resolve_spec
from worker.runner import run_job
from worker.sinks import LocalSink
from shared.errors import DatasetUnavailable, ResumeMismatch
from worker.trainer import Callback, TrainState

Event = dict[str, Any]


class LocalRunError(Exception):
    """The job cannot run as asked; the message says what to change."""


def train(
    raw_spec: dict[str, Any],
    out: Path,
    *,
    device: str | None = None,
    data_dir: Path | None = None,
    download: bool = False,
    on_event: Callable[[Event], None] = lambda event: None,
    step_every: int = 0,
) -> dict[str, Any]:
    """Run `raw_spec` into the folder `out`; returns result.json's content, or
    {"status": "stopped", "epochs_completed": N} after a Ctrl-C.

    `on_event` gets an `epoch` event after each epoch, a `fold` event after each epoch of a
    cross-fitting model (cross_fit_folds) and, every `step_every` optimizer steps (0: never), a
    `step` event."""
    try:
        spec = resolve_spec(JobSpec.parse(raw_spec))
    except SpecError as error:
        raise LocalRunError(f"{error.field}: {error.message}") from None
    events = Events(on_event, step_every)
    previous = signal.signal(signal.SIGINT, events.interrupt)
    try:
        return run_job(spec, LocalSink(out), data_dir or get_settings().data_dir, download, [events], device)
    except DatasetUnavailable as error:
        raise LocalRunError(str(error)) from None
    except ResumeMismatch as error:
        raise LocalRunError(f"{out} holds a run of another spec: {error}; choose another folder") from None
    finally:
        signal.signal(signal.SIGINT, previous)


class Events(Callback):
    """The trainer's progress as the service's metric events; Ctrl-C asks it to stop, twice aborts."""

    def __init__(self, on_event: Callable[[Event], None], step_every: int):
        self.on_event = on_event
        self.log_every = step_every
        self.stop_requested = False

    def on_step(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.on_event({"type": "step", **metrics, "epochs": state.spec.epochs})

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.on_event({"type": "epoch", **metrics, "epochs": state.spec.epochs})

    def on_fold_epoch_end(self, fold: int, folds: int, state: TrainState, metrics: dict[str, Any]) -> None:
        self.on_event({"type": "fold", **metrics, "fold": fold, "folds": folds, "epochs": state.spec.epochs})

    def should_stop(self) -> bool:
        return self.stop_requested

    def interrupt(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
