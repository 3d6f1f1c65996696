"""Open event streams cost no database connection and no thread while they wait.

Against a real uvicorn and PostgreSQL: three times as many streams as the API's connection
pool holds (pool_size + max_overflow) stay open while other requests still answer, and
correctly; no connection sits idle in a transaction; every stream still delivers live events
and ends with `done`. A revoked key's open stream ends with `event: refused`.
Correctness only; bench/streams.py measures the latency (bench/README.md, "Streams").
"""

import asyncio
import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from client.http import parse_sse
from shared.db import get_engine
from shared.stream import get_stream
from tests.reliability.conftest import TINY_SPEC, Stack

JOBS = 6


def pool_capacity(database_url: str) -> int:
    """Connections one API process may open (its engine's pool_size + max_overflow)."""
    pool = get_engine(database_url).pool
    return pool.size() + pool._max_overflow


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    return make_stack(sse_heartbeat_s=1, sse_recheck_s=0.5)


def new_key(stack: Stack, name: str) -> dict[str, Any]:
    created = httpx.post(f"{stack.url}/v1/api-keys", json={"name": name},
                         headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()


class OpenStream:
    """GET /v1/jobs/{id}/events read in a task: the messages as (event name, data)."""

    def __init__(self, client: httpx.AsyncClient, job_id: str):
        self.job_id = job_id
        self.messages: list[tuple[str, Any]] = []
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: httpx.AsyncClient) -> int:
        async with client.stream("GET", f"/v1/jobs/{self.job_id}/events") as response:
            if response.status_code != 200:
                await response.aread()
                return response.status_code
            lines: list[str] = []
            async for line in response.aiter_lines():
                lines.append(line)
                if line == "":
                    self.messages += [(m.event, json.loads(m.data)) for m in parse_sse(lines) if m.data]
                    lines = []
            return response.status_code

    def types(self) -> list[str]:
        return [data.get("type", event) for event, data in self.messages]


def database_connections(database_url: str) -> list[dict[str, Any]]:
    """Every other connection to the database: its state, last query, and when its transaction began."""
    with get_engine(database_url).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(
            "SELECT state, query, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))]


def database_now(database_url: str) -> datetime:
    with get_engine(database_url).connect() as connection:
        return connection.execute(text("SELECT now()")).scalar_one()


async def until(predicate: Any, timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"waited {timeout_s}s for {what}") from None


def test_three_pools_worth_of_open_streams_leave_the_api_answering(stack: Stack) -> None:
    capacity = pool_capacity(stack.settings.database_url)
    streams = 3 * capacity
    key = new_key(stack, "many-streams")
    headers = {"Authorization": f"Bearer {key['key']}"}
    setup = httpx.Client(base_url=stack.url, headers=headers, timeout=30)
    job_ids = [setup.post("/v1/jobs", json={**TINY_SPEC, "seed": i}).json()["id"] for i in range(JOBS)]

    async def scenario() -> list[OpenStream]:
        limits = httpx.Limits(max_connections=streams + 50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, limits=limits,
                                     timeout=httpx.Timeout(30, read=60)) as client:
            opened = [OpenStream(client, job_ids[i % JOBS]) for i in range(streams)]
            await until(lambda: all(s.messages or s.task.done() for s in opened), 120, "every stream's first event")
            assert all(s.types()[:1] == ["status"] for s in opened), [s.task for s in opened if not s.messages][:3]
            all_open = database_now(stack.settings.database_url)

            async def other_requests(job_id: str) -> None:
                job = await client.get(f"/v1/jobs/{job_id}")
                assert job.status_code == 200 and job.json()["id"] == job_id and job.json()["status"] == "queued"
                health = await client.get("/healthz")
                assert health.status_code == 200 and health.json() == {"status": "ok"}
                listed = await client.get("/v1/jobs", params={"limit": 200})
                assert listed.status_code == 200 and set(job_ids) <= {j["id"] for j in listed.json()["jobs"]}

            for _round in range(3):
                await asyncio.gather(*(other_requests(job_id) for job_id in job_ids * 3))
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            connections = database_connections(stack.settings.database_url)
            assert len(connections) <= capacity, connections
            held = [c for c in connections if c["xact_start"] is not None and c["xact_start"] < all_open]
            assert not held, f"transactions open since before the streams were: {held}"
            assert not any(s.task.done() for s in opened), "a stream ended early"

            stream = get_stream(stack.settings)
            for job_id in job_ids:
                stream.publish(job_id, {"type": "epoch", "epoch": 1})
            await until(lambda: all("epoch" in s.types() for s in opened), 60, "the live event on every stream")
            for job_id in job_ids:
                assert (await client.post(f"/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
            await until(lambda: all(s.task.done() for s in opened), 60, "every stream to end with done")
            return opened

    opened = asyncio.run(scenario())
    wrong = [(s.job_id, s.task.result(), s.messages) for s in opened
             if s.task.result() != 200 or s.types() != ["status", "epoch", "status", "done"]]
    assert not wrong, wrong[:3]


def test_a_revoked_keys_open_stream_ends_with_refused(stack: Stack) -> None:
    key = new_key(stack, "revoked-while-streaming")
    headers = {"Authorization": f"Bearer {key['key']}"}
    job_id = httpx.post(f"{stack.url}/v1/jobs", json=TINY_SPEC, headers=headers, timeout=30).json()["id"]

    async def scenario() -> OpenStream:
        async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=httpx.Timeout(30, read=60)) as client:
            open_stream = OpenStream(client, job_id)
            await until(lambda: open_stream.messages, 30, "the stream's first event")
            revoked = httpx.delete(f"{stack.url}/v1/api-keys/{key['id']}",
                                   headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
            assert revoked.status_code == 200 and revoked.json()["revoked_at"], revoked.text
            await until(open_stream.task.done, 30, "the revoked key's stream to end")
            return open_stream

    ended = asyncio.run(scenario())
    assert ended.task.result() == 200
    event, data = ended.messages[-1]
    assert event == "refused" and data["error"]["code"] == "unauthorized", ended.messages
    assert "revoked" in data["error"]["message"]
    again = httpx.get(f"{stack.url}/v1/jobs/{job_id}/events", headers=headers, timeout=30)
    assert again.status_code == 401


def test_the_python_client_raises_the_refusal_of_a_revoked_keys_stream(stack: Stack) -> None:
    """client.http.NoisyfitClient.events ends a refused stream with the API's error, not a retry."""
    import threading

    from client.http import ApiError, NoisyfitClient

    key = new_key(stack, "revoked-client")
    client = NoisyfitClient(stack.url, key["key"])
    job_id = client.submit_job(TINY_SPEC)["id"]
    first = threading.Event()
    outcome: list[BaseException] = []

    def follow() -> None:
        try:
            for _ in client.events(job_id):
                first.set()
        except BaseException as error:  # noqa: BLE001 — the outcome under test
            outcome.append(error)

    follower = threading.Thread(target=follow)
    follower.start()
    assert first.wait(30), "the stream's first event"
    revoked = httpx.delete(f"{stack.url}/v1/api-keys/{key['id']}",
                           headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert revoked.status_code == 200, revoked.text
    follower.join(60)
    assert not follower.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ApiError), outcome
    assert (outcome[0].status, outcome[0].code) == (401, "unauthorized")
