"""The sweep service: a grid of jobs created all or nothing, its status and its table.

A sweep is a base spec and a grid (or one of the paper's grids, `preset`, over `seeds`).
Every cell is validated before anything is stored; then one job per cell is created through
shared.jobs.create_job, so limits, resolution and enqueueing are those of a single job. A
sweep larger than what the user may still queue (settings.max_active_jobs_per_user) is
refused as a whole (429), never half created.

A sweep's status is derived from its jobs on every read:

    queued     every job queued
    running    some job running, or some finished while others still wait
    succeeded  every job succeeded
    partial    all finished, some succeeded, some failed or were cancelled
    failed     all finished, none succeeded, some failed
    cancelled  all finished, every one cancelled
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from shared import jobs
from shared.models import ACTIVE, Job, JobStatus, Sweep
from shared.settings import Settings
from shared.errors import SpecError
from shared.spec import DataInfo, JobSpec, resolve_spec
from shared.sweeps import Grid, GridError, Row, aggregate, expand_grid, get_path, paper_grid

DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class SweepView:
    """A sweep as the API shows it: its jobs, their counts by status, the derived status, the table."""

    sweep: Sweep
    job_ids: list[str]
    counts: dict[str, int]
    status: str
    table: list[Row] | None = None


def build_grid(base: dict[str, Any], grid: Grid | None, preset: str | None, seeds: list[int] | None) -> Grid:
    """The grid to expand: `grid`, or the preset's grid over `seeds` with `grid`'s entries added or overriding."""
    if preset is None:
        if not grid:
            raise GridError("a sweep needs a grid ({field: [values]}) or a preset (table2, table3, alpha-beta)", "grid")
        if seeds is not None:
            raise GridError("seeds go with a preset; with a grid, put them in it: \"seed\": [0, 1, 2]", "seeds")
        return grid
    dataset = base.get("dataset")
    if not isinstance(dataset, str):
        raise SpecError("a preset needs the base spec's dataset", "base.dataset")
    return {**paper_grid(preset, dataset, DEFAULT_SEEDS if seeds is None else seeds), **(grid or {})}


def validate_cells(session: Session, user_id: int, base: dict[str, Any], grid: Grid) -> list[dict[str, Any]]:
    """Every cell's spec, each parsed and resolved; the first that cannot run raises a SpecError
    whose field is `cells[i].<field>` and whose message names the cell's grid values."""
    specs = expand_grid(base, grid)
    infos: dict[str, DataInfo | None] = {}
    for index, spec in enumerate(specs):
        try:
            parsed = JobSpec.parse(spec)
            if parsed.dataset not in infos:
                infos[parsed.dataset] = jobs._data_info(session, user_id, parsed.dataset)
            resolve_spec(parsed, infos[parsed.dataset])
        except SpecError as exc:
            values = ", ".join(f"{name}={get_path(spec, name)}" for name in grid)
            raise SpecError(f"cell {index} of {len(specs)} ({values}): {exc.message}", f"cells[{index}].{exc.field}") from exc
    return specs


def create_sweep(
    session: Session, user_id: int, base: dict[str, Any], settings: Settings, *,
    grid: Grid | None = None, preset: str | None = None, seeds: list[int] | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> SweepView:
    """Validate every cell, then store the sweep and one queued job per cell; all or nothing."""
    grid = build_grid(base, grid, preset, seeds)
    specs = validate_cells(session, user_id, base, grid)
    active = session.exec(
        select(func.count()).select_from(Job).where(Job.user_id == user_id, col(Job.status).in_(ACTIVE))
    ).one()
    room = settings.max_active_jobs_per_user - active
    if len(specs) > room:
        raise jobs.LimitError(
            f"the sweep has {len(specs)} jobs, but you may queue only {max(room, 0)} more "
            f"({active} of your {settings.max_active_jobs_per_user} queued or running jobs are taken); "
            "use fewer values or seeds, or wait for running jobs to finish", field="grid",
        )
    sweep = Sweep(user_id=user_id, base=base, grid=grid)
    session.add(sweep)
    session.commit()
    session.refresh(sweep)
    try:
        for spec in specs:
            jobs.create_job(session, user_id, spec, settings, sweep_id=sweep.id, enqueue=enqueue)
    except BaseException:
        _undo(session, user_id, sweep.id, settings)
        raise
    return view(session, sweep)


def _undo(session: Session, user_id: int, sweep_id: str, settings: Settings) -> None:
    """Remove what a failed creation left: its queued jobs and the sweep (a job a worker
    already took is cancelled, and the sweep kept with it)."""
    session.rollback()
    session.execute(delete(Job).where(Job.sweep_id == sweep_id, Job.status == JobStatus.queued))
    session.commit()
    taken = session.exec(select(Job.id).where(Job.sweep_id == sweep_id)).all()
    for job_id in taken:
        _cancel(session, user_id, job_id, settings)
    if not taken:
        session.execute(delete(Sweep).where(Sweep.id == sweep_id))
        session.commit()


def get_sweep(session: Session, user_id: int, sweep_id: str) -> Sweep:
    """The caller's sweep; NotFound for an unknown id and for another user's alike."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.user_id != user_id:
        raise jobs.NotFound(f"no sweep {sweep_id!r} (GET /v1/sweeps lists yours)", field="id")
    return sweep


def sweep_jobs(session: Session, sweep_id: str) -> list[Job]:
    """The sweep's jobs in the order of its cells (creation order)."""
    query = select(Job).where(Job.sweep_id == sweep_id).order_by(col(Job.created_at), col(Job.id))
    return list(session.exec(query))


def view(session: Session, sweep: Sweep) -> SweepView:
    """The sweep with its jobs, status and table (one row per cell without the seed)."""
    members = sweep_jobs(session, sweep.id)
    counts = _counts(job.status for job in members)
    rows = aggregate([_job_dict(job) for job in members], sweep.grid)
    return SweepView(sweep, [job.id for job in members], counts, derive_status(counts), rows)


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
    except jobs.JobFinished:
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


def _job_dict(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "spec": job.spec, "result": job.result}

