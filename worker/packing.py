"""Several jobs at once on one worker: its slots, and whether the next job fits beside the running ones.

    message ──> the job whose turn it is (shared.jobs.take_next) ──Admission.check──> fits: taken, in a Slot
                                                                  └──> NoRoom: wait for room (a job of
        this worker ending, or reporting what it really uses), then look again; after
        settings.admission_wait_s the message goes back to the queue, for a worker with room

- CPU: floor(C / k) slots, C the cores this process may run on, k = settings.cores_per_job
  (0: all of them, one job at a time). Each slot is k cores of its own: the job's training
  process is pinned to them (os.sched_setaffinity) and runs k torch threads.
- GPU (the CUDA driver sees a device): settings.jobs_per_gpu slots, and a job fits while its
  need (worker.device_memory) with what the running jobs may still take stays below the device's
  free memory less settings.gpu_memory_margin_mib (admits()). A job with no other beside it is
  admitted whatever it needs, as a worker did before packing; if it does not fit, it fails with
  out_of_memory as it did then.
- A group of runs of one sweep that train together (worker.fused) takes one slot: on a CPU its
  core group; on a GPU the sum of its runs' needs, a run joining only while that fits (join()).

The Celery pool runs one thread per slot (worker/app.py): a worker whose slots are all busy holds
no message. Each packed job keeps its own lease, heartbeat, cancel check, time limit and
artifacts (worker.dispatch). torch-free: this runs in the worker's long-lived process; the
device's free memory comes from a short probe process (worker.dispatch.probe_free_memory).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from shared.settings import Settings
from shared.workers import Capacity

log = logging.getLogger(__name__)

MIB = 2**20


@dataclass(frozen=True)
class Running:
    """A job running on a GPU worker, as admission sees it."""

    need: int  # device bytes it was admitted with
    measured: bool  # it reported its first epoch's peak: that memory is in use, free memory counts it


def admits(free: int, running: Sequence[Running], need: int, margin: int) -> bool:
    """Whether a job needing `need` bytes fits on a device with `free` bytes free now, beside `running`.

    A running job that has not reported its peak yet may still take up to its need, which free
    memory does not show yet: it is set aside. `margin` bytes stay free. With nothing running,
    any job is admitted (it has the device to itself, as before packing)."""
    if not running:
        return True
    pending = sum(job.need for job in running if not job.measured)
    return need + pending + margin <= free


def core_groups(cores: Sequence[int], per_job: int) -> list[tuple[int, ...]]:
    """floor(C / per_job) groups of per_job cores each; per_job 0 (or C and more): one group of all."""
    ordered = sorted(cores)
    if per_job <= 0 or per_job >= len(ordered):
        return [tuple(ordered)]
    return [tuple(ordered[i * per_job:(i + 1) * per_job]) for i in range(len(ordered) // per_job)]


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def visible_cuda_devices() -> int:
    """CUDA devices this process sees (CUDA_VISIBLE_DEVICES honoured), asked of the driver
    without torch; 0 where there is no driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


class NoRoom(Exception):
    """The job whose turn it is does not fit beside this worker's running jobs now."""

    def __init__(self, job_id: str, changes: int):
        super().__init__(f"job {job_id} does not fit beside the running jobs")
        self.changes = changes  # the packer's change count when it was refused: wait for a later one


@dataclass(frozen=True)
class Slot:
    """A job's place on the worker."""

    job_id: str
    cores: tuple[int, ...]  # its training process's cores; () leaves it as it is
    need: int  # device bytes it was admitted with (0 on a CPU worker)


class Packer:
    """The worker's slots and the jobs in them; thread-safe (one pool thread per slot)."""

    def __init__(self, device: str, slots: int, groups: Sequence[tuple[int, ...]] = (), pin: bool = False,
                 free_memory: Callable[[], int | None] | None = None, margin: int = 0):
        self.device, self.slots = device, slots
        self.groups, self.pin = list(groups), pin
        self.free_memory, self.margin = free_memory, margin
        self._jobs: dict[str, tuple[Slot, Running]] = {}
        self._changes = 0
        self._changed = threading.Condition()
        self._admitting = threading.Lock()
        self.listeners: list[Callable[[], None]] = []  # told of every change (the fleet report)

    @classmethod
    def of(cls, settings: Settings, free_memory: Callable[[], int | None]) -> Packer:
        """This machine's packer: a GPU worker's when the CUDA driver sees a device, else a CPU worker's."""
        if visible_cuda_devices():
            return cls("cuda", max(1, settings.jobs_per_gpu), free_memory=free_memory,
                       margin=settings.gpu_memory_margin_mib * MIB)
        groups = core_groups(usable_cores(), settings.cores_per_job)
        return cls("cpu", len(groups), groups, pin=settings.cores_per_job > 0)

    def describe(self) -> str:
        if self.device == "cuda":
            return (f"up to {self.slots} jobs at once on its GPU, admitted by memory "
                    f"(keeping {self.margin // MIB} MiB free)")
        if not self.pin:
            return "one job at a time on its CPU, on all its cores"
        per_job, groups = len(self.groups[0]), " | ".join(",".join(map(str, g)) for g in self.groups)
        return f"{self.slots} jobs at once on its CPU, {per_job} core{'s' if per_job > 1 else ''} each ({groups})"

    def capacity(self) -> Capacity:
        with self._changed:
            return Capacity(self.device, self.slots, len(self._jobs))

    @contextmanager
    def admission(self) -> Iterator[Admission]:
        """One admission at a time: what it checks stays true until it holds its slot (jobs of this
        worker only ever end or report meanwhile, which frees room)."""
        with self._admitting:
            yield Admission(self)

    def measured(self, job_id: str) -> None:
        """The job reported its peak: its memory now shows in the device's free memory."""
        with self._changed:
            if job_id in self._jobs:
                slot, running = self._jobs[job_id]
                self._jobs[job_id] = (slot, Running(running.need, measured=True))
            self._changed_now()

    def release(self, slot: Slot) -> None:
        with self._changed:
            self._jobs.pop(slot.job_id, None)
            self._changed_now()

    def wait_for_room(self, refused: NoRoom, timeout_s: float) -> bool:
        """Wait until something changed since `refused` (a job ended or reported); False after timeout_s."""
        with self._changed:
            return self._changed.wait_for(lambda: self._changes != refused.changes, max(0.0, timeout_s))

    def _changed_now(self) -> None:
        self._changes += 1
        self._changed.notify_all()
        for listener in self.listeners:
            listener()


class Admission:
    """A packer's check of one candidate after another, then the slot of the one taken."""

    def __init__(self, packer: Packer):
        self.packer = packer
        self._needs: dict[str, int] = {}
        self._free: int | None = None  # the device's free bytes, once read
        self._read = False

    def check(self, job_id: str, need: int) -> None:
        """NoRoom unless a job needing `need` device bytes fits now."""
        packer = self.packer
        with packer._changed:
            running = [r for _, r in packer._jobs.values()]
            changes = packer._changes
        fits = len(running) < packer.slots
        if fits and packer.device == "cuda" and running:
            free = self._free_memory(fresh=True)
            if free is None:
                log.warning("the device's free memory could not be read (torch sees no CUDA device?): "
                            "one job at a time")
                fits = False
            else:
                fits = admits(free, running, need, packer.margin)
                log.info("job %s needs %d MiB; %d MiB free, %d jobs running (%d MiB they may still take): %s",
                         job_id, need // MIB, free // MIB, len(running),
                         sum(r.need for r in running if not r.measured) // MIB, "admitted" if fits else "no room")
        if not fits:
            raise NoRoom(job_id, changes)
        self._needs[job_id] = need

    def join(self, job_id: str, need: int) -> bool:
        """Whether a run needing `need` more device bytes may train in the slot of `job_id` (checked,
        not held yet) together with it, one training process (worker.fused); its need is then the
        group's. On a CPU worker it always may (the group is one slot, on its core group); on a GPU
        while the group with it still fits beside the running jobs by admits(), the group counting
        as a running job that has not reported its peak (so it fits in free memory less the margin
        even with nothing else running). False when the free memory cannot be read. (A run that
        another worker takes right after this check stays counted: the group's need errs high
        until it reports its peak.)"""
        packer = self.packer
        if packer.device == "cuda":
            with packer._changed:
                running = [r for _, r in packer._jobs.values()]
            free = self._free_memory()
            if free is None:
                return False
            group = Running(self._needs[job_id], measured=False)
            if not admits(free, [*running, group], need, packer.margin):
                log.info("job %s: a run needing %d MiB more does not join its %d MiB (%d MiB free, %d jobs running)",
                         job_id, need // MIB, self._needs[job_id] // MIB, free // MIB, len(running))
                return False
        self._needs[job_id] += need
        return True

    def _free_memory(self, fresh: bool = False) -> int | None:
        """The device's free bytes: read anew when `fresh`, else as last read in this admission (jobs
        of this worker only end or report meanwhile, which frees room)."""
        if fresh or not self._read:
            self._free = self.packer.free_memory() if self.packer.free_memory else None
            self._read = True
        return self._free

    def hold(self, job_id: str) -> Slot:
        """The slot of the job taken (checked first)."""
        packer = self.packer
        with packer._changed:
            used = {slot.cores for slot, _ in packer._jobs.values()}
            cores = next(g for g in packer.groups if g not in used) if packer.pin else ()
            slot = Slot(job_id, cores, self._needs[job_id])
            packer._jobs[job_id] = (slot, Running(slot.need, measured=False))
            packer._changed_now()
        return slot
