"""A job's metric events as Server-Sent Events: catch up, then follow the stream live."""

import json
import logging
from collections.abc import Iterator
from typing import Any

from sqlmodel import Session, select

from shared.db import get_engine
from shared.jobs import read_metrics
from shared.models import FINISHED, Job
from shared.settings import Settings
from shared.store import ObjectStore
from shared.errors import StreamUnavailable
from shared.stream import MetricsStream

log = logging.getLogger(__name__)
PAGE = 500


def format_event(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\ndata: {json.dumps(event)}\n\n"


def job_events(
    job_id: str, after: str | None, *, stream: MetricsStream, store: ObjectStore, settings: Settings
) -> Iterator[str]:
    """Read the first page now (so an unreachable stream answers 503 before any byte is sent),
    and return the generator of the rest: it ends after the `done` event, or once the job is
    finished and nothing more is to come; idle, it sends a heartbeat comment."""
    first, cursor = read_metrics(job_id, after, PAGE, stream=stream, store=store)
    return _follow(job_id, first, cursor, stream=stream, store=store, settings=settings)


def _follow(job_id: str, page: list[dict[str, Any]], cursor: str | None, *, stream: MetricsStream,
            store: ObjectStore, settings: Settings) -> Iterator[str]:
    yield "retry: 3000\n\n"
    try:
        while page:  # catch up (from metrics.jsonl too, when the stream was trimmed)
            for event in page:
                yield format_event(event)
                if event.get("type") == "done":
                    return
            page, cursor = read_metrics(job_id, cursor, PAGE, stream=stream, store=store)
        while True:
            if not page and _finished(job_id, settings):
                page, _ = stream.read(job_id, cursor, PAGE)  # anything published before it finished
                if not page:
                    return
            for event in page:
                yield format_event(event)
                cursor = event["id"]
                if event.get("type") == "done":
                    return
            if not page:
                yield ": heartbeat\n\n"
            page = stream.wait(job_id, cursor, block_s=settings.sse_heartbeat_s)
    except StreamUnavailable:
        log.warning("metrics stream of job %s lost; ending its event stream", job_id)


def _finished(job_id: str, settings: Settings) -> bool:
    with Session(get_engine(settings.database_url)) as session:
        return session.exec(select(Job.status).where(Job.id == job_id)).one() in FINISHED
