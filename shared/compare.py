"""Comparing jobs (the dashboard's compare view): the spec fields that differ between them,
and their per-epoch curves read together.

A compare reads each job's `metrics.jsonl` (one `epoch` event a line, written after every
epoch, so it is as fresh as the stream's epoch events) with one GET, READERS jobs at a time;
a job without that file yet is read from its metrics stream (shared.jobs.read_metrics). The
answer is bounded: at most MAX_JOBS jobs, each thinned to MAX_POINTS epochs, on at most MAX_X
shared epochs (`align`), figures rounded to FIGURES significant digits. A finished job's curves
never change, so they are kept in memory (the newest CACHED of them) and a compare shown again
reads only its running jobs.
"""

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from shared.errors import NotFound, ObjectMissing, SpecError
from shared.jobs import METRICS_FILE, read_metrics
from shared.models import Job
from shared.spec import flat_spec
from shared.store import JOB_ID, ObjectStore, artifact_key
from shared.stream import MetricsStream

MIN_JOBS, MAX_JOBS = 2, 200
MAX_POINTS = 250  # epochs per job; a longer run is thinned evenly, its first and last epochs kept
FIGURES = 4  # significant digits of a figure sent to the browser
READERS = 8  # jobs read at once
READ_PAGE = 1000  # stream events read at a time
MAX_X = 500  # epochs of all the jobs' curves together (a chart's x values)
CACHED = 1000  # finished jobs' curves kept in memory
# The figures a compare draws: the clean test accuracy, the accuracy on the noisy training labels
# (and on the noisy validation split), the memorised share of corrupted samples, the training loss.
CURVES = ("test_acc", "train_acc", "val_acc", "memorized", "train_loss")
_MISSING = ("missing",)


@dataclass(frozen=True)
class Curves:
    """One job's figures per epoch: `values[name][i]` belongs to `epochs[i]` (None where absent)."""

    job_id: str
    epochs: list[int]
    values: dict[str, list[float | None]]
    thinned: bool  # some epochs were left out to stay within MAX_POINTS


def parse_ids(values: Iterable[str]) -> list[str]:
    """Job ids from query values (each may hold several, comma-separated), in order, each once;
    SpecError (field `ids`) for a malformed id or a count outside MIN_JOBS..MAX_JOBS."""
    ids = list(dict.fromkeys(part.strip() for value in values for part in value.split(",") if part.strip()))
    bad = [job_id for job_id in ids if not JOB_ID.fullmatch(job_id)]
    if bad:
        raise SpecError(f"{bad[0][:80]!r} is not a job id (job_ followed by hex digits)", "ids")
    if not MIN_JOBS <= len(ids) <= MAX_JOBS:
        raise SpecError(f"choose {MIN_JOBS} to {MAX_JOBS} jobs to compare; {len(ids)} given", "ids")
    return ids


def load_jobs(session: Session, user_id: int, ids: list[str]) -> list[Job]:
    """The user's jobs of `ids`, in that order; NotFound naming the first that is unknown or
    another user's."""
    found = {job.id: job for job in session.exec(select(Job).where(Job.user_id == user_id, col(Job.id).in_(ids)))}
    for job_id in ids:
        if job_id not in found:
            raise NotFound(f"no job {job_id!r} (GET /v1/jobs lists yours)", field="ids")
    return [found[job_id] for job_id in ids]


def sweep_jobs(session: Session, sweep_id: str) -> tuple[list[str], int]:
    """The first MAX_JOBS job ids of a sweep in the order of its cells, and how many it has."""
    ids = list(session.exec(select(Job.id).where(Job.sweep_id == sweep_id)
                            .order_by(col(Job.created_at), col(Job.id))))
    return ids[:MAX_JOBS], len(ids)


def _comparable(value: Any) -> Any:
    """A stand-in that compares like the value: 1 == 1.0, but True is not 1; lists by content."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", float(value))
    return ("json", json.dumps(value, sort_keys=True))


def differing_fields(specs: list[dict[str, Any]]) -> list[str]:
    """The dotted spec fields (shared.spec.flat_spec) whose value is not the same in every spec
    (a field some specs lack differs), in the order the specs name them."""
    flats = [flat_spec(spec) for spec in specs]
    names = dict.fromkeys(name for flat in flats for name in flat)
    return [name for name in names
            if len({_comparable(flat[name]) if name in flat else _MISSING for flat in flats}) > 1]


def _rounded(value: Any) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(f"{value:.{FIGURES}g}")


def curves_of(job_id: str, events: Iterable[dict[str, Any]], max_points: int = MAX_POINTS) -> Curves:
    """The job's figures per epoch from its metric events (a resumed job's repeated epoch: the
    last event wins), thinned evenly to `max_points` epochs."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in events:
        epoch = event.get("epoch")
        if event.get("type") == "epoch" and isinstance(epoch, int) and not isinstance(epoch, bool):
            by_epoch[epoch] = event
    epochs = sorted(by_epoch)
    thinned = len(epochs) > max_points
    epochs = _evenly(epochs, max_points)
    values = {name: [_rounded(by_epoch[epoch].get(name)) for epoch in epochs] for name in CURVES}
    return Curves(job_id, epochs, {name: column for name, column in values.items() if any(v is not None for v in column)},
                  thinned)


def _evenly(values: list[int], most: int) -> list[int]:
    """At most `most` of the sorted `values`, evenly spread, the first and the last kept."""
    if len(values) <= most:
        return values
    last = len(values) - 1
    return sorted({values[round(i * last / (most - 1))] for i in range(most)})


def align(curves: list[Curves], most: int = MAX_X) -> dict[str, Any]:
    """The curves on shared x values, as a chart draws them: `epochs` (the epochs any job has,
    at most `most` of them, evenly spread) and per job each figure at those epochs (None where
    the job has none: a line is drawn across such gaps)."""
    shared = _evenly(sorted({epoch for c in curves for epoch in c.epochs}), most)
    drawn = set(shared)
    jobs = []
    for c in curves:
        at = {epoch: i for i, epoch in enumerate(c.epochs)}
        columns = {name: [column[at[epoch]] if epoch in at else None for epoch in shared]
                   for name, column in c.values.items()}
        jobs.append({"id": c.job_id, "thinned": c.thinned or not drawn.issuperset(at), **columns})
    return {"epochs": shared, "jobs": jobs}


class CurveCache:
    """Finished jobs' curves, the newest `size` of them; safe to use from several threads."""

    def __init__(self, size: int = CACHED):
        self.size = size
        self._items: OrderedDict[str, Curves] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Curves | None:
        with self._lock:
            curves = self._items.get(job_id)
            if curves is not None:
                self._items.move_to_end(job_id)
            return curves

    def put(self, curves: Curves) -> None:
        with self._lock:
            self._items[curves.job_id] = curves
            self._items.move_to_end(curves.job_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


FINISHED_CURVES = CurveCache()


def read_curves(jobs: list[tuple[str, bool]], *, stream: MetricsStream, store: ObjectStore,
                cache: CurveCache = FINISHED_CURVES) -> list[Curves]:
    """The curves of each (job id, finished) in order; finished jobs' come from `cache` when there."""
    found = {job_id: cache.get(job_id) for job_id, finished in jobs if finished}
    todo = [job_id for job_id, _ in jobs if found.get(job_id) is None]
    with ThreadPoolExecutor(max_workers=min(READERS, max(1, len(todo)))) as pool:
        read = dict(zip(todo, pool.map(lambda job_id: _read(job_id, stream, store), todo)))
    for job_id, finished in jobs:
        if finished and job_id in read:
            cache.put(read[job_id])
    return [found.get(job_id) or read[job_id] for job_id, _ in jobs]


def _read(job_id: str, stream: MetricsStream, store: ObjectStore) -> Curves:
    try:
        lines = store.get_bytes(artifact_key(job_id, METRICS_FILE)).decode().splitlines()
        return curves_of(job_id, (json.loads(line) for line in lines if line.strip()))
    except ObjectMissing:
        pass
    events: list[dict[str, Any]] = []
    after = None
    while True:
        page, after = read_metrics(job_id, after, READ_PAGE, stream=stream, store=store)
        events += [event for event in page if event.get("type") == "epoch"]
        if len(page) < READ_PAGE:
            return curves_of(job_id, events)
