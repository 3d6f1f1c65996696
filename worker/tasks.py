"""The training of the jobs that a worker took (worker.dispatch), in a process of their own.

    read the job ──> run_job(callbacks) ──> finish ──> exit (code: worker.dispatch)

Jobs of one sweep that the worker took together (shared.jobs.take_siblings) train together
(worker.runner.run_jobs_fused), each with its own callbacks, artifacts, and end: one that is
cancelled, times out or fails leaves the group while the others go on.

The worker's long-lived process holds each job's lease while this process trains. Callbacks
stream `step` and `epoch` events (and `fold` events of cross-fitting models), record progress,
and stop training at the next step when
the job is cancelled, its lease went to another worker, or it ran past its time limit
(shared.scheduling: failed with code time_limit). A job whose worker died is requeued
by the API's reaper once the lease lapses, then resumes from its resume.pt here. The `status`
and `done` events come from shared.jobs with each state change.
"""

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import torch
from sqlalchemy import Engine
from sqlmodel import Session

from shared import jobs, scheduling
from shared.dataset_service import fetch_dataset
from shared.db import get_engine
from shared.models import Job, JobStatus, utcnow
from shared.settings import Settings, get_settings
from shared.spec import ResolvedSpec
from shared.errors import (
    DatabaseUnavailable,
    DatasetUnavailable,
    JobFailure,
    ObjectMissing,
    OutOfMemory,
    ResumeMismatch,
    StoreUnavailable,
    StreamUnavailable,
)
from shared.store import get_store
from shared.versions import VersionArrays
from shared.stream import MetricsStream, get_stream
from worker.datasets import UPLOADED_PREFIX, uploaded_path
from worker.dispatch import GIVE_BACK, SERVICE_ERRORS
from worker.resident import Lender, borrow
from worker.runner import run_job, run_jobs_fused
from worker.sinks import ObjectStoreSink
from worker.trainer import Callback, TrainState

log = logging.getLogger(__name__)

CHECK_S = 0.5  # the database is asked whether the job was cancelled or its lease lost at most this often
STEP_EVENT_S = 1.0  # at most one `step` event this often
STEP_EVERY = 5  # optimizer steps between looks at the step-event clock (each costs a device sync)

# Result fields copied into the job record; the whole result is result.json.
SUMMARY = ("final_test_accuracy", "best_test_accuracy", "final_val_accuracy", "best_val_epoch",
           "test_accuracy_at_best_val", "epochs_completed", "resumed_from_epoch", "noise_rate_realised",
           "num_corrupted", "mislabel_detection", "label_quality")


@dataclass
class TakenJob:
    """A job this process trains, and its link to the service."""

    job_id: str
    spec: ResolvedSpec
    attempt: int
    control: "JobControl"


def run_taken_job(job_id: str, worker_id: str, cores: Sequence[int] = (),
                  report_peak: Callable[[int], None] | None = None, lender: Lender | None = None) -> int:
    """Train the job `worker_id` took and record how it ended; the process's exit code."""
    return run_taken_jobs([job_id], worker_id, cores, report_peak, lender)


def run_taken_jobs(job_ids: Sequence[str], worker_id: str, cores: Sequence[int] = (),
                   report_peak: Callable[[int], None] | None = None, lender: Lender | None = None) -> int:
    """Train the jobs `worker_id` took, together when there are several (worker.fused), and
    record how each ended; the process's exit code: GIVE_BACK when any job was given back. On
    `cores` when given (their slot of a packing CPU worker); the device memory's peak after the
    first epoch goes to `report_peak` (a GPU worker admits jobs of the same shape by it); the
    images of a built-in data set come from the worker's data holder when `lender` says where it
    is (worker.resident)."""
    pin(cores)
    settings = get_settings()
    engine = get_engine(settings.database_url)
    try:
        taken = [_read(job_id, worker_id, settings, engine) for job_id in job_ids]
    except SERVICE_ERRORS as exc:
        log.warning("jobs %s: could not be read (%s); given back to be retried", ", ".join(job_ids), exc)
        return GIVE_BACK
    given_back = False
    for job, outcome in zip(taken, _train(taken, settings, _peak_reporter(report_peak), lender)):
        try:
            given_back |= _record(job, outcome, settings, engine)
        except SERVICE_ERRORS as exc:
            log.warning("job %s: attempt %d could not record its end (%s); given back to be retried",
                        job.job_id, job.attempt, exc)
            given_back = True
    return GIVE_BACK if given_back else 0


def _read(job_id: str, worker_id: str, settings: Settings, engine: Engine) -> TakenJob:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        deadline, _ = scheduling.deadline(job, settings)
        spec, attempt = ResolvedSpec.model_validate(job.spec), job.attempts
    return TakenJob(job_id, spec, attempt, JobControl(job_id, worker_id, settings, engine, get_stream(settings), deadline))


def _train(taken: list[TakenJob], settings: Settings, others: Sequence[Callback] = (),
           lender: Lender | None = None) -> list[dict[str, Any] | Exception]:
    """Each job's result.json content, or the exception that ended it. `others`: callbacks of
    the process (the memory peak's), given to every job."""
    store = get_store(settings)
    specs, sinks = [job.spec for job in taken], [ObjectStoreSink(store, job.job_id) for job in taken]
    try:
        fetch_upload(specs[0].dataset, settings)  # one data set: only jobs of one shape train together
        images = borrow(lender, specs[0].dataset, settings.data_dir)
        if images is not None:
            log.info("jobs %s: images of %s lent by the data holder", ", ".join(j.job_id for j in taken), images.name)
        if len(taken) == 1:
            return [run_job(specs[0], sinks[0], settings.data_dir, settings.allow_download,
                            [taken[0].control, *others], images=images)]
        log.info("jobs %s: training together", ", ".join(job.job_id for job in taken))
        return run_jobs_fused(specs, sinks, settings.data_dir, settings.allow_download,
                              [[job.control, *others] for job in taken], images=images)
    except Exception as exc:
        return [exc for _ in taken]


def _record(job: TakenJob, outcome: dict[str, Any] | Exception, settings: Settings, engine: Engine) -> bool:
    """Finish the job as its outcome says; True when it is given back instead (a service was
    down and attempts are left: it resumes from its resume.pt once requeued)."""
    if isinstance(outcome, SERVICE_ERRORS):
        if job.attempt < settings.max_attempts:
            log.warning("job %s: attempt %d gave up on a service (%s); given back to be retried",
                        job.job_id, job.attempt, outcome)
            return True
        status, fields = JobStatus.failed, {"error": service_failure(outcome, job.attempt)}
    elif isinstance(outcome, Exception):
        log.error("job %s failed", job.job_id, exc_info=outcome)
        status, fields = JobStatus.failed, {"error": failure(outcome)}
    else:
        status, fields = _ending(job, outcome, settings)
    if status is None:
        log.warning("job %s: lost its lease to another worker; stopped without finishing it", job.job_id)
        return False
    with Session(engine) as session:
        finished = jobs.finish(session, job.job_id, job.control.worker_id, status, settings, **fields)
    log.info("job %s: %s", job.job_id, status if finished else f"{status}, but another worker holds it now")
    return False


def _ending(job: TakenJob, result: dict[str, Any], settings: Settings) -> tuple[JobStatus | None, dict[str, Any]]:
    """The final status of a job whose training returned, and its finish fields; (None, {})
    when the lease was lost."""
    control = job.control
    if result["status"] == "stopped":
        if control.lost:
            return None, {}
        if control.timed_out:
            limit = scheduling.limit_s(job.spec.time_limit_s, settings)
            return JobStatus.failed, {"error": scheduling.time_limit_error(limit, settings)}
        return JobStatus.cancelled, {}
    return JobStatus.succeeded, {"result": {k: result[k] for k in SUMMARY if k in result}}


def pin(cores: Sequence[int]) -> None:
    """Run on these cores only, with as many torch threads (where the OS can pin: Linux)."""
    if not cores:
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))


def free_device_memory() -> int | None:
    """The CUDA device's free bytes now (every process's use counted), or None without one."""
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None


class PeakMemory(Callback):
    """After the first epoch of this process, the peak of device memory its allocator held
    (max_memory_reserved: what other processes cannot have, at least max_memory_allocated)."""

    def __init__(self, report: Callable[[int], None]):
        self.report, self.sent = report, False

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if self.sent:
            return
        self.sent = True
        try:
            self.report(torch.cuda.max_memory_reserved())
        except OSError:  # the worker is gone; this process dies with it
            log.warning("could not report the device memory's peak to the worker")


def _peak_reporter(report: Callable[[int], None] | None) -> list[Callback]:
    return [PeakMemory(report)] if report is not None and torch.cuda.is_available() else []


def fetch_upload(dataset: str, settings: Settings) -> None:
    """A user's data set (ds_...) comes from the object store into data_dir first; a version's
    root too, when that is an upload (shared.versions)."""
    if not dataset.startswith(UPLOADED_PREFIX):
        return
    try:
        path = fetch_dataset(get_store(settings), dataset, uploaded_path(dataset, settings.data_dir))
    except ObjectMissing as exc:
        raise DatasetUnavailable(f"uploaded data set {dataset} is no longer in the object store; upload it again") from exc
    version = VersionArrays.read(path)
    if version is not None:
        fetch_upload(version.root, settings)


def failure(exc: Exception) -> dict[str, str]:
    """What failed, as the job's error: a JobFailure's code and message (shared/errors.py)."""
    if isinstance(exc, torch.OutOfMemoryError):
        exc = OutOfMemory("the device ran out of memory; try a smaller batch_size or eval_batch_size, or a smaller model")
    elif isinstance(exc, ResumeMismatch):
        exc = ResumeMismatch(f"{exc.message}; submit the spec as a new job")
    elif not isinstance(exc, JobFailure):
        exc = JobFailure(f"training stopped with {type(exc).__name__}: {exc}")
    return {"code": exc.code, "message": exc.message}


def service_failure(exc: Exception, attempts: int) -> dict[str, str]:
    """The error of a job failed because a service stayed down through its last attempt."""
    part, code = ("object store", StoreUnavailable.code) if isinstance(exc, StoreUnavailable) else \
        ("database", DatabaseUnavailable.code)
    return {"code": code, "message": f"the {part} could not be reached in any of {attempts} attempts ({exc}); "
                                     "submit the job again once it is back (GET /readyz tells)"}


class JobControl(Callback):
    """The job's link to the service while it trains: events, progress, cancellation, lease."""

    log_every = STEP_EVERY

    def __init__(self, job_id: str, worker_id: str, settings: Settings, engine: Engine, stream: MetricsStream,
                 deadline: datetime):
        self.job_id, self.worker_id, self.settings = job_id, worker_id, settings
        self.engine, self.stream, self.deadline = engine, stream, deadline
        self.lost = False  # the lease went to another worker
        self.cancelled = False
        self.timed_out = False  # past the job's time limit
        self._checked = 0.0
        self._step_published = 0.0

    def on_step(self, state: TrainState, metrics: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._step_published >= STEP_EVENT_S:
            self._step_published = now
            self.publish({"type": "step", **metrics, "epochs": state.spec.epochs})

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self.publish({"type": "epoch", **metrics, "epochs": state.spec.epochs})
        try:
            with Session(self.engine) as session:
                held = jobs.update_progress(session, self.job_id, self.worker_id, state.epoch,
                                            state.spec.epochs, metrics)
        except Exception:
            log.exception("job %s: could not record the progress of epoch %d", self.job_id, state.epoch)
            return
        if not held:
            self.lost = True

    def on_fold_epoch_end(self, fold: int, folds: int, state: TrainState, metrics: dict[str, Any]) -> None:
        """A cross-fitting model's epoch: a `fold` event only (the job's progress is its own epochs)."""
        self.publish({"type": "fold", **metrics, "fold": fold, "folds": folds, "epochs": state.spec.epochs})

    def should_stop(self) -> bool:
        self.timed_out = self.timed_out or utcnow() >= self.deadline
        if self.lost or self.cancelled or self.timed_out:
            return True
        now = time.monotonic()
        if now - self._checked >= CHECK_S:
            self._checked = now
            try:
                with Session(self.engine) as session:
                    standing = jobs.standing(session, self.job_id, self.worker_id)
            except Exception:
                log.exception("job %s: could not ask whether it was cancelled", self.job_id)
                return False
            self.cancelled, self.lost = standing.cancel_requested, not standing.held
        return self.cancelled or self.lost

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.stream.publish(self.job_id, event)
        except StreamUnavailable:
            log.warning("job %s: the metrics stream is down; %s event dropped", self.job_id, event["type"])
