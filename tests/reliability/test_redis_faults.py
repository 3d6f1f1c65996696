"""Redis down, for real: the test's own `redis-server` (the machine's Redis is shared, so it is
never touched) is killed -9 under a live API and started again on the same port and folder.

Promises: while Redis is down, job status and lists still answer (they come from the
database); the metrics and event routes answer 503 with a JSON error that says so; a
submission answers 503 and leaves no job behind; /readyz names Redis. Once Redis is back,
submissions work again and the event stream resumes from the client's Last-Event-ID with
nothing lost and nothing repeated.
"""

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, Follower, RedisProcess, Stack, job_of

@pytest.fixture(scope="module")
def stack(make_stack: Any, redis_server: RedisProcess) -> Stack:
    return make_stack(env={"NOISYFIT_REDIS_URL": redis_server.url})


def test_redis_down_status_answers_streams_503_then_resume(stack: Stack, redis_server: RedisProcess) -> None:
    http = stack.client("redis-down")
    job_id = http.post("/v1/jobs", json=TINY_SPEC).json()["id"]
    live = Follower(http, job_id)
    wait_until(lambda: live.events, 30, "the queued event")
    jobs_before = len(http.get("/v1/jobs").json()["jobs"])

    redis_server.kill()
    wait_until(live.ended, 30, "the open event stream to end")  # ends cleanly; the client reconnects
    assert job_of(http, job_id)["status"] == "queued"
    assert http.get("/v1/jobs").status_code == 200
    for route in (f"/v1/jobs/{job_id}/metrics", f"/v1/jobs/{job_id}/events"):
        response = http.get(route)
        assert response.status_code == 503, (route, response.text)
        error = response.json()["error"]
        assert error["code"] == "stream_unavailable" and "GET /v1/jobs/" in error["message"], error
    refused = http.post("/v1/jobs", json={**TINY_SPEC, "seed": 1})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable", refused.text
    assert len(http.get("/v1/jobs").json()["jobs"]) == jobs_before, "a refused submission left a job behind"
    ready = httpx.get(f"{stack.url}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"

    redis_server.start()  # same port, same folder (append-only file): the stream is still there
    wait_until(lambda: httpx.get(f"{stack.url}/readyz", timeout=30).status_code == 200, 30, "readiness")
    resumed = Follower(http, job_id, last_id=live.events[-1]["id"])
    assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    wait_until(resumed.ended, 30, "the resumed stream to end with `done`")
    assert resumed.error is None, resumed.error
    assert [(e["type"], e.get("status")) for e in resumed.events] == [("status", "cancelled"), ("done", "cancelled")]
    seen = [e["id"] for e in live.events + resumed.events]
    assert seen == sorted(set(seen), key=lambda i: tuple(map(int, i.split("-")))), "events lost or repeated"
    assert http.post("/v1/jobs", json={**TINY_SPEC, "seed": 2}).status_code == 201  # the queue is back too
