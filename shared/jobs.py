"""The job service: what the API routes and the worker do to jobs.

Every state change is one `UPDATE job ... WHERE status = ...` (compare-and-set), so two
workers, a late message or a duplicate delivery can never move a job twice:

    queued ──start_attempt──> running ──finish──> succeeded | failed | cancelled
      ^                          │
      └──────requeue_stale───────┘   (lease lapsed: the worker died; failed after max_attempts)
    queued ──resend_waiting──> queued (its message sent again when no worker took it for long)
    queued ──request_cancel──> cancelled;  running ──request_cancel──> cancel_requested flag
    succeeded | failed | cancelled ──delete_job──> gone (artifacts, stream, row)

A train message is a "work available" signal: take_next starts the fairest queued job
(shared.scheduling), whichever message brought the worker; every queued job was sent one.
take_siblings starts with it the queued jobs of its sweep that can train together with it
(shared.fusion), each with its own lease.

Functions take an open Session and commit their own change. Status changes are announced on
the job's metrics stream (`status` events, and `done` once finished), best-effort.
"""

import base64
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, delete, false, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from shared.catalog import DATASETS
from shared.locks import lock_user
from shared import fusion, scheduling
from shared.models import ACTIVE, FINISHED, DatasetRow, Job, JobStatus, utcnow
from shared.queue import claim_resends, send_train
from shared.settings import Settings
from shared.errors import (
    DatasetUnavailable,
    IdempotencyConflict,
    InvalidCursor,
    JobActive,
    JobFinished,
    LimitError,
    NotFound,
    ObjectMissing,
    QueueUnavailable,
    SpecError,
    StreamUnavailable,
    TimeQuotaExceeded,
)
from shared.rules import parse_loss
from shared.spec import DataInfo, JobSpec, ResolvedSpec, paper_preset, resolve_spec
from shared.store import JOB_ID, ObjectStore, artifact_key, job_prefix
from shared.stream import CURSOR_FORM, MetricsStream, finite, get_stream, stream_id
from shared.workers import read_fleet

log = logging.getLogger(__name__)

TAKE_TRIES = 5
SIBLINGS_READ = 20  # queued sweep jobs looked at per sibling sought

METRICS_FILE = "metrics.jsonl"
DATASET_ID = re.compile(r"ds_[0-9a-f]{1,64}")


# ---------------------------------------------------------------- the user's side


def create_job(
    session: Session,
    user_id: int,
    spec: JobSpec | dict[str, Any],
    settings: Settings,
    *,
    idempotency_key: str | None = None,
    sweep_id: str | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> tuple[Job, bool]:
    """Validate, resolve, store and enqueue a job; returns (job, created).

    The same `idempotency_key` with the same resolved spec returns the stored job
    (created=False); with another spec it raises IdempotencyConflict.
    """
    spec = spec if isinstance(spec, JobSpec) else JobSpec.parse(spec)
    lock_user(session, user_id)  # until the commit: the data set and the job limit stay as read
    try:
        info = _data_info(session, user_id, spec.dataset)
        resolved = resolve_spec(spec, info).to_json()
        scheduling.check_time_limit(resolved, settings)
        request_hash = _request_hash(resolved, sweep_id)
        existing = _replay(session, user_id, idempotency_key, request_hash) if idempotency_key is not None else None
        if existing is not None:
            session.commit()
            return existing, False
        require_holder(loaded_dataset(info, spec.dataset), settings)
        check_quota(session, user_id, settings)
        active = count_active(session, user_id)
        if active >= settings.max_active_jobs_per_user:
            raise LimitError(
                f"you have {active} queued or running jobs, the most allowed; wait for some to finish or cancel some"
            )
        job = new_job(user_id, resolved, sweep_id=sweep_id, idempotency_key=idempotency_key)
        session.add(job)
        session.commit()
    except IntegrityError:  # the same key, posted concurrently
        session.rollback()
        existing = _replay(session, user_id, idempotency_key, request_hash) if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    except BaseException:
        session.rollback()
        raise
    session.refresh(job)
    send_job(session, job.id, settings, enqueue)
    return job, True


def send_job(session: Session, job_id: str, settings: Settings, enqueue: Callable[[str], None] | None = None) -> None:
    """Enqueue a stored queued job and announce it. When the queue cannot be reached, the job is
    deleted (unless a worker took it meanwhile) and QueueUnavailable raised."""
    try:
        (enqueue or (lambda i: send_train(i, settings)))(job_id)
    except Exception as exc:
        session.execute(delete(Job).where(Job.id == job_id, Job.status == JobStatus.queued))
        session.commit()
        raise QueueUnavailable(f"the job queue cannot be reached, so no job was created; retry later ({exc})")
    _announce(settings, job_id, JobStatus.queued)


def new_job(user_id: int, resolved: dict[str, Any], *, sweep_id: str | None = None,
            idempotency_key: str | None = None) -> Job:
    """A queued job's row, not yet added to a session."""
    return Job(user_id=user_id, spec=resolved, progress=_progress(0, resolved["epochs"]), sweep_id=sweep_id,
               idempotency_key=idempotency_key, request_hash=_request_hash(resolved, sweep_id))


def count_active(session: Session, user_id: int) -> int:
    """The user's queued and running jobs."""
    query = select(func.count()).select_from(Job).where(Job.user_id == user_id, col(Job.status).in_(ACTIVE))
    return session.exec(query).one()


def check_quota(session: Session, user_id: int, settings: Settings) -> None:
    """TimeQuotaExceeded when the user's job run time in the last 24 h reached settings.job_time_quota_s."""
    if not settings.job_time_quota_s:
        return
    now = utcnow()
    usage = scheduling.time_used(session, user_id, now, settings.job_time_quota_s)
    if usage.used_s < settings.job_time_quota_s:
        return
    wait = max(1, math.ceil((usage.frees_at - now).total_seconds()))
    raise TimeQuotaExceeded(
        f"your jobs ran {usage.used_s:.0f} s in the last 24 h, your quota is {settings.job_time_quota_s} s; "
        f"submit again after {usage.frees_at.isoformat(timespec='seconds')} (in {wait} s, if your running jobs "
        "end now), or cancel running jobs", retry_after_s=wait,
    )


def loaded_dataset(info: DataInfo | None, name: str) -> str:
    """The data set a worker loads to train on `name`: a version's root, else `name` itself."""
    return info.root if info is not None and info.root else name


def require_holder(dataset: str, settings: Settings) -> None:
    """Refuse a data set that workers are live for but none holds (DatasetUnavailable, with the
    install step); with no live worker at all, a job is accepted and waits for one."""
    try:
        fleet = read_fleet(settings)
    except StreamUnavailable as exc:
        raise QueueUnavailable(f"the job queue cannot be reached, so no job was created; retry later ({exc})") from exc
    message = fleet.unavailable(dataset, settings)
    if message is not None:
        raise DatasetUnavailable(message, field="dataset")


def get_job(session: Session, user_id: int, job_id: str) -> Job:
    """The caller's job; NotFound for an unknown id and for another user's job alike."""
    job = session.get(Job, job_id) if JOB_ID.fullmatch(job_id) else None  # a malformed id never reaches SQL
    if job is None or job.user_id != user_id:
        raise NotFound(f"no job {job_id!r} (GET /v1/jobs lists yours)", field="id")
    return job


def list_jobs(
    session: Session, user_id: int, *, status: JobStatus | None = None, dataset: str | None = None,
    loss: str | None = None, cursor: str | None = None, limit: int = 50,
) -> tuple[list[Job], str | None]:
    """The user's jobs, newest first, and the cursor of the next page (None on the last).
    `dataset` and `loss` keep the jobs whose resolved spec names them (a loss in any spelling)."""
    query = select(Job).where(Job.user_id == user_id)
    if status is not None:
        query = query.where(Job.status == status)
    if dataset is not None:
        query = query.where(_spec_field("dataset") == dataset)
    if loss is not None:
        query = query.where(_spec_field("loss") == parse_loss(loss).name)
    if cursor is not None:
        created_at, job_id = _decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)
    jobs = list(session.exec(query))
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    return jobs, _encode_cursor(jobs[-1])


def preset_spec(session: Session, job: Job) -> dict[str, Any] | None:
    """The paper's preset for the job's data set, loss and noise (shared.spec.paper_preset), as
    JSON; None when the stored spec no longer resolves (an older spec, a deleted upload)."""
    try:
        resolved = ResolvedSpec.model_validate(job.spec)
        return paper_preset(resolved, _data_info(session, job.user_id, resolved.dataset)).to_json()
    except (ValidationError, SpecError):
        return None


def resolve_for(session: Session, user_id: int, spec: JobSpec) -> ResolvedSpec:
    """`spec` resolved for the user as create_job resolves it (the presets filled in); nothing is stored."""
    return resolve_spec(spec, _data_info(session, user_id, spec.dataset))


def request_cancel(session: Session, user_id: int, job_id: str, settings: Settings) -> Job:
    """Cancel a queued job at once; ask a running job's worker to stop. Cancelling twice is fine."""
    job = get_job(session, user_id, job_id)
    now = utcnow()
    if _cas(session, job_id, [Job.status == JobStatus.queued],
            status=JobStatus.cancelled, cancel_requested=True, finished_at=now):
        _announce(settings, job_id, JobStatus.cancelled)
    else:
        _cas(session, job_id, [Job.status == JobStatus.running], cancel_requested=True)
    session.refresh(job)
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        raise JobFinished(f"job {job_id} already {job.status}; there is nothing to cancel")
    return job


def delete_job(session: Session, user_id: int, job_id: str, *, store: ObjectStore, stream: MetricsStream) -> None:
    """Delete a finished job: its artifacts, its metrics stream, and last its row, so that a
    store or Redis failure part-way leaves the job listed and deleting it again completes."""
    job = get_job(session, user_id, job_id)
    if job.status not in FINISHED:
        raise JobActive(f"job {job_id} is {job.status}; cancel it first (POST /v1/jobs/{job_id}/cancel), "
                        "then delete it once it is cancelled")
    store.delete_prefix(job_prefix(job_id))
    stream.delete(job_id)
    session.execute(delete(Job).where(Job.id == job_id, col(Job.status).in_(FINISHED)))
    session.commit()


def read_metrics(
    job_id: str, after: str | None, limit: int, *, stream: MetricsStream, store: ObjectStore
) -> tuple[list[dict[str, Any]], str | None]:
    """Metric events after the cursor, from the stream, or from metrics.jsonl once it was trimmed or expired."""
    if after is not None:
        check_stream_cursor(after)
    if not stream.covers(job_id, after):
        try:
            lines = store.get_bytes(artifact_key(job_id, METRICS_FILE)).decode().splitlines()
        except ObjectMissing:
            lines = None
        if lines is not None:
            return _events_after(lines, after, limit)
    return stream.read(job_id, after, limit)


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: 0 for status in JobStatus} | {status: n for status, n in rows}


# ---------------------------------------------------------------- the worker's side


def start_attempt(session: Session, job_id: str, worker_id: str, settings: Settings) -> bool:
    """Take the job for `worker_id`: a queued job, or a running one whose lease lapsed.

    Counts the attempt and sets started_at the first time. False when another worker holds
    a live lease, the job is finished or cancelled, or it used up settings.max_attempts:
    the caller then drops the task.
    """
    now = utcnow()
    taken = _cas(
        session, job_id,
        [
            Job.cancel_requested == false(),
            Job.attempts < settings.max_attempts,
            or_(Job.status == JobStatus.queued,
                and_(Job.status == JobStatus.running, Job.lease_expires_at < now)),
        ],
        status=JobStatus.running, lease_owner=worker_id, lease_expires_at=now + _ttl(settings),
        attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now),
    )
    if taken:
        attempts = session.exec(select(Job.attempts).where(Job.id == job_id)).one()
        _announce(settings, job_id, JobStatus.running, attempt=attempts)
    return taken


def take_next(session: Session, message_job_id: str, worker_id: str, settings: Settings,
              admit: Callable[[Session, Job], None] | None = None) -> str | None:
    """Take the job a worker should train now, on a train message (a "work available" signal):
    the fairest queued job (shared.scheduling.next_queued), or else the message's own job when
    start_attempt takes it (a running job whose lease lapsed). None: nothing to take.

    `admit` sees each job before it is taken, and raises to leave it queued (a packing worker
    without room for it: worker.packing); the exception reaches the caller."""
    for _ in range(TAKE_TRIES):  # each miss is a job another worker took meanwhile
        job_id = scheduling.next_queued(session, settings)
        if job_id is None:
            break
        if admit is not None:
            admit(session, session.get(Job, job_id))
        if start_attempt(session, job_id, worker_id, settings):
            return job_id
    own = session.get(Job, message_job_id)
    if own is None or own.status not in ACTIVE:
        return None
    if admit is not None:
        admit(session, own)
    return message_job_id if start_attempt(session, message_job_id, worker_id, settings) else None


def take_siblings(session: Session, job_id: str, worker_id: str, settings: Settings,
                  fits: Callable[[str, ResolvedSpec], bool] | None = None) -> list[str]:
    """Queued jobs of the sweep of the job `worker_id` just took that can train together with it
    (shared.fusion), oldest first, each taken for `worker_id` (start_attempt), at most
    settings.fuse_max_runs - 1; none when settings.fuse is off or the job is of no sweep.
    `fits(id, spec)` is asked before each is taken: False leaves it queued and takes no more (a
    GPU worker's group that would no longer fit its memory: worker.packing)."""
    job = session.get(Job, job_id)
    room = settings.fuse_max_runs - 1
    if not settings.fuse or room < 1 or job is None or job.sweep_id is None:
        return []
    spec = ResolvedSpec.model_validate(job.spec)
    if fusion.refusal(spec) is not None:
        return []
    waiting = session.exec(select(Job.id, Job.spec).where(
        Job.sweep_id == job.sweep_id, Job.user_id == job.user_id, Job.status == JobStatus.queued,
        Job.cancel_requested == false(), Job.attempts < settings.max_attempts,
    ).order_by(col(Job.created_at), col(Job.id)).limit(SIBLINGS_READ * room)).all()
    taken = []
    for sibling, sibling_spec in waiting:
        candidate = ResolvedSpec.model_validate(sibling_spec)
        if fusion.mismatch(spec, candidate) is not None:
            continue
        if fits is not None and not fits(sibling, candidate):
            break
        if start_attempt(session, sibling, worker_id, settings):
            taken.append(sibling)
            if len(taken) == room:
                break
    return taken


def renew_lease(session: Session, job_id: str, worker_id: str, settings: Settings) -> bool:
    """Extend the lease (the worker's heartbeat); False when the worker no longer holds the job."""
    return _cas(session, job_id, _held_by(worker_id), lease_expires_at=utcnow() + _ttl(settings))


def update_progress(session: Session, job_id: str, worker_id: str, epoch: int, epochs: int,
                    metrics: dict[str, Any]) -> bool:
    """Record the latest finished epoch and its figures (NaN/Infinity as null, which JSON can hold);
    False when the worker lost the job."""
    return _cas(session, job_id, _held_by(worker_id), progress=_progress(epoch, epochs, finite(metrics)))


@dataclass(frozen=True)
class Standing:
    """What a training process asks between steps: may it go on?"""

    held: bool  # its worker still holds the running job's lease
    cancel_requested: bool


def standing(session: Session, job_id: str, worker_id: str) -> Standing:
    row = session.exec(select(Job.status, Job.lease_owner, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return Standing(held=False, cancel_requested=False)
    status, owner, cancel = row
    return Standing(held=status == JobStatus.running and owner == worker_id, cancel_requested=bool(cancel))


def finish(
    session: Session, job_id: str, worker_id: str, status: JobStatus, settings: Settings, *,
    result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
) -> bool:
    """End a running job held by `worker_id`; False (and nothing changed) for a late or duplicate call.

    `result` is the summary (final_test_accuracy, best_test_accuracy, ...); `error` is
    {"code", "message"}. Publishes the `done` event.
    """
    if status not in FINISHED:
        raise ValueError(f"finish with one of {[s.value for s in FINISHED]}, not {status!r}")
    done = _cas(session, job_id, _held_by(worker_id), status=status, result=result, error=error,
                finished_at=utcnow(), lease_expires_at=None)
    if done:
        _announce(settings, job_id, status, result=result, error=error)
    return done


def requeue_stale(
    session: Session, settings: Settings, now: datetime | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> list[str]:
    """Running jobs whose lease lapsed (their worker died): queued again and re-sent, or
    cancelled when that was asked, or failed after settings.max_attempts. Returns the requeued ids."""
    now = now or utcnow()
    stale = session.exec(
        select(Job.id, Job.attempts, Job.cancel_requested)
        .where(Job.status == JobStatus.running, col(Job.lease_expires_at) < now)
    ).all()
    requeued = []
    for job_id, attempts, cancel in stale:
        lapsed = [Job.status == JobStatus.running, Job.lease_expires_at < now]
        if cancel:
            status: JobStatus = JobStatus.cancelled
            changes: dict[str, Any] = {"finished_at": now}
        elif attempts >= settings.max_attempts:
            status = JobStatus.failed
            changes = {"finished_at": now, "error": {
                "code": "too_many_attempts",
                "message": f"the job's worker stopped {attempts} times before it finished (out of memory?); "
                           "try a smaller batch_size or model",
            }}
        else:
            status, changes = JobStatus.queued, {}
        if not _cas(session, job_id, lapsed, status=status, lease_owner=None, lease_expires_at=None, **changes):
            continue
        _announce(settings, job_id, status, error=changes.get("error"))
        if status == JobStatus.queued:
            requeued.append(job_id)
            try:
                (enqueue or (lambda i: send_train(i, settings)))(job_id)
            except Exception:
                log.exception("could not re-send job %s; it stays queued", job_id)
    return requeued


def resend_waiting(
    session: Session, settings: Settings, now: datetime | None = None,
    enqueue: Callable[[str], None] | None = None,
) -> list[str]:
    """Queued jobs that no worker took within settings.resend_after_s of being queued and of their
    last send: sent again, as their message may be lost (Redis restarted without persistence, or
    the API died between storing a job and sending it). A duplicate message is harmless: a worker
    drops it after one look (start_attempt takes a job once). Returns the re-sent ids."""
    now = now or utcnow()
    waiting = session.exec(select(Job.id).where(
        Job.status == JobStatus.queued, col(Job.updated_at) < now - timedelta(seconds=settings.resend_after_s),
    ).order_by(col(Job.created_at))).all()
    resent = []
    for job_id in claim_resends(list(waiting), settings):
        try:
            (enqueue or (lambda i: send_train(i, settings)))(job_id)
        except Exception:
            log.exception("could not re-send job %s; it stays queued and is tried again later", job_id)
            continue
        resent.append(job_id)
    return resent


# ---------------------------------------------------------------- helpers


def _cas(session: Session, job_id: str, where: list[Any], **values: Any) -> bool:
    values.setdefault("updated_at", utcnow())
    result = session.execute(update(Job).where(Job.id == job_id, *where).values(**values))
    session.commit()
    return result.rowcount == 1


def _spec_field(name: str) -> Any:
    """A top-level string field of the stored resolved spec, as an SQL expression."""
    return col(Job.spec)[name].as_string()


def _held_by(worker_id: str) -> list[Any]:
    return [Job.status == JobStatus.running, Job.lease_owner == worker_id]


def _ttl(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.lease_ttl_s)


def _progress(epoch: int, epochs: int, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"epoch": epoch, "epochs": epochs, "metrics": metrics or {}}


def _announce(settings: Settings, job_id: str, status: JobStatus, **fields: Any) -> None:
    event = {"type": "status", "status": str(status), "time": utcnow().isoformat(),
             **{k: v for k, v in fields.items() if v is not None}}
    done = [{**event, "type": "done"}] if status in FINISHED else []
    try:
        get_stream(settings).publish(job_id, event, *done)
    except StreamUnavailable:
        log.warning("job %s is %s, but the metrics stream cannot be reached to say so", job_id, status)


def _replay(session: Session, user_id: int, key: str, request_hash: str) -> Job | None:
    job = session.exec(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key)).first()
    if job is not None and job.request_hash != request_hash:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for job {job.id} with another spec; use a new key",
            field="Idempotency-Key",
        )
    return job


def _request_hash(resolved: dict[str, Any], sweep_id: str | None) -> str:
    return _hash({"spec": resolved, "sweep_id": sweep_id})


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _data_info(session: Session, user_id: int, name: str) -> DataInfo | None:
    """None for a built-in data set (resolve_spec knows it); one of the user's, described: an
    upload, or a version (of a built-in data set: resolved as the built-in, see DataInfo)."""
    if name in DATASETS or not name.startswith("ds_"):
        return None
    ds = session.exec(select(DatasetRow).where(DatasetRow.id == name)).first() if DATASET_ID.fullmatch(name) else None
    if ds is None or ds.user_id != user_id:
        raise SpecError(f"no data set {name!r} of yours; GET /v1/datasets lists them", "dataset")
    if ds.root in DATASETS:
        family = DATASETS[ds.root].family
        return DataInfo(ds.num_classes, ds.channels, ds.size, ds.train_samples, family, builtin=True, root=ds.root)
    family = "mnist" if ds.channels == 1 else ("cifar100" if ds.num_classes > 10 else "cifar10")
    return DataInfo(ds.num_classes, ds.channels, ds.size, ds.train_samples, family, builtin=False)


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_LIST_CURSOR = 200  # characters; _encode_cursor writes about 100


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        if len(cursor) > MAX_LIST_CURSOR:
            raise ValueError("too long")
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise ValueError(cursor)
        return when.astimezone(timezone.utc), job_id
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidCursor("not a cursor of this list: pass the 'next' value of the previous page unchanged "
                            "(an opaque base64url string), or no cursor for the first page", "cursor") from exc


def check_stream_cursor(cursor: str, field: str = "after") -> None:
    """InvalidCursor unless `cursor` is a metric event's id."""
    try:
        stream_id(cursor)
    except ValueError as exc:
        raise InvalidCursor(f"not a metrics cursor: pass {CURSOR_FORM}, or the 'next' value of a metrics page, "
                            "or no cursor to start from the first event", field) from exc


def _events_after(lines: list[str], after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Events of metrics.jsonl after the cursor. Lines carry their stream `id`; one without gets `0-<line>`."""
    start = stream_id(after) if after else (-1, -1)
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        event = json.loads(line)
        event.setdefault("id", f"0-{number}")
        if stream_id(event["id"]) > start:
            events.append(event)
            if len(events) == limit:
                break
    return events, events[-1]["id"] if events else after
