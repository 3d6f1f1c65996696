"""Live metric events of a job: one Redis stream per job, read with a cursor (the stream id).

An event is a JSON object with a `type` (`status`, `step`, `epoch`, `fold`, `done`; `fold`: an
epoch of a cross-fitting model, worker/cross_fit.py); it is stored
in the field `data`, and returned with its stream id as `id`, the cursor of the next read.
A stream keeps about `stream_maxlen` events and expires `stream_ttl_s` after its `done`
event; `covers` tells whether it still holds every event after a cursor, so that a reader
can fall back to the job's stored metrics.jsonl when it does not.

Events are strict JSON: a NaN or infinite figure (a diverged run's loss) is stored as null
(`finite`), since JSON, browsers' JSON.parse and PostgreSQL's json type have no such numbers.
`LiveStream` follows one stream without a thread (redis.asyncio), for Server-Sent Events.
"""

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from types import TracebackType
from typing import Any

import redis
import redis.asyncio

from shared.errors import StreamUnavailable
from shared.settings import Settings, get_settings

Event = dict[str, Any]



@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StreamUnavailable(f"the metrics stream cannot be reached: {exc}") from exc


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
MAX_ID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit numbers
CURSOR_FORM = "an event's 'id', two numbers joined by '-' such as '1718000000000-0'"


def stream_id(cursor: str) -> tuple[int, int]:
    """Parse a stream id `ms-seq` (or `ms`, meaning `ms-0`); ValueError when Redis would refuse it."""
    match = _STREAM_ID.fullmatch(cursor)
    if match is None or max(int(match[1]), int(match[2] or 0)) > MAX_ID_PART:
        raise ValueError(f"not a stream cursor: {cursor!r}; one is {CURSOR_FORM}")
    return int(match[1]), int(match[2] or 0)


def _after(cursor: str) -> str | None:
    """The first stream id after the cursor (an inclusive XRANGE start); None past the last one."""
    ms, seq = stream_id(cursor)
    if seq < MAX_ID_PART:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < MAX_ID_PART else None


def finite(value: Any) -> Any:
    """`value` with every NaN and ±Infinity float, however deeply nested, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def encode(event: Event) -> str:
    """An event as strict JSON (non-finite figures as null): the one way events are serialised."""
    return json.dumps(finite(event), allow_nan=False)


class MetricsStream:
    def __init__(self, client: redis.Redis, key_prefix: str = "", maxlen: int = 10_000, ttl_s: int = 7 * 86400):
        self.client = client
        self.key_prefix = key_prefix
        self.maxlen = maxlen
        self.ttl_s = ttl_s

    def key(self, job_id: str) -> str:
        return f"{self.key_prefix}noisyfit:jobs:{job_id}:events"

    def publish(self, job_id: str, *events: Event) -> str:
        """Append events at once (a reader sees all or none); returns the last one's id. A `done`
        event starts the stream's expiry."""
        key = self.key(job_id)
        with _redis_errors():
            pipe = self.client.pipeline()
            for event in events:
                pipe.xadd(key, {"data": encode(event)}, maxlen=self.maxlen, approximate=True)
            if any(event.get("type") == "done" for event in events):
                pipe.expire(key, self.ttl_s)
            return pipe.execute()[len(events) - 1]

    def read(self, job_id: str, after: str | None = None, count: int = 100) -> tuple[list[Event], str | None]:
        """Up to `count` events after the cursor, and the cursor to read on from."""
        start = "-" if after is None else _after(after)
        if start is None:
            return [], after
        with _redis_errors():
            entries = self.client.xrange(self.key(job_id), min=start, max="+", count=count)
        events = [_decode(entry) for entry in entries]
        return events, events[-1]["id"] if events else after

    def covers(self, job_id: str, after: str | None) -> bool:
        """Whether the stream still holds every event after the cursor (none trimmed or expired)."""
        with _redis_errors():
            try:
                info = self.client.xinfo_stream(self.key(job_id))
            except redis.ResponseError:  # no such key: expired, or nothing published yet
                return False
        added = info.get("entries-added", info["length"])
        if added == info["length"]:
            return True
        first = info.get("first-entry")
        return first is not None and after is not None and stream_id(after) >= stream_id(first[0])

    def delete(self, job_id: str) -> None:
        with _redis_errors():
            self.client.delete(self.key(job_id))


class LiveStream:
    """One job's stream, followed without a thread: `read` may block in XREAD on a redis.asyncio
    connection of this reader's own, released when the reader is closed (`async with`)."""

    def __init__(self, redis_url: str, key: str, longest_block_s: float):
        self.key = key
        self.client = redis.asyncio.Redis.from_url(
            redis_url, decode_responses=True, single_connection_client=True,
            socket_connect_timeout=3, socket_timeout=longest_block_s + 15,
        )

    async def read(self, after: str | None, count: int = 100, block_s: float = 0.0) -> list[Event]:
        """Events after the cursor; with `block_s` > 0, waiting up to that long for the first one."""
        block = max(1, round(block_s * 1000)) if block_s > 0 else None  # BLOCK 0 would wait forever
        cursor = "0-0" if after is None else "{}-{}".format(*stream_id(after))
        with _redis_errors():
            reply = await self.client.xread({self.key: cursor}, count=count, block=block)
        return [_decode(entry) for _key, entries in reply for entry in entries]

    async def __aenter__(self) -> "LiveStream":
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.client.aclose()


def _decode(entry: tuple[str, dict[str, str]]) -> Event:
    entry_id, fields = entry
    return {**json.loads(fields["data"]), "id": entry_id}


@lru_cache
def redis_client(redis_url: str, socket_timeout_s: float = 30.0) -> redis.Redis:
    return redis.Redis.from_url(
        redis_url, decode_responses=True, socket_connect_timeout=3, socket_timeout=socket_timeout_s
    )


def get_stream(settings: Settings | None = None) -> MetricsStream:
    settings = settings or get_settings()
    client = redis_client(settings.redis_url, settings.sse_heartbeat_s + 15)
    return MetricsStream(client, settings.redis_key_prefix, settings.stream_maxlen, settings.stream_ttl_s)
