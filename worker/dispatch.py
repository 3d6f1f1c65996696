"""What a worker does with a train message, in its long-lived process (the Celery task body).

    message ──take_next──> nothing to take: dropped at the cost of a few queries, no process started
                 │          (its job cancelled, finished, a duplicate, or held by a live lease,
                 │           and no other job queued)
                 ├──no room (worker.packing: the job whose turn it is does not fit beside the running
                 │           ones): waits for a job of this worker to end or report its memory, then
                 │           looks again; after settings.admission_wait_s the message goes back to the queue
                 └──taken──> (with the queued jobs of its sweep that train together with it, when
                             they fit: shared.jobs.take_siblings) a training process for the jobs
                             taken (worker.tasks.run_taken_jobs), forked from a server that imported
                             torch once, in the job's slot (its own cores on a CPU worker); a thread
                             of this process renews each job's lease until the training exits

The long-lived process never imports torch, so it starts in about a second and drains dead
messages in milliseconds. A training process trains one job and exits, handing back all its
(GPU) memory. Its exit code says how it ended: 0 (the job is finished, or it stopped because
its lease went to another worker), GIVE_BACK (a service was down and attempts are left: the
task is retried with backoff and resumes from resume.pt), anything else (killed, e.g. out of
memory): its lease lapses and the API's reaper requeues the job. On a GPU it reports the device
memory its first epoch used at its peak through a pipe: the worker admits the next jobs of the
same shape by that figure (worker.device_memory). On a GPU worker, a data holder started at the
first job (worker.resident) lends the built-in data sets' images on the device to every training
process; each is started with the holder's address (data_lender).

Each taken job has its own lease loop and time limit. A job of a sweep brings along up to
settings.fuse_max_runs - 1 queued jobs of its sweep that can train with it (shared.fusion),
each taken under its own lease, into one training process that trains them together
(worker.fused); NOISYFIT_FUSE=false trains every job alone. Such a group is one slot, one
training process: on a CPU worker its core group; on a GPU worker its need is the sum of its
runs' (one CUDA context), and a sibling joins only while the group still fits beside the
running jobs (worker.packing.admits). The pool runs one thread per slot (worker.app), so packed
slots never share a process, a lease loop or a time limit.
"""

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from contextlib import ExitStack
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from shared import jobs, scheduling
from shared.db import get_engine
from shared.errors import StoreUnavailable
from shared.catalog import DATASETS
from shared.models import DatasetRow, Job, JobStatus, utcnow
from shared.queue import send_train
from shared.settings import Settings, get_settings
from shared.spec import ResolvedSpec
from worker.device_memory import CUDA_CONTEXT_BYTES, MIB, DataShape, MeasuredMemory, job_need
from worker.packing import Admission, NoRoom, Packer, Slot
from worker.resident import Lender, lends, serve, start_holder

log = logging.getLogger(__name__)

# The service failed, not the job: the job is given back to be retried.
SERVICE_ERRORS = (StoreUnavailable, OperationalError)
GIVE_BACK = 75  # a training process's exit code: a service failed and attempts are left (EX_TEMPFAIL)
TRAINING_MODULES = ["worker.tasks", "worker.warm"]  # what the fork server imports once (worker.warm: its warm-up)
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"  # as the Celery worker logs
PR_SET_PDEATHSIG = 1
PROBE_TIMEOUT_S = 60.0

_processes = multiprocessing.get_context("forkserver")
_packer: Packer | None = None
_holder: tuple[BaseProcess, Lender] | None = None  # the worker's data holder (worker.resident), once started
_holder_lock = threading.Lock()
MEASURED = MeasuredMemory()  # what jobs of each shape used on this worker's device


class GivenBack(Exception):
    """A training process gave its job back (a service was down); the task is retried."""


def start_process_server() -> None:
    """Start the fork server that training processes come from, importing torch and the engine
    once, at worker start, and warming up (worker.warm: the data sets in memory), so that a taken
    job's process starts in milliseconds."""
    _processes.set_forkserver_preload(TRAINING_MODULES)
    multiprocessing.forkserver.ensure_running()


def start_packing(settings: Settings) -> Packer:
    """This worker's slots (worker.packing), made once at worker start."""
    global _packer
    _packer = Packer.of(settings, probe_free_memory)
    return _packer


def current_packer() -> Packer:
    return _packer or start_packing(get_settings())


def data_lender(settings: Settings, device: str) -> Lender | None:
    """Where this worker's data holder listens (worker.resident): started at the first job that
    asks, and again when it died. None where data sets do not stay on the device, or when the
    holder does not start (jobs then copy their own images)."""
    global _holder
    if not lends(settings.resident_data, device):
        return None
    with _holder_lock:
        if _holder is not None and not _holder[0].is_alive():
            log.warning("the data holder (process %d) ended with exit code %s; starting another",
                        _holder[0].pid, _holder[0].exitcode)
            _holder = None
        if _holder is None:
            try:
                _holder = start_holder(_processes, device, target=_hold)
            except Exception:
                log.exception("the data holder did not start; jobs copy their own images")
                return None
            log.info("the data holder (process %d) keeps data sets on %s for this worker's jobs", _holder[0].pid,
                     device)
        return _holder[1]


@dataclass(frozen=True)
class Sibling:
    """A queued job of the taken job's sweep, taken to train together with it."""

    job_id: str
    time_up: datetime
    limit: int


@dataclass(frozen=True)
class Taken:
    """A job this worker took, in its slot (with the jobs of its sweep that train with it there)."""

    job_id: str
    attempt: int
    time_up: datetime
    limit: int
    slot: Slot
    sized: tuple[ResolvedSpec, DataShape] | None  # what its memory need was estimated from (a GPU worker)
    siblings: tuple[Sibling, ...] = ()

    @property
    def group(self) -> list[str]:
        """The jobs its training process trains: it, then its siblings."""
        return [self.job_id, *(sibling.job_id for sibling in self.siblings)]

    @property
    def limits(self) -> list[tuple[str, int]]:
        """(job, time limit in seconds) of every job of the group."""
        return [(self.job_id, self.limit), *((sibling.job_id, sibling.limit) for sibling in self.siblings)]


def dispatch(job_id: str) -> None:
    """The body of the Celery task "noisyfit.train": a "work available" signal, which takes the
    queued job whose turn it is (shared.scheduling), its own or another's, once it fits."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    packer = current_packer()
    taken = _take(job_id, worker_id, settings, engine, packer)
    if taken is None:
        return
    try:
        _run(taken, worker_id, settings, engine, packer)
    finally:
        packer.release(taken.slot)


def _take(job_id: str, worker_id: str, settings: Settings, engine: Engine, packer: Packer) -> Taken | None:
    """Take the job whose turn it is once it fits beside this worker's running jobs; None when there
    is nothing to take, or no room came within settings.admission_wait_s (the message is sent again)."""
    give_up = time.monotonic() + settings.admission_wait_s
    while True:
        try:
            with packer.admission() as admission, Session(engine) as session:
                sized: dict[str, tuple[ResolvedSpec, DataShape]] = {}

                def admit(session: Session, job: Job) -> None:
                    admission.check(job.id, _need(session, job, packer, sized))

                taken = jobs.take_next(session, job_id, worker_id, settings, admit)
                if taken is None:
                    log.info("job %s: not taken (finished, cancelled, or held by a live worker), and no other job "
                             "waits", job_id)
                    return None
                if taken != job_id:
                    log.info("job %s: its message took job %s, whose turn it was", job_id, taken)
                job = session.get(Job, taken)
                time_up, limit = scheduling.deadline(job, settings)
                siblings = _take_siblings(session, job, worker_id, settings, admission, packer)
                return Taken(taken, job.attempts, time_up, limit, admission.hold(taken), sized.get(taken), siblings)
        except NoRoom as refused:
            if packer.wait_for_room(refused, give_up - time.monotonic()):
                continue
            log.info("job %s: the next job found no room on this worker in %gs; its message goes back to the queue",
                     job_id, settings.admission_wait_s)
            send_train(job_id, settings)
            return None


def _need(session: Session, job: Job, packer: Packer, sized: dict[str, tuple[ResolvedSpec, DataShape]]) -> int:
    """The device bytes the job needs (0 on a CPU worker, where slots are cores), noting in `sized`
    what it was estimated from. A spec that cannot be read needs nothing here: its training
    process fails it with the reason."""
    if packer.device != "cuda":
        return 0
    try:
        spec = ResolvedSpec.model_validate(job.spec)
        sized[job.id] = spec, _data_shape(session, spec.dataset)
        return job_need(*sized[job.id], MEASURED)
    except (ValidationError, KeyError) as exc:
        log.warning("job %s: its memory cannot be estimated (%s); admitted as needing none", job.id, exc)
        return 0


def _take_siblings(session: Session, job: Job, worker_id: str, settings: Settings, admission: Admission,
                   packer: Packer) -> tuple[Sibling, ...]:
    """The queued jobs of the sweep of `job` (just taken, not yet in its slot) that train together
    with it in its slot (shared.jobs.take_siblings), each taken under its own lease. On a GPU
    worker a sibling joins only while the group still fits (Admission.join): its need is its own
    data and model (the group's process has one CUDA context)."""
    def fits(sibling_id: str, spec: ResolvedSpec) -> bool:
        if packer.device != "cuda":
            return admission.join(job.id, 0)
        try:
            need = job_need(spec, _data_shape(session, spec.dataset), MEASURED) - CUDA_CONTEXT_BYTES
        except KeyError as exc:
            log.warning("job %s: its memory cannot be estimated (%s); it does not join job %s", sibling_id, exc, job.id)
            return False
        return admission.join(job.id, need)

    try:
        group = jobs.take_siblings(session, job.id, worker_id, settings, fits)
    except (ValidationError, OperationalError) as exc:  # its spec unreadable (its process fails it), the database
        session.rollback()
        log.warning("job %s: trains alone: its siblings could not be taken (%s)", job.id, exc)
        return ()  # a sibling taken before the error is requeued once its lease lapses
    if not group:
        return ()
    log.info("job %s: took %d queued jobs of its sweep to train with it: %s", job.id, len(group), ", ".join(group))
    siblings = []
    for sibling_id in group:
        time_up, limit = scheduling.deadline(session.get(Job, sibling_id), settings)
        siblings.append(Sibling(sibling_id, time_up, limit))
    return tuple(siblings)


def _data_shape(session: Session, dataset: str) -> DataShape:
    """A built-in data set's shape from the catalog; a user's (an upload, a version) from its row."""
    if dataset in DATASETS:
        return DataShape.builtin(dataset)
    row = session.get(DatasetRow, dataset)
    if row is None:  # deleted meanwhile: the job fails when it loads it, needing little
        return DataShape(1, 1, 0)
    return DataShape(row.channels, row.size, row.test_samples)


def _run(taken: Taken, worker_id: str, settings: Settings, engine: Engine, packer: Packer) -> None:
    """Train the taken job (and its siblings) in a process of its own, holding each job's lease,
    until it ends or its time is up (the latest of the group's: each job stops itself at its own)."""
    job_id = taken.job_id
    reports, report = _processes.Pipe(duplex=False)
    siblings = tuple(sibling.job_id for sibling in taken.siblings)
    process = _processes.Process(target=_train, name=f"train-{job_id}", args=(
        job_id, worker_id, logging.getLogger().getEffectiveLevel(), taken.slot.cores, report, siblings,
        data_lender(settings, packer.device)))
    time_up = max([taken.time_up, *(sibling.time_up for sibling in taken.siblings)])
    try:
        with ExitStack() as leases:
            for member in taken.group:
                leases.enter_context(Lease(member, worker_id, settings, engine))
            process.start()
            report.close()
            cores = f" on cores {','.join(map(str, taken.slot.cores))}" if taken.slot.cores else ""
            together = f", with {', '.join(siblings)}" if siblings else ""
            log.info("job %s: attempt %d as %s, training in process %d%s%s", job_id, taken.attempt, worker_id,
                     process.pid, cores, together)
            if not _join_by(process, time_up + timedelta(seconds=settings.time_limit_grace_s), reports,
                            lambda peak: _measured(taken, peak, packer)):
                for member, limit in taken.limits:
                    _fail_overrun(member, worker_id, limit, settings, engine)
                return
    finally:
        reports.close()
    if process.exitcode == GIVE_BACK:
        raise GivenBack(f"job {job_id}: a service could not be reached; retried later, resuming from its checkpoint")
    if process.exitcode != 0:
        for member in taken.group:
            _report_crash(process.exitcode, member, worker_id, engine)


def _join_by(process: BaseProcess, moment: datetime, reports: Connection, on_peak: Callable[[int], None]) -> bool:
    """Wait for the training process until `moment`, passing on what it reports; past it, kill it.
    False when it was killed."""
    watched = [process.sentinel, reports]
    while process.exitcode is None:
        remaining = (moment - utcnow()).total_seconds()
        if remaining <= 0:
            process.kill()
            process.join()
            return False
        ready = multiprocessing.connection.wait(watched, remaining)
        if reports in ready:
            try:
                on_peak(int(reports.recv()))
            except (EOFError, OSError, TypeError, ValueError):
                watched.remove(reports)  # the process closed its end (it exits), or sent nonsense
        if process.sentinel in ready:
            process.join()
    return True


def _measured(taken: Taken, peak: int, packer: Packer) -> None:
    """The job's first epoch reached `peak` device bytes: jobs of its shape are admitted by it now.
    A group's peak is that of all its runs together: its slot counts as measured, but no single
    job's need is learnt from it."""
    packer.measured(taken.job_id)
    if taken.siblings:
        log.info("jobs %s: their first epoch together used %d MiB of device memory at its peak (admitted "
                 "needing %d MiB)", ", ".join(taken.group), peak // MIB, taken.slot.need // MIB)
    elif taken.sized is not None:
        model = MEASURED.record(*taken.sized, peak)
        log.info("job %s: its first epoch used %d MiB of device memory at its peak (%d MiB for the model; "
                 "admitted needing %d MiB)", taken.job_id, peak // MIB, model // MIB, taken.slot.need // MIB)


def probe_free_memory() -> int | None:
    """The device's free bytes (torch.cuda.mem_get_info) as a fresh process forked from the fork
    server sees them; None without a CUDA device, or when the probe failed."""
    replies, reply = _processes.Pipe(duplex=False)
    process = _processes.Process(target=_probe_memory, args=(reply,), name="memory-probe")
    process.start()
    reply.close()
    try:
        return replies.recv() if replies.poll(PROBE_TIMEOUT_S) else None
    except EOFError:
        return None
    finally:
        replies.close()
        process.join(PROBE_TIMEOUT_S)
        if process.exitcode is None:
            process.kill()
            process.join()


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


def _train(job_id: str, worker_id: str, log_level: int, cores: tuple[int, ...], report: Connection,
           siblings: tuple[str, ...] = (), lender: Lender | None = None) -> None:
    """The training process: dies with its parent, logs as the worker does, trains the job (and
    its `siblings` together with it) on its cores (all when none are given), its images lent by
    the data holder when there is one, reports its device memory's peak, exits."""
    _die_with_parent()
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    from worker.tasks import run_taken_jobs  # torch: only here (the fork server imported it already)

    sys.exit(run_taken_jobs([job_id, *siblings], worker_id, cores, report.send, lender))


def _hold(lender: Lender, device: str, ready: Connection) -> None:
    """The data holder's process: dies with its parent, logs as the worker does, serves."""
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    serve(lender, device, ready)


def _probe_memory(reply: Connection) -> None:
    _die_with_parent()
    from worker.tasks import free_device_memory

    reply.send(free_device_memory())


def _die_with_parent() -> None:
    """On Linux, SIGKILL this process when its parent (the fork server, which exits with the
    worker) dies: no training goes on once nobody renews the job's lease."""
    if sys.platform != "linux":
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the call
        os._exit(1)
