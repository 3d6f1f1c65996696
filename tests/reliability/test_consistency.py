"""The API killed and restarted, cancel racing completion, and deletion: database, metrics
stream and bucket stay consistent.

Promises:
- the API killed -9 mid-job and started again on the same port: nothing lost (the job trains
  on, every job is still listed, the event stream resumes from Last-Event-ID, a submission
  retried with its Idempotency-Key exists exactly once);
- cancel racing start and completion (real threads on PostgreSQL and Redis, and a real worker
  finishing a job) ends in one final state, announced by exactly one `done` event, with the
  artifacts of that state and no others;
- DELETE /v1/jobs/{id} removes the row, the stream key and the bucket prefix, and only for
  finished jobs.
"""

import io
import threading
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import torch
from sqlmodel import Session

from shared import jobs
from shared.db import get_engine
from shared.errors import JobFinished
from shared.models import Job, JobStatus
from shared.settings import Settings
from shared.store import get_store, job_prefix
from shared.stream import get_stream, redis_client
from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, Follower, Stack, events_of, job_of, wait_status

SPEC = {**TINY_SPEC, "epochs": 1}
FINISHED = {"succeeded", "failed", "cancelled"}
OUTPUTS = {"checkpoint.pt", "result.json"}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    stack = make_stack()
    stack.start_worker()
    return stack


def artifact_names(http: httpx.Client, job_id: str) -> set[str]:
    return {a["name"] for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}


def done_events(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events if e["type"] == "done"]


def test_api_killed_and_restarted_loses_nothing(stack: Stack) -> None:
    http = stack.client("restart")
    finished_before = http.post("/v1/jobs", json={**SPEC, "seed": 7}).json()["id"]
    http.post(f"/v1/jobs/{finished_before}/cancel")
    job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
    follower = Follower(http, job_id)
    wait_status(http, job_id, {"running"}, timeout_s=120)
    wait_until(lambda: any(e["type"] == "step" for e in follower.events), 120, "a step event")

    port = urlsplit(stack.url).port
    stack.api.kill()
    wait_until(follower.ended, 30, "the event stream to break")
    key = {"Idempotency-Key": "restart-submission"}
    with pytest.raises(httpx.TransportError):
        http.post("/v1/jobs", json={**SPEC, "seed": 8}, headers=key)
    stack.start_api(port)

    first = http.post("/v1/jobs", json={**SPEC, "seed": 8}, headers=key)
    again = http.post("/v1/jobs", json={**SPEC, "seed": 8}, headers=key)
    assert first.status_code == 201 and again.status_code == 200, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    retried = first.json()["id"]
    http.post(f"/v1/jobs/{retried}/cancel")

    resumed = Follower(http, job_id, last_id=follower.events[-1]["id"])
    finished = wait_status(http, job_id, FINISHED, timeout_s=300)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1, (finished, stack.logs())
    wait_until(resumed.ended, 60, "the resumed stream to end")
    assert resumed.error is None, resumed.error
    assert follower.events + resumed.events == events_of(http, job_id), "events lost or repeated"
    assert done_events(resumed.events) == ["succeeded"]
    listed = {j["id"] for j in http.get("/v1/jobs").json()["jobs"]}
    assert {finished_before, job_id, retried} <= listed
    assert OUTPUTS <= artifact_names(http, job_id)


def test_cancel_racing_a_finishing_worker_leaves_one_consistent_end(stack: Stack) -> None:
    """Cancels are fired while the worker writes the last artifacts and finishes the job."""
    http = stack.client("cancel-race")
    job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
    wait_until(lambda: any(e["type"] == "epoch" for e in events_of(http, job_id)), 300, "the last epoch")
    answers = []
    while (job := job_of(http, job_id))["status"] not in FINISHED:
        answers.append(http.post(f"/v1/jobs/{job_id}/cancel").status_code)
    answers.append(http.post(f"/v1/jobs/{job_id}/cancel").status_code)
    assert set(answers) <= {200, 409} and answers[-1] in (200, 409)
    assert_consistent(http, job_id, job)


def assert_consistent(http: httpx.Client, job_id: str, job: dict[str, Any]) -> None:
    assert done_events(events_of(http, job_id)) == [job["status"]]
    names = artifact_names(http, job_id)
    if job["status"] == "succeeded":
        assert job["result"] and OUTPUTS <= names
        state = torch.load(io.BytesIO(http.get(f"/v1/jobs/{job_id}/artifacts/checkpoint.pt").content),
                           weights_only=True)
        assert state["model"]
    else:
        assert job["result"] is None and not OUTPUTS & names


RACES = 20


def test_cancel_racing_start_and_finish_on_the_database(settings: Settings) -> None:
    """A worker (start_attempt, then finish) and a user (request_cancel) act at the same moment
    on each of RACES jobs; every job ends in exactly one state and says so exactly once."""
    engine = get_engine(settings.database_url)
    with Session(engine) as session:
        user_id = _user(session)
        ids = [jobs.create_job(session, user_id, {**SPEC, "seed": i}, settings, enqueue=lambda _: None)[0].id
               for i in range(RACES)]
    outcomes: dict[str, list[str]] = {job_id: [] for job_id in ids}

    def worker(job_id: str, gate: threading.Barrier) -> None:
        with Session(engine) as session:
            gate.wait()
            if jobs.start_attempt(session, job_id, f"w-{job_id}", settings):
                outcomes[job_id].append("started")
                done = jobs.finish(session, job_id, f"w-{job_id}", JobStatus.succeeded, settings,
                                   result={"final_test_accuracy": 0.5, "best_test_accuracy": 0.5})
                outcomes[job_id].append("finished" if done else "finish refused")

    def user(job_id: str, gate: threading.Barrier) -> None:
        with Session(engine) as session:
            gate.wait()
            try:
                outcomes[job_id].append(f"cancel:{jobs.request_cancel(session, user_id, job_id, settings).status}")
            except JobFinished:
                outcomes[job_id].append("cancel:too late")

    threads = []
    for job_id in ids:
        gate = threading.Barrier(2)
        threads += [threading.Thread(target=worker, args=(job_id, gate)), threading.Thread(target=user, args=(job_id, gate))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    stream = get_stream(settings)
    ends = set()
    with Session(engine) as session:
        for job_id in ids:
            job = session.get(Job, job_id)
            statuses = [e["status"] for e in stream.read(job_id, None, 100)[0] if e["type"] == "status"]
            dones = [e["status"] for e in stream.read(job_id, None, 100)[0] if e["type"] == "done"]
            ends.add(job.status)
            assert dones == [job.status], (job_id, outcomes[job_id], dones, job.status)
            if job.status == JobStatus.succeeded:
                assert statuses == ["queued", "running", "succeeded"] and job.result, outcomes[job_id]
            else:
                assert job.status == JobStatus.cancelled and job.result is None, outcomes[job_id]
                assert statuses == ["queued", "cancelled"] and "started" not in outcomes[job_id]
            assert job.finished_at is not None and job.lease_expires_at is None
    assert ends <= {JobStatus.succeeded, JobStatus.cancelled}


def _user(session: Session) -> int:
    from api.auth import create_key

    key, _ = create_key(session, name="race")
    return key.user_id


def test_delete_removes_row_stream_and_prefix_of_finished_jobs_only(stack: Stack) -> None:
    http = stack.client("delete")
    job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
    wait_status(http, job_id, {"running", *FINISHED}, timeout_s=120)
    active = http.delete(f"/v1/jobs/{job_id}")
    if job_of(http, job_id)["status"] not in FINISHED:
        assert active.status_code == 409 and active.json()["error"]["code"] == "job_active", active.text
    finished = wait_status(http, job_id, FINISHED, timeout_s=300)
    assert finished["status"] == "succeeded" and OUTPUTS <= artifact_names(http, job_id)
    settings = stack.settings
    store, stream = get_store(settings), get_stream(settings)
    assert store.list_prefix(job_prefix(job_id)) and redis_client(settings.redis_url).exists(stream.key(job_id))

    assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert http.get(f"/v1/jobs/{job_id}").status_code == 404
    assert http.get(f"/v1/jobs/{job_id}/artifacts").status_code == 404
    assert store.list_prefix(job_prefix(job_id)) == []
    assert not redis_client(settings.redis_url).exists(stream.key(job_id))
    with Session(get_engine(settings.database_url)) as session:
        assert session.get(Job, job_id) is None
    assert http.delete(f"/v1/jobs/{job_id}").status_code == 404
