"""What a worker does with a train message, in its long-lived process (the Celery task body).

    message ──take_next──> nothing to take: dropped at the cost of a few queries, no process started
                 │          (its job cancelled, finished, a duplicate, or held by a live lease,
                 │           and no other job queued)
                 └──taken──> a training process for the job taken (worker.tasks.run_taken_job),
                             forked from a server that imported torch once; a thread of
                             this process renews the job's lease until the training exits

The long-lived process never imports torch, so it starts in about a second and drains dead
messages in milliseconds. A training process trains one job and exits, handing back all its
(GPU) memory. Its exit code says how it ended: 0 (the job is finished, or it stopped because
its lease went to another worker), GIVE_BACK (a service was down and attempts are left: the
task is retried with backoff and resumes from resume.pt), anything else (killed, e.g. out of
memory): its lease lapses and the API's reaper requeues the job.

Each taken job has its own lease loop. A job of a sweep brings along up to
settings.fuse_max_runs - 1 queued jobs of its sweep that can train with it (shared.fusion),
each taken under its own lease, into one training process that trains them together
(worker.fused); NOISYFIT_FUSE=false trains every job alone. Running several training
processes on one worker is a matter of the pool's concurrency.
"""

import ctypes
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import secrets
import signal
import socket
import sys
import threading
from contextlib import ExitStack
from datetime import datetime, timedelta
from multiprocessing.process import BaseProcess

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from shared import jobs, scheduling
from shared.db import get_engine
from shared.errors import StoreUnavailable
from shared.models import Job, JobStatus, utcnow
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The service failed, not the job: the job is given back to be retried.
SERVICE_ERRORS = (StoreUnavailable, OperationalError)
GIVE_BACK = 75  # a training process's exit code: a service failed and attempts are left (EX_TEMPFAIL)
TRAINING_MODULE = "worker.tasks"
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"  # as the Celery worker logs
PR_SET_PDEATHSIG = 1

_processes = multiprocessing.get_context("forkserver")


class GivenBack(Exception):
    """A training process gave its job back (a service was down); the task is retried."""


def start_process_server() -> None:
    """Start the fork server that training processes come from, importing torch and the engine
    once, at worker start, so that a taken job's process starts in milliseconds."""
    _processes.set_forkserver_preload([TRAINING_MODULE])
    multiprocessing.forkserver.ensure_running()


def dispatch(job_id: str) -> None:
    """The body of the Celery task "noisyfit.train": a "work available" signal, which takes the
    queued job whose turn it is (shared.scheduling), its own or another's."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    with Session(engine) as session:
        taken = jobs.take_next(session, job_id, worker_id, settings)
        if taken is None:
            log.info("job %s: not taken (finished, cancelled, or held by a live worker), and no other job waits",
                     job_id)
            return
        if taken != job_id:
            log.info("job %s: its message took job %s, whose turn it was", job_id, taken)
        group = [taken, *jobs.take_siblings(session, taken, worker_id, settings)]
        if len(group) > 1:
            log.info("job %s: took %d queued jobs of its sweep to train with it: %s", taken, len(group) - 1,
                     ", ".join(group[1:]))
        started = [session.get(Job, member) for member in group]
        job_id, attempt = taken, started[0].attempts
        deadlines = [scheduling.deadline(job, settings) for job in started]
    process = _processes.Process(target=_train, args=(group, worker_id, logging.getLogger().getEffectiveLevel()),
                                 name=f"train-{job_id}")
    with ExitStack() as leases:
        for member in group:
            leases.enter_context(Lease(member, worker_id, settings, engine))
        process.start()
        log.info("job %s: attempt %d as %s, training in process %d", job_id, attempt, worker_id, process.pid)
        time_up = max(time for time, _ in deadlines)  # each job stops itself at its own
        if not _join_by(process, time_up + timedelta(seconds=settings.time_limit_grace_s)):
            for member, (_, limit) in zip(group, deadlines):
                _fail_overrun(member, worker_id, limit, settings, engine)
            return
    if process.exitcode == GIVE_BACK:
        raise GivenBack(f"job {job_id}: a service could not be reached; retried later, resuming from its checkpoint")
    if process.exitcode != 0:
        for member in group:
            _report_crash(process.exitcode, member, worker_id, engine)


def _join_by(process: BaseProcess, moment: datetime) -> bool:
    """Wait for the training process until `moment`; past it, kill it. False when it was killed."""
    process.join(max(0.0, (moment - utcnow()).total_seconds()))
    if process.exitcode is not None:
        return True
    process.kill()
    process.join()
    return False


def _fail_overrun(job_id: str, worker_id: str, limit: int, settings: Settings, engine: Engine) -> None:
    """The training process outlived its job's time limit by the grace period (stuck outside a
    step, where it checks its limit itself): it was killed, and the job fails as over time
    (unless it had finished: a job trained with others may end before them)."""
    with Session(engine) as session:
        failed = jobs.finish(session, job_id, worker_id, JobStatus.failed, settings,
                             error=scheduling.time_limit_error(limit, settings))
    if failed:
        log.error("job %s: its training process ran %.0f s past the time limit of %d s and was killed",
                  job_id, settings.time_limit_grace_s, limit)


class Lease:
    """A thread renewing the job's lease every heartbeat_s, from the moment it was taken (the
    training process may take a while to start) until its training process has ended. A lost
    lease is not renewed again: the training process sees it at its next check and stops."""

    def __init__(self, job_id: str, worker_id: str, settings: Settings, engine: Engine):
        self.job_id, self.worker_id, self.settings, self.engine = job_id, worker_id, settings, engine
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s) and self._renew():
            pass

    def _renew(self) -> bool:
        try:
            with Session(self.engine) as session:
                if jobs.renew_lease(session, self.job_id, self.worker_id, self.settings):
                    return True
        except Exception:
            log.exception("job %s: could not renew its lease; trying again", self.job_id)
            return True
        log.info("job %s: no longer held here (it finished, or its lease went to another worker)", self.job_id)
        return False

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _report_crash(exitcode: int | None, job_id: str, worker_id: str, engine: Engine) -> None:
    """A training process that ended without saying how (killed, out of memory, crashed)."""
    ending = f"signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0 else \
        f"exit code {exitcode}"
    with Session(engine) as session:
        held = jobs.standing(session, job_id, worker_id).held
    if held:
        log.error("job %s: its training process ended with %s; the job is requeued once its lease lapses",
                  job_id, ending)
    else:
        log.warning("job %s: its training process ended with %s, when this worker held the job no longer",
                    job_id, ending)


def _train(job_ids: list[str], worker_id: str, log_level: int) -> None:
    """The training process: dies with its parent, logs as the worker does, trains, exits."""
    _die_with_parent()
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    from worker.tasks import run_taken_jobs  # torch: only here (the fork server imported it already)

    sys.exit(run_taken_jobs(job_ids, worker_id))


def _die_with_parent() -> None:
    """On Linux, SIGKILL this process when its parent (the fork server, which exits with the
    worker) dies: no training goes on once nobody renews the job's lease."""
    if sys.platform != "linux":
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call
        os._exit(1)
