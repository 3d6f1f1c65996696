"""Live metric events of a job: one Redis stream per job, read with a cursor (the stream id).

An event is a JSON object with a `type` (`status`, `step`, `epoch`, `done`); it is stored
in the field `data`, and returned with its stream id as `id`, the cursor of the next read.
A stream keeps about `stream_maxlen` events and expires `stream_ttl_s` after its `done`
event; `covers` tells whether it still holds every event after a cursor, so that a reader
can fall back to the job's stored metrics.jsonl when it does not.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import redis

from shared.errors import StreamUnavailable
from shared.settings import Settings, get_settings

Event = dict[str, Any]



@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StreamUnavailable(f"the metrics stream cannot be reached: {exc}") from exc


def stream_id(cursor: str) -> tuple[int, int]:
    """Parse a stream id `ms-seq`; ValueError when it is not one."""
    ms, _, seq = cursor.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(f"not a stream cursor: {cursor!r}")
    return int(ms), int(seq or 0)


class MetricsStream:
    def __init__(self, client: redis.Redis, key_prefix: str = "", maxlen: int = 10_000, ttl_s: int = 7 * 86400):
        self.client = client
        self.key_prefix = key_prefix
        self.maxlen = maxlen
        self.ttl_s = ttl_s

    def key(self, job_id: str) -> str:
        return f"{self.key_prefix}noisyfit:jobs:{job_id}:events"

    def publish(self, job_id: str, event: Event) -> str:
        """Append an event; returns its id. A `done` event starts the stream's expiry."""
        key = self.key(job_id)
        with _redis_errors():
            pipe = self.client.pipeline()
            pipe.xadd(key, {"data": json.dumps(event)}, maxlen=self.maxlen, approximate=True)
            if event.get("type") == "done":
                pipe.expire(key, self.ttl_s)
            return pipe.execute()[0]

    def read(self, job_id: str, after: str | None = None, count: int = 100) -> tuple[list[Event], str | None]:
        """Up to `count` events after the cursor, and the cursor to read on from."""
        start = "-" if after is None else f"({after}"
        with _redis_errors():
            entries = self.client.xrange(self.key(job_id), min=start, max="+", count=count)
        events = [_decode(entry) for entry in entries]
        return events, events[-1]["id"] if events else after

    def wait(self, job_id: str, after: str | None, block_s: float, count: int = 100) -> list[Event]:
        """Events after the cursor, waiting up to `block_s` for the first one (empty on timeout)."""
        with _redis_errors():
            reply = self.client.xread({self.key(job_id): after or "0-0"}, count=count, block=int(block_s * 1000))
        return [_decode(entry) for _key, entries in reply for entry in entries]

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
