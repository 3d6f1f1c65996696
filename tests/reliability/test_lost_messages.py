"""No job stays queued without a message, for real: the test's own redis-server is killed -9 and
started again empty (a Redis without persistence), and a job is stored without its message (the
API's crash point between commit and send, through the service layer).

Promises: the API's reaper sends a queued job again once no worker took it within
resend_after_s of its last send; the job then trains to success exactly once (one attempt, one
training process), and the duplicates that re-sending makes are dropped by a database look.
"""

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlmodel import Session

from shared import jobs
from shared.db import get_engine
from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, RedisProcess, Stack, events_of, job_of, wait_status

SPEC = {**TINY_SPEC, "epochs": 1}
RESEND_AFTER_S = 3


@pytest.fixture(scope="module")
def stack(make_stack: Any, redis_server: RedisProcess) -> Stack:
    return make_stack(env={"NOISYFIT_REDIS_URL": redis_server.url}, resend_after_s=str(RESEND_AFTER_S))


def user_client(stack: Stack, name: str) -> tuple[httpx.Client, int]:
    created = httpx.post(f"{stack.url}/v1/api-keys", json={"name": name},
                         headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert created.status_code == 201, created.text
    body = created.json()
    return httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {body['key']}"}), \
        body["user_id"]


def lines(stack: Stack, text: str) -> int:
    return sum(w.log.read_text(errors="replace").count(text) for w in stack.workers)


def assert_trained_once(stack: Stack, http: httpx.Client, job_id: str) -> None:
    job = wait_status(http, job_id, {"succeeded", "failed", "cancelled"}, timeout_s=300)
    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, stack.logs())
    assert lines(stack, f"job {job_id}: attempt") == 1, "one training process, one attempt"
    statuses = [e["status"] for e in events_of(http, job_id) if e["type"] == "status"]
    assert statuses[-2:] == ["running", "succeeded"] and statuses.count("running") == 1, statuses


def test_jobs_whose_messages_redis_lost_are_sent_again_and_train_once(stack: Stack,
                                                                      redis_server: RedisProcess) -> None:
    http, _ = user_client(stack, "redis-lost")
    queued = [http.post("/v1/jobs", json={**SPEC, "seed": seed}).json()["id"] for seed in (0, 1)]
    assert [job_of(http, j)["waiting_for"] for j in queued] == ["worker", "worker"]

    redis_server.kill()  # kill -9, and back empty: a Redis without persistence restarted
    for stored in Path(redis_server.folder).iterdir():
        if stored.name.startswith("appendonly") or stored.suffix == ".rdb":
            shutil.rmtree(stored) if stored.is_dir() else stored.unlink()
    redis_server.start()
    assert redis.Redis.from_url(redis_server.url).dbsize() == 0, "the restarted Redis holds nothing"

    stack.start_worker()
    for job_id in queued:
        assert_trained_once(stack, http, job_id)
    # The second job waited longer than resend_after_s behind the first, so it was sent again meanwhile:
    wait_until(lambda: lines(stack, f"job {queued[1]}: not taken"), 60, "a duplicate to be dropped")
    assert job_of(http, queued[1])["attempts"] == 1


def test_a_job_stored_without_its_message_is_sent_again_and_trains_once(stack: Stack) -> None:
    """The API died between storing the job and sending its message: the service layer stores
    it here and sends nothing."""
    http, user_id = user_client(stack, "api-crashed")
    if not stack.workers:
        stack.start_worker()
    with Session(get_engine(stack.settings.database_url)) as session:
        job, created = jobs.create_job(session, user_id, {**SPEC, "seed": 2}, stack.settings, enqueue=lambda _: None)
    assert created and job_of(http, job.id)["status"] == "queued"
    assert_trained_once(stack, http, job.id)
