"""Fair use of the workers: which queued job runs next, how long a job may run, and how much
run time a user may use.

- Next job: a train message is a "work available" signal. The worker takes the oldest queued
  job of the user with the fewest running jobs, and among those the one whose jobs started
  least recently (never first), then whose oldest job waits longest; so one user's long
  queue cannot starve another's. Every queued job was sent a message, so none is left behind.
- Time limit: a job runs at most its spec's time_limit_s (0: settings.max_job_seconds, which
  also caps it), counted from its first start (started_at), waits after a requeue included.
- Quota: a user's job run time in the last 24 h (each job from started_at to finished_at, or
  to now while unfinished) may reach settings.job_time_quota_s; then submissions are refused
  until enough of it leaves the window.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import false, func, or_
from sqlmodel import Session, col, select

from shared.errors import SpecError, TimeLimitExceeded
from shared.models import Job, JobStatus
from shared.settings import Settings

QUOTA_WINDOW = timedelta(hours=24)


def limit_s(spec_limit: int, settings: Settings) -> int:
    """The seconds a job with this resolved time_limit_s may run."""
    return min(spec_limit, settings.max_job_seconds) if spec_limit else settings.max_job_seconds


def deadline(job: Job, settings: Settings) -> tuple[datetime, int]:
    """When a started job's time is up (its limit counts from its first start), and the limit."""
    limit = limit_s(job.spec.get("time_limit_s", 0), settings)
    return aware(job.started_at) + timedelta(seconds=limit), limit


def check_time_limit(resolved: dict[str, Any], settings: Settings) -> None:
    if resolved["time_limit_s"] > settings.max_job_seconds:
        raise SpecError(f"time_limit_s {resolved['time_limit_s']} is more than this service allows; "
                        f"use at most {settings.max_job_seconds} (or leave it out)", "time_limit_s")


def time_limit_error(limit: int, settings: Settings) -> dict[str, str]:
    """The error of a job stopped at its time limit: what to change."""
    room = f"raise time_limit_s (up to {settings.max_job_seconds}), or " if limit < settings.max_job_seconds else ""
    error = TimeLimitExceeded(f"the job ran past its time limit of {limit} s (counted from its first start) and "
                              f"was stopped; {room}train fewer epochs or with a larger batch_size")
    return {"code": error.code, "message": error.message}


@dataclass(frozen=True)
class Usage:
    used_s: float  # run time in the window ending now
    frees_at: datetime  # when it falls below the quota, if unfinished jobs ended now


def time_used(session: Session, user_id: int, now: datetime, quota_s: float) -> Usage:
    since = now - QUOTA_WINDOW
    rows = session.exec(select(Job.started_at, Job.finished_at).where(
        Job.user_id == user_id, col(Job.started_at).is_not(None),
        or_(col(Job.finished_at).is_(None), col(Job.finished_at) > since),
    )).all()
    spans = [(aware(start), min(aware(end), now) if end is not None else now) for start, end in rows]

    def used(window_start: datetime) -> float:
        return sum(max(0.0, (end - max(start, window_start)).total_seconds()) for start, end in spans)

    low, high = since, now  # used() falls as the window's start moves on: search when it drops below quota_s
    if used(low) >= quota_s:
        for _ in range(40):
            middle = low + (high - low) / 2
            low, high = (middle, high) if used(middle) >= quota_s else (low, middle)
    return Usage(used(since), high + QUOTA_WINDOW)


def aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def next_queued(session: Session, settings: Settings) -> str | None:
    """The queued job that should run next (module docstring), or None when none waits."""
    startable = [Job.status == JobStatus.queued, Job.cancel_requested == false(), Job.attempts < settings.max_attempts]
    waiting = dict(session.exec(select(Job.user_id, func.min(Job.created_at)).where(*startable)
                                .group_by(Job.user_id)).all())  # each waiting user's oldest queued job
    if not waiting:
        return None
    running = dict(session.exec(select(Job.user_id, func.count()).where(
        Job.status == JobStatus.running, col(Job.user_id).in_(waiting)).group_by(Job.user_id)).all())
    started = dict(session.exec(select(Job.user_id, func.max(Job.started_at)).where(
        col(Job.user_id).in_(waiting)).group_by(Job.user_id)).all())
    never = datetime.min
    user = min(waiting, key=lambda u: (running.get(u, 0), _naive(started.get(u)) or never, _naive(waiting[u])))
    return session.exec(select(Job.id).where(*startable, Job.user_id == user)
                        .order_by(col(Job.created_at), col(Job.id)).limit(1)).first()


def _naive(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=None) if moment is not None else None
