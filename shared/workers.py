"""Live workers, the data sets they hold and their slots, as each worker reports them to Redis.

A worker writes its report (JSON) to `{prefix}noisyfit:workers:{name}` every
settings.worker_report_s, with a TTL of REPORT_TTL reports, and its name with the time into the
sorted set `{prefix}noisyfit:workers` (the index readers look in); a worker whose key expired
(killed, or cut off) is no longer live, and readers drop names not reported for PRUNE_TTLS TTLs.
torch-free: the API reads the fleet to show GET /v1/catalog, to refuse a job that no live
worker can run, and to say what a queued job waits for.

A report names the built-in data sets the worker holds (files present, or downloadable); an
uploaded data set (ds_...) comes from the object store, so every live worker holds those. It
also says how many jobs the worker runs at most at once (`slots`, worker.packing), how many it
runs now (`busy`) and on what (`device`); a worker reports at once when a job starts or ends.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from shared.catalog import DATASETS
from shared.settings import Settings
from shared.stream import StreamUnavailable, redis_client

log = logging.getLogger(__name__)

REPORT_TTL = 3  # reports: a worker missing this many is no longer live
PRUNE_TTLS = 100  # a name not reported for this many TTLs leaves the index (generous: hosts' clocks differ)
REDIS_TIMEOUT_S = 5.0


class WaitingFor(StrEnum):
    """What a queued job waits for (JobOut.waiting_for)."""

    worker = "worker"  # no worker is live: it starts once one is
    dataset = "dataset"  # workers are live, but none holds its data set
    slot = "slot"  # workers holding its data set are live, but every slot of theirs is busy
    queue = "queue"  # a live worker holding its data set has a free slot: it waits its turn


@dataclass(frozen=True)
class WorkerReport:
    name: str  # the Celery node name, e.g. gpu0@host
    datasets: tuple[str, ...]  # the built-in data sets it holds
    reported_at: float  # seconds since the epoch
    slots: int = 1  # jobs it runs at once at most (a report from before packing: 1)
    busy: int = 0  # jobs it runs now
    device: str = ""  # "cpu" or "cuda" ("": not reported)

    def holds(self, dataset: str) -> bool:
        return dataset not in DATASETS or dataset in self.datasets


@dataclass(frozen=True)
class Capacity:
    """A worker's slots (worker.packing): what its report carries besides its data sets."""

    device: str
    slots: int
    busy: int


@dataclass(frozen=True)
class Fleet:
    """The live workers, as they last reported."""

    workers: tuple[WorkerReport, ...]

    def holders(self, dataset: str) -> int:
        """How many live workers hold the data set (every one holds an uploaded data set)."""
        return sum(w.holds(dataset) for w in self.workers)

    def free_slots(self, dataset: str) -> int:
        """Slots not busy on the live workers that hold the data set."""
        return sum(max(0, w.slots - w.busy) for w in self.workers if w.holds(dataset))

    def waiting_for(self, dataset: str) -> WaitingFor:
        if not self.workers:
            return WaitingFor.worker
        if not self.holders(dataset):
            return WaitingFor.dataset
        return WaitingFor.queue if self.free_slots(dataset) else WaitingFor.slot

    @property
    def slots(self) -> int:
        return sum(w.slots for w in self.workers)

    @property
    def busy(self) -> int:
        return sum(min(w.busy, w.slots) for w in self.workers)

    def unavailable(self, dataset: str, settings: Settings) -> str | None:
        """Why no job on `dataset` can be accepted now, or None. With no live worker at all the job
        is accepted (it waits for one); with live workers of which none holds it, it is not."""
        if not self.workers or self.holders(dataset):
            return None
        names = ", ".join(sorted(w.name for w in self.workers))
        return (f"no live worker holds the data set {dataset!r} (live: {names}); {DATASETS[dataset].install}. Workers "
                f"report what they hold every {settings.worker_report_s:g}s; submit again after that")


def _key(settings: Settings, name: str | None = None) -> str:
    return f"{settings.redis_key_prefix}noisyfit:workers" + (f":{name}" if name else "")


def _client(settings: Settings) -> redis.Redis:
    return redis_client(settings.redis_url, REDIS_TIMEOUT_S)


def _ttl_s(settings: Settings) -> float:
    return settings.worker_report_s * REPORT_TTL


def report(settings: Settings, worker: WorkerReport) -> None:
    """Write the worker's report; it lives REPORT_TTL report intervals."""
    pipe = _client(settings).pipeline()
    pipe.set(_key(settings, worker.name), json.dumps({"datasets": list(worker.datasets),
                                                      "reported_at": worker.reported_at, "slots": worker.slots,
                                                      "busy": worker.busy, "device": worker.device}),
             px=max(1, int(_ttl_s(settings) * 1000)))
    pipe.zadd(_key(settings), {worker.name: worker.reported_at})
    pipe.execute()


def withdraw(settings: Settings, name: str) -> None:
    """A worker stopping: no longer live, at once."""
    pipe = _client(settings).pipeline()
    pipe.delete(_key(settings, name))
    pipe.zrem(_key(settings), name)
    pipe.execute()


def read_fleet(settings: Settings) -> Fleet:
    """The live workers; StreamUnavailable when Redis cannot be reached."""
    client = _client(settings)
    try:
        client.zremrangebyscore(_key(settings), "-inf", time.time() - PRUNE_TTLS * _ttl_s(settings))
        names = sorted(client.zrange(_key(settings), 0, -1))
        values = client.mget([_key(settings, name) for name in names]) if names else []
    except redis.RedisError as exc:
        raise StreamUnavailable(f"Redis cannot be reached to read the live workers: {exc}") from exc
    return Fleet(tuple(_parse(name, value) for name, value in zip(names, values) if value is not None))


def _parse(name: str, value: str) -> WorkerReport:
    data = json.loads(value)
    return WorkerReport(name, tuple(data["datasets"]), float(data["reported_at"]), int(data.get("slots", 1)),
                        int(data.get("busy", 0)), str(data.get("device", "")))


def with_fleet(catalog: dict[str, Any], fleet: Fleet | None) -> dict[str, Any]:
    """The catalog with `live_workers`, `slots` (`total`, `busy`: jobs the live workers run at once
    at most, and now) and, per data set, `workers` (the live workers holding it), `free_slots` and
    `available`; null where Redis could not be read."""
    datasets = {name: {**info, "workers": None if fleet is None else fleet.holders(name),
                       "free_slots": None if fleet is None else fleet.free_slots(name),
                       "available": None if fleet is None else fleet.holders(name) > 0}
                for name, info in catalog["datasets"].items()}
    return {**catalog, "datasets": datasets, "live_workers": None if fleet is None else len(fleet.workers),
            "slots": None if fleet is None else {"total": fleet.slots, "busy": fleet.busy}}


class Reporter:
    """A daemon thread that reports the worker every settings.worker_report_s and at once after
    wake() (the first report before start() returns), and withdraws it on stop()."""

    def __init__(self, name: str, settings: Settings, holdings: Callable[[], list[str]],
                 capacity: Callable[[], Capacity] = lambda: Capacity("", 1, 0)):
        self.name, self.settings, self.holdings, self.capacity = name, settings, holdings, capacity
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-report", daemon=True)

    def start(self) -> None:
        self._send()
        self._thread.start()

    def wake(self) -> None:
        """Report now (a job started or ended)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.worker_report_s)
            self._wake.clear()
            if not self._stop.is_set():
                self._send()

    def _send(self) -> None:
        capacity = self.capacity()
        try:
            report(self.settings, WorkerReport(self.name, tuple(self.holdings()), time.time(), capacity.slots,
                                               capacity.busy, capacity.device))
        except redis.RedisError as exc:
            log.warning("could not report this worker's data sets to Redis (%s); trying again", exc)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            withdraw(self.settings, self.name)
        except redis.RedisError as exc:
            log.warning("could not withdraw this worker's report (%s); it lapses by itself", exc)
