"""The sweep service: a grid of jobs created all or nothing, its status and its table.

A sweep is a base spec and a grid (or one of the paper's grids, `preset`, over `seeds`).
Its size is checked first, from the grid alone: at most MAX_CELLS cells, and at most
settings.max_sweep_bytes of specs together. Then each cell is built, parsed and resolved one
at a time (as shared.jobs resolves a single job) and its job inserted, all in one transaction
under the user's lock; a bad cell (422) or more jobs than the user may still queue (429,
settings.max_active_jobs_per_user) rolls it all back, so a refused sweep leaves no row and no
stream. Only once committed are the jobs enqueued and announced.

A sweep's status is derived from its jobs on every read:

    queued     every job queued
    running    some job running, or some finished while others still wait
    succeeded  every job succeeded
    partial    all finished, some succeeded, some failed or were cancelled
    failed     all finished, none succeeded, some failed
    cancelled  all finished, every one cancelled
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from shared import jobs, scheduling
from shared.errors import (
    GridError,
    JobFinished,
    LimitError,
    NotFound,
    QueueUnavailable,
    SpecError,
    StreamUnavailable,
)
from shared.locks import lock_user
from shared.models import ACTIVE, Job, JobStatus, Sweep
from shared.settings import Settings
from shared.spec import DataInfo, JobSpec, resolve_spec
from shared.stream import get_stream
from shared.sweeps import (
    LOSS_SETTING,
    SEED,
    Grid,
    Row,
    aggregate,
    cell_spec,
    expand_grid,
    get_path,
    grid_fields,
    paper_base,
    paper_grid,
    spec_bytes,
    summary,
)

DEFAULT_SEEDS = (0, 1, 2)
FLUSH_EVERY = 100  # jobs written (or read) at a time
FLUSH_BYTES = 1024 * 1024  # or fewer, so that a batch's specs take about this much as JSON
log = logging.getLogger(__name__)


@dataclass
class SweepView:
    """A sweep as the API shows it: its jobs, their counts by status, the derived status, the table."""

    sweep: Sweep
    job_ids: list[str]
    counts: dict[str, int]
    status: str
    table: list[Row] | None = None
    summary: dict[str, Any] | None = None  # shared.sweeps.summary of the table


def build_grid(base: dict[str, Any], grid: Grid | None, preset: str | None, seeds: list[int] | None) -> Grid:
    """The grid to expand: `grid`, or the preset's grid over `seeds` with `grid`'s entries added or overriding."""
    if preset is None:
        if not grid:
            raise GridError("a sweep needs a grid ({field: [values]}) or a preset (table2, table3, alpha-beta, "
                            "select)", "grid")
        if seeds is not None:
            raise GridError("seeds go with a preset; with a grid, put them in it: \"seed\": [0, 1, 2]", "seeds")
        return grid
    dataset = base.get("dataset")
    if not isinstance(dataset, str):
        raise SpecError("a preset needs the base spec's dataset", "base.dataset")
    return {**paper_grid(preset, dataset, DEFAULT_SEEDS if seeds is None else seeds), **(grid or {})}


def create_sweep(
    session: Session, user_id: int, base: dict[str, Any], settings: Settings, *,
    grid: Grid | None = None, preset: str | None = None, seeds: list[int] | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> SweepView:
    """Check the base's shape and the grid's size, then validate and store the sweep and one
    queued job per cell in one transaction, then enqueue them; all or nothing. A preset fills
    its base values (shared.sweeps.paper_base) where `base` is silent."""
    grid = build_grid(base, grid, preset, seeds)
    if preset is not None:
        base = paper_base(preset, base)
    _parse_cell(grid, 0, next(expand_grid(base, grid)))  # the base's shape, before anything is sized or built
    size = spec_bytes(base, grid)
    if size > settings.max_sweep_bytes:
        raise GridError(f"the sweep's {_cells(grid)} specs take {size} bytes together, more than the "
                        f"{settings.max_sweep_bytes} allowed; use fewer grid values or a smaller base spec", "grid")
    sweep = Sweep(user_id=user_id, base=base, grid=grid)
    job_ids = _store(session, user_id, sweep, settings, _batch(size // _cells(grid)))
    for index, job_id in enumerate(job_ids):
        try:
            jobs.send_job(session, job_id, settings, enqueue)
        except QueueUnavailable:
            _undo(session, user_id, sweep.id, job_ids[:index], settings)
            raise
    return view(session, sweep)


def _store(session: Session, user_id: int, sweep: Sweep, settings: Settings, batch: int) -> list[str]:
    """Insert the sweep and its jobs, each cell parsed and resolved as it is built and written
    `batch` at a time; nothing is committed unless every cell can run and the user may queue
    them all."""
    lock_user(session, user_id)
    try:
        jobs.check_quota(session, user_id, settings)
        room = settings.max_active_jobs_per_user - jobs.count_active(session, user_id)
        session.add(sweep)
        session.flush()
        job_ids, pending, infos = [], [], {}
        for index, spec in enumerate(expand_grid(sweep.base, sweep.grid)):
            job = jobs.new_job(user_id, _resolve_cell(session, user_id, sweep.grid, index, spec, infos, settings),
                               sweep_id=sweep.id)
            session.add(job)
            job_ids.append(job.id)
            pending.append(job)
            if len(pending) == batch:
                _flush(session, pending)
        _flush(session, pending)
        if len(job_ids) > room:
            raise LimitError(
                f"the sweep has {len(job_ids)} jobs, but you may queue only {max(room, 0)} more "
                f"({settings.max_active_jobs_per_user - room} of your {settings.max_active_jobs_per_user} queued or "
                "running jobs are taken); use fewer values or seeds, or wait for running jobs to finish", field="grid",
            )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return job_ids


def _resolve_cell(session: Session, user_id: int, grid: Grid, index: int, spec: dict[str, Any],
                  infos: dict[str, DataInfo | None], settings: Settings) -> dict[str, Any]:
    """The cell's resolved spec; a SpecError names `cells[i].<field>` and the cell's grid values."""
    parsed = _parse_cell(grid, index, spec)
    try:
        if parsed.dataset not in infos:
            infos[parsed.dataset] = info = jobs._data_info(session, user_id, parsed.dataset)
            jobs.require_holder(jobs.loaded_dataset(info, parsed.dataset), settings)
        resolved = resolve_spec(parsed, infos[parsed.dataset]).to_json()
        scheduling.check_time_limit(resolved, settings)
        return resolved
    except SpecError as exc:
        raise _in_cell(exc, grid, index, spec) from exc


def _parse_cell(grid: Grid, index: int, spec: dict[str, Any]) -> JobSpec:
    """The cell as a JobSpec. A malformed field that the grid does not set is the base's
    (`base.<field>`); one the grid sets, the cell's (`cells[i].<field>`)."""
    try:
        return JobSpec.parse(spec)
    except SpecError as exc:
        if exc.field.partition(".")[0] not in {name.partition(".")[0] for name in grid_fields(grid)}:
            raise SpecError(f"the base spec: {exc.message}", f"base.{exc.field}") from exc
        raise _in_cell(exc, grid, index, spec) from exc


def _in_cell(exc: SpecError, grid: Grid, index: int, spec: dict[str, Any]) -> SpecError:
    values = ", ".join(f"{name}={_short(get_path(spec, name))}" for name in grid_fields(grid))
    return SpecError(f"cell {index} of {_cells(grid)} ({values}): {exc.message}", f"cells[{index}].{exc.field}")


def _short(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _batch(spec_size: int) -> int:
    """How many jobs to write or read at a time when each spec takes `spec_size` bytes as JSON."""
    return max(1, min(FLUSH_EVERY, FLUSH_BYTES // max(spec_size, 1)))


def _flush(session: Session, batch: list[Job]) -> None:
    """Write the batch and let go of its rows, so that a sweep's memory does not grow with its cells."""
    session.flush()
    for job in batch:
        session.expunge(job)
    batch.clear()


def _cells(grid: Grid) -> int:
    return math.prod(len(values) for values in grid.values())


def _undo(session: Session, user_id: int, sweep_id: str, sent: list[str], settings: Settings) -> None:
    """Remove what a sweep whose enqueueing failed left: its queued jobs, the metrics streams
    of those already announced, and the sweep. A job a worker already took is cancelled
    instead (its stream expires after its `done` event), and the sweep kept with it."""
    session.execute(delete(Job).where(Job.sweep_id == sweep_id, Job.status == JobStatus.queued))
    session.commit()
    taken = set(session.exec(select(Job.id).where(Job.sweep_id == sweep_id)).all())
    try:
        stream = get_stream(settings)
        for job_id in set(sent) - taken:
            stream.delete(job_id)
    except StreamUnavailable:
        log.warning("sweep %s: could not delete the metrics streams of its removed jobs", sweep_id)
    for job_id in taken:
        _cancel(session, user_id, job_id, settings)
    if not taken:
        session.execute(delete(Sweep).where(Sweep.id == sweep_id))
        session.commit()


def get_sweep(session: Session, user_id: int, sweep_id: str) -> Sweep:
    """The caller's sweep; NotFound for an unknown id and for another user's alike."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.user_id != user_id:
        raise NotFound(f"no sweep {sweep_id!r} (GET /v1/sweeps lists yours)", field="id")
    return sweep


def view(session: Session, sweep: Sweep) -> SweepView:
    """The sweep with its jobs, status and table (one row per cell without the seed)."""
    members = _members(session, sweep)
    counts = _counts(job["status"] for job in members)
    rows = aggregate(members, sweep.grid)
    return SweepView(sweep, [job["id"] for job in members], counts, derive_status(counts), rows, summary(rows))


def _members(session: Session, sweep: Sweep) -> list[dict[str, Any]]:
    """The sweep's jobs in the order of its cells (creation order), each with only the parts of
    its spec that the table reads (the grid's fields, the seed and the loss setting), read a
    batch at a time."""
    names = list(dict.fromkeys([*grid_fields(sweep.grid), SEED, *LOSS_SETTING, "loss_params"]))
    query = (select(Job.id, Job.status, Job.spec, Job.result).where(Job.sweep_id == sweep.id)
             .order_by(col(Job.created_at), col(Job.id))
             .execution_options(yield_per=_batch(spec_bytes(sweep.base, {}))))
    return [{"id": job_id, "status": status, "result": result,
             "spec": cell_spec({name: get_path(spec, name) for name in names})}
            for job_id, status, spec, result in session.execute(query)]


def list_sweeps(session: Session, user_id: int, limit: int = 50) -> list[SweepView]:
    """The user's newest sweeps with counts and status (no table)."""
    query = select(Sweep).where(Sweep.user_id == user_id)
    sweeps = list(session.exec(query.order_by(col(Sweep.created_at).desc(), col(Sweep.id).desc()).limit(limit)))
    ids = [s.id for s in sweeps]
    members = session.exec(select(Job.sweep_id, Job.id, Job.status).where(col(Job.sweep_id).in_(ids))
                           .order_by(col(Job.created_at), col(Job.id))).all() if ids else []
    views = []
    for sweep in sweeps:
        own = [(job_id, status) for sweep_id, job_id, status in members if sweep_id == sweep.id]
        counts = _counts(status for _, status in own)
        views.append(SweepView(sweep, [job_id for job_id, _ in own], counts, derive_status(counts)))
    return views


def cancel_sweep(session: Session, user_id: int, sweep_id: str, settings: Settings) -> SweepView:
    """Cancel every queued job of the sweep at once and ask its running jobs to stop."""
    sweep = get_sweep(session, user_id, sweep_id)
    active = session.exec(select(Job.id).where(Job.sweep_id == sweep.id, col(Job.status).in_(ACTIVE))).all()
    for job_id in active:
        _cancel(session, user_id, job_id, settings)
    return view(session, sweep)


def _cancel(session: Session, user_id: int, job_id: str, settings: Settings) -> None:
    try:
        jobs.request_cancel(session, user_id, job_id, settings)
    except JobFinished:
        pass  # it finished meanwhile


def derive_status(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    waiting, running = counts[JobStatus.queued], counts[JobStatus.running]
    if waiting == total:
        return "queued"
    if waiting or running:
        return "running"
    if counts[JobStatus.succeeded] == total:
        return "succeeded"
    if counts[JobStatus.succeeded]:
        return "partial"
    return "failed" if counts[JobStatus.failed] else "cancelled"


def _counts(statuses: Any) -> dict[str, int]:
    counts = {str(status): 0 for status in JobStatus}
    for status in statuses:
        counts[status] += 1
    return counts



