"""The training task: one queued job, trained on this worker's device, its state in the database.

    start_attempt ──> heartbeat thread renews the lease ──> run_job(callbacks) ──> finish

The task owns the job only while its lease lives (shared.jobs): a duplicate delivery is
refused by start_attempt, and a job whose worker died is requeued by the API's reaper once the
lease lapses, then resumes from its resume.pt here. Callbacks stream `step` and `epoch` events,
record progress, and stop training at the next step when the job is cancelled or its lease is
lost. The `status` and `done` events come from shared.jobs with each state change.
"""

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from shared import jobs
from shared.dataset_service import fetch_dataset
from shared.db import get_engine
from shared.models import Job, JobStatus
from shared.settings import Settings, get_settings
from shared.spec import ResolvedSpec
from shared.store import ObjectMissing, StoreUnavailable, get_store
from shared.stream import MetricsStream, StreamUnavailable, get_stream
from worker.datasets import UPLOADED_PREFIX, DatasetError, uploaded_path
from worker.runner import run_job
from worker.sinks import ObjectStoreSink
from worker.trainer import Callback, ResumeError, TrainState

log = logging.getLogger(__name__)

CANCEL_CHECK_S = 0.5  # the database is asked whether the job was cancelled at most this often
STEP_EVENT_S = 1.0  # at most one `step` event this often
STEP_EVERY = 5  # optimizer steps between looks at the step-event clock (each costs a device sync)

# The service failed, not the job: the task gives the job back (its lease lapses) to be retried.
SERVICE_ERRORS = (StoreUnavailable, OperationalError)

# Result fields copied into the job record; the whole result is result.json.
SUMMARY = ("final_test_accuracy", "best_test_accuracy", "epochs_completed", "resumed_from_epoch",
           "noise_rate_realised", "num_corrupted", "mislabel_detection")


def train_job(job_id: str) -> None:
    """The body of the Celery task "noisyfit.train"."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    with Session(engine) as session:
        if not jobs.start_attempt(session, job_id, worker_id, settings):
            log.info("job %s: not taken (finished, cancelled, or held by a live worker)", job_id)
            return
        job = session.get(Job, job_id)
        spec, attempt = ResolvedSpec.model_validate(job.spec), job.attempts
    log.info("job %s: attempt %d as %s", job_id, attempt, worker_id)
    control = JobControl(job_id, worker_id, settings, engine, get_stream(settings))
    with Heartbeat(control, settings.heartbeat_s):
        try:
            status, fields = _train(job_id, spec, settings, control)
        except SERVICE_ERRORS as exc:
            if attempt < settings.max_attempts:
                raise  # given back: retried with backoff, resuming from resume.pt
            status, fields = JobStatus.failed, {"error": service_failure(exc, attempt)}
    if status is None:
        log.warning("job %s: lost its lease to another worker; stopped without finishing it", job_id)
        return
    with Session(engine) as session:
        finished = jobs.finish(session, job_id, worker_id, status, settings, **fields)
    log.info("job %s: %s", job_id, status if finished else f"{status}, but another worker holds it now")


def _train(job_id: str, spec: ResolvedSpec, settings: Settings,
           control: "JobControl") -> tuple[JobStatus | None, dict[str, Any]]:
    """Run the job; (final status, finish fields), or (None, {}) when the lease was lost."""
    sink = ObjectStoreSink(get_store(settings), job_id)
    try:
        fetch_upload(spec.dataset, settings)
        result = run_job(spec, sink, settings.data_dir, settings.allow_download, [control])
    except SERVICE_ERRORS:
        raise
    except Exception as exc:
        log.exception("job %s failed", job_id)
        return JobStatus.failed, {"error": failure(exc)}
    if result["status"] == "stopped":
        if control.lost.is_set():
            return None, {}
        return JobStatus.cancelled, {}
    return JobStatus.succeeded, {"result": {k: result[k] for k in SUMMARY if k in result}}


def fetch_upload(dataset: str, settings: Settings) -> None:
    """A user's uploaded data set (ds_...) comes from the object store into data_dir first."""
    if not dataset.startswith(UPLOADED_PREFIX):
        return
    try:
        fetch_dataset(get_store(settings), dataset, uploaded_path(dataset, settings.data_dir))
    except ObjectMissing as exc:
        raise DatasetError(f"uploaded data set {dataset} is no longer in the object store; upload it again") from exc


# What failed, as the job's error: a code and what to change. Anything else is "training_failed".
FAILURES: dict[type[Exception], tuple[str, Callable[[Exception], str]]] = {
    DatasetError: ("dataset_unavailable", str),
    ResumeError: ("resume_mismatch", lambda e: f"{e}; submit the spec as a new job"),
    torch.OutOfMemoryError: ("out_of_memory", lambda e: "the device ran out of memory; "
                             "try a smaller batch_size or eval_batch_size, or a smaller model"),
}


def failure(exc: Exception) -> dict[str, str]:
    for kind, (code, message) in FAILURES.items():
        if isinstance(exc, kind):
            return {"code": code, "message": message(exc)}
    return {"code": "training_failed", "message": f"training stopped with {type(exc).__name__}: {exc}"}


def service_failure(exc: Exception, attempts: int) -> dict[str, str]:
    """The error of a job failed because a service stayed down through its last attempt."""
    part, code = ("object store", "store_unavailable") if isinstance(exc, StoreUnavailable) else \
        ("database", "database_unavailable")
    return {"code": code, "message": f"the {part} could not be reached in any of {attempts} attempts ({exc}); "
                                     "submit the job again once it is back (GET /readyz tells)"}


class JobControl(Callback):
    """The job's link to the service while it trains: events, progress, cancellation, lease."""

    log_every = STEP_EVERY

    def __init__(self, job_id: str, worker_id: str, settings: Settings, engine: Engine, stream: MetricsStream):
        self.job_id, self.worker_id, self.settings = job_id, worker_id, settings
        self.engine, self.stream = engine, stream
        self.lost = threading.Event()  # the lease went to another worker
        self.cancelled = False
        self._cancel_checked = 0.0
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
            self.lost.set()

    def should_stop(self) -> bool:
        if self.lost.is_set() or self.cancelled:
            return True
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CHECK_S:
            self._cancel_checked = now
            try:
                with Session(self.engine) as session:
                    self.cancelled = jobs.cancel_requested(session, self.job_id)
            except Exception:
                log.exception("job %s: could not ask whether it was cancelled", self.job_id)
        return self.cancelled

    def publish(self, event: dict[str, Any]) -> None:
        try:
            self.stream.publish(self.job_id, event)
        except StreamUnavailable:
            log.warning("job %s: the metrics stream is down; %s event dropped", self.job_id, event["type"])

    def renew(self) -> None:
        """One heartbeat: extend the lease, or note that it is lost."""
        try:
            with Session(self.engine) as session:
                if not jobs.renew_lease(session, self.job_id, self.worker_id, self.settings):
                    self.lost.set()
        except Exception:
            log.exception("job %s: could not renew its lease", self.job_id)


class Heartbeat:
    """A daemon thread renewing the job's lease every `interval_s`, even inside a long epoch."""

    def __init__(self, control: JobControl, interval_s: float):
        self.control, self.interval_s = control, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{control.job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and not self.control.lost.is_set():
            self.control.renew()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
