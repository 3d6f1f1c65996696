"""A job's metric events as Server-Sent Events: catch up, then follow the stream live.

An open stream holds no thread and no database connection while it waits: it blocks in an
async XREAD on a Redis connection of its own (`LiveStream`). Every `sse_recheck_s` it asks
the database, in a short session on a thread, whether its API key is still live and its job
finished. The first check comes after a random part of that period, so that streams opened
together spread their checks; at most RECHECKS_AT_ONCE checks run at once per process, on
threads of their own, so that thousands of streams never crowd requests out of the pool.

The stream ends after the `done` event; or, once the job is seen finished, when nothing more
arrives (within ANNOUNCE_GRACE_S when it finished while the stream was open, since its
`done` event follows the database's commit). A revoked key (or a deleted job) ends it with
one last event, `event: refused`, whose data is the error as the API answers it:

    event: refused
    data: {"error": {"code": "unauthorized", "message": "...", "field": null, "status": 401}}
"""

import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from api.auth import live_key
from api.deps import authenticate_digest
from api.errors import error_body, error_parts
from shared.db import get_engine
from shared.jobs import check_stream_cursor, get_job, read_metrics
from shared.models import FINISHED, ApiKey, Job
from shared.settings import Settings
from shared.store import ObjectStore
from shared.errors import NoisyfitError, StreamUnavailable
from shared.stream import LiveStream, MetricsStream, encode

log = logging.getLogger(__name__)
PAGE = 500
RECHECKS_AT_ONCE = 4
ANNOUNCE_GRACE_S = 2.0  # a job seen finished: how long its `done` event may still take to arrive
_rechecks: RunVar[CapacityLimiter] = RunVar("sse_rechecks")  # one limiter per event loop


def _recheck_limiter() -> CapacityLimiter:
    try:
        return _rechecks.get()
    except LookupError:
        _rechecks.set(limiter := CapacityLimiter(RECHECKS_AT_ONCE))
        return limiter


def format_event(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\ndata: {encode(event)}\n\n"


def format_refusal(error: NoisyfitError) -> str:
    status, code, message, field, _headers = error_parts(error)
    return f"event: refused\ndata: {json.dumps(error_body(code, message, field, status=status))}\n\n"


def event_response(
    job: Job, after: str | None, last_event_id: str | None, key_digest: str, *,
    stream: MetricsStream, store: ObjectStore, settings: Settings,
) -> StreamingResponse:
    """The response of an event-stream route (the API's, the dashboard's): the caller's `job`,
    followed for as long as the key with hash `key_digest` stays live."""
    if last_event_id:
        check_stream_cursor(last_event_id, "Last-Event-ID")
    body = job_events(job.id, job.status in FINISHED, last_event_id or after, key_digest,
                      stream=stream, store=store, settings=settings)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def job_events(
    job_id: str, finished: bool, after: str | None, key_digest: str, *,
    stream: MetricsStream, store: ObjectStore, settings: Settings,
) -> AsyncIterator[str]:
    """Read the first page now (so an unreachable stream answers 503 before any byte is sent),
    and return the generator of the rest: it ends after the `done` event, or once the job is
    finished and nothing more is to come; idle, it sends a heartbeat comment."""
    first, cursor = read_metrics(job_id, after, PAGE, stream=stream, store=store)
    follow = _Follow(job_id, finished, key_digest, stream, store, settings)
    return follow.run(first, cursor)


class _Follow:
    def __init__(self, job_id: str, finished: bool, key_digest: str,
                 stream: MetricsStream, store: ObjectStore, settings: Settings):
        self.job_id, self.finished, self.key_digest = job_id, finished, key_digest
        self.stream, self.store, self.settings = stream, store, settings
        self.readable = select(Job.status).join(ApiKey, col(ApiKey.user_id) == Job.user_id).where(
            Job.id == job_id, live_key(key_digest))

    async def run(self, page: list[dict[str, Any]], cursor: str | None) -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        try:
            while page:  # catch up (from metrics.jsonl too, when the stream was trimmed)
                for event in page:
                    yield format_event(event)
                    if event.get("type") == "done":
                        return
                page, cursor = await run_in_threadpool(
                    read_metrics, self.job_id, cursor, PAGE, stream=self.stream, store=self.store)
            async with aclosing(self._live(cursor)) as live:
                async for chunk in live:
                    yield chunk
        except StreamUnavailable:
            log.warning("metrics stream of job %s lost; ending its event stream", self.job_id)
        except NoisyfitError as refused:
            yield format_refusal(refused)
        except SQLAlchemyError:
            log.warning("the database did not answer the event stream of job %s; ending it", self.job_id)

    async def _live(self, cursor: str | None) -> AsyncIterator[str]:
        heartbeat_s, recheck_s = self.settings.sse_heartbeat_s, self.settings.sse_recheck_s
        now = time.monotonic()
        heartbeat_due, recheck_due = now + heartbeat_s, now + random.uniform(0.2, 1.0) * recheck_s
        end_after = now if self.finished else math.inf  # an empty read past this ends the stream
        async with LiveStream(self.settings.redis_url, self.stream.key(self.job_id), heartbeat_s) as live:
            while True:
                if time.monotonic() >= recheck_due:
                    finished = await to_thread.run_sync(self._recheck, limiter=_recheck_limiter())
                    if finished and end_after == math.inf:  # its status and done events follow the commit
                        end_after = time.monotonic() + ANNOUNCE_GRACE_S
                    recheck_due = time.monotonic() + recheck_s
                wake = min(heartbeat_due, recheck_due, end_after)
                page = await live.read(cursor, PAGE, block_s=wake - time.monotonic())
                if not page and time.monotonic() >= end_after:
                    return
                for event in page:
                    yield format_event(event)
                    cursor = event["id"]
                    if event.get("type") == "done":
                        return
                if not page and heartbeat_due <= wake:
                    yield ": heartbeat\n\n"
                if page or heartbeat_due <= wake:
                    heartbeat_due = time.monotonic() + heartbeat_s

    def _recheck(self) -> bool:
        """Whether the job finished: one query while the key may still read the job. Once it may
        not, a request's own checks raise what a request would get (Unauthorized, NotFound)."""
        with Session(get_engine(self.settings.database_url)) as session:
            status = session.exec(self.readable).first()
            if status is None:
                get_job(session, authenticate_digest(session, self.key_digest).id, self.job_id)
            return status in FINISHED
