"""Cancelling jobs over HTTP: a queued job never runs; a running one stops at its next step check."""

import io
import time

import torch

from shared.queue import queue_key
from shared.stream import redis_client
from tests.e2e.conftest import get_job, metrics, submit, wait_for_event, wait_for_status, wait_until

LONG = {"epochs": 30}  # far longer than any test waits: it only ends by being cancelled


def artifact_names(http, job_id: str) -> set[str]:
    return {a["name"] for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}


def cancel(http, job_id: str) -> dict:
    response = http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    return response.json()


def test_cancelling_a_running_job_stops_it_at_a_step_check_and_keeps_its_resume_checkpoint(http, worker):
    job = submit(http, **LONG)
    wait_for_event(http, job["id"], lambda e: e["type"] == "epoch" and e["epoch"] == 1)
    wait_for_event(http, job["id"], lambda e: e["type"] == "step" and e["epoch"] == 2)  # inside epoch 2

    asked = time.monotonic()
    assert cancel(http, job["id"])["cancel_requested"] is True
    stopped = wait_for_status(http, job["id"], {"succeeded", "failed", "cancelled"}, timeout_s=60)
    waited = time.monotonic() - asked

    assert stopped["status"] == "cancelled"
    assert waited < 20, f"stopped {waited:.1f}s after the cancel: more than a step and a check"
    assert 1 <= stopped["progress"]["epoch"] < LONG["epochs"]
    assert stopped["result"] is None and stopped["attempts"] == 1
    events = metrics(http, job["id"])["events"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "cancelled"

    names = artifact_names(http, job["id"])
    assert "resume.pt" in names and not {"checkpoint.pt", "result.json"} & names
    resume = torch.load(io.BytesIO(http.get(f"/v1/jobs/{job['id']}/artifacts/resume.pt").content), weights_only=True)
    assert resume["epoch"] == stopped["progress"]["epoch"], "the last finished epoch is the resume point"
    time.sleep(1.5)
    assert get_job(http, job["id"])["status"] == "cancelled", "a cancelled job stays cancelled"


def test_a_cancelled_queued_job_never_runs(http, worker, e2e_settings):
    busy = submit(http, **LONG)  # holds the only worker, so the next job waits in the queue
    wait_for_status(http, busy["id"], {"running"})
    queued = submit(http)
    assert get_job(http, queued["id"])["status"] == "queued"

    cancelled = cancel(http, queued["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

    cancel(http, busy["id"])  # frees the worker, which then takes the cancelled job's message
    wait_for_status(http, busy["id"], {"cancelled"}, timeout_s=60)
    queue = redis_client(e2e_settings.redis_url)
    wait_until(lambda: queue.llen(queue_key(e2e_settings)) == 0, 60, "the worker to take the queued message")
    time.sleep(3)  # time enough for a (wrong) start: loading the data set alone takes longer

    job = get_job(http, queued["id"])
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0 and job["started_at"] is None
    assert [e["status"] for e in metrics(http, queued["id"])["events"] if e["type"] == "status"] == [
        "queued", "cancelled"]
    assert artifact_names(http, queued["id"]) == set()
