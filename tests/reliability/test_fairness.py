"""Fair scheduling with a real worker: one user's queue does not starve another's, and a job
that runs past its time limit is stopped and failed with what to change (shared.scheduling)."""

import os
import re
import signal
from typing import Any

from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, job_of, wait_status

SPEC = {**TINY_SPEC, "epochs": 1}
BACKLOG = 20
ENDED = {"succeeded", "failed", "cancelled"}


def test_a_later_users_job_starts_before_most_of_a_long_queue(make_stack: Any) -> None:
    stack = make_stack()
    first, second = stack.client("backlog"), stack.client("latecomer")
    backlog = []
    for seed in range(BACKLOG):  # no worker yet: all of them wait, submitted before the latecomer's
        response = first.post("/v1/jobs", json={**SPEC, "seed": seed})
        assert response.status_code == 201, response.text
        backlog.append(response.json()["id"])
    late = second.post("/v1/jobs", json=SPEC).json()["id"]

    stack.start_worker()
    assert wait_status(second, late, ENDED)["status"] == "succeeded", stack.logs()
    late_start = job_of(second, late)["started_at"]
    for job_id in backlog:
        first.post(f"/v1/jobs/{job_id}/cancel")
    backlog_jobs = [wait_status(first, job_id, ENDED) for job_id in backlog]
    before = [job["id"] for job in backlog_jobs if job["started_at"] is not None and job["started_at"] < late_start]
    assert len(before) <= 1, f"{len(before)} of the first user's jobs started before the latecomer's: {before}"
    assert before == backlog[:len(before)], "the first user's jobs did not start oldest first"


def test_a_job_past_its_time_limit_is_failed_with_what_to_change(make_stack: Any) -> None:
    stack = make_stack(max_job_seconds="3600")
    http = stack.client("limited")
    too_long = http.post("/v1/jobs", json={**SPEC, "time_limit_s": 3601})
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["error"]["field"] == "time_limit_s" and "3600" in too_long.json()["error"]["message"]

    stack.start_worker()
    job_id = http.post("/v1/jobs", json={**SPEC, "epochs": 1000, "time_limit_s": 1}).json()["id"]
    job = wait_status(http, job_id, ENDED)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "time_limit", job["error"]
    message = job["error"]["message"]
    assert "time_limit_s (up to 3600)" in message and "fewer epochs" in message and "batch_size" in message
    assert job["progress"]["epoch"] < 1000


def test_a_training_process_stuck_past_its_time_limit_is_killed_and_its_job_fails(make_stack: Any) -> None:
    """A process frozen outside its own step checks (SIGSTOP) cannot stop itself at its limit:
    its worker kills it once the grace period is over too, and fails the job as over time."""
    stack = make_stack(time_limit_grace_s="1")
    http = stack.client("stuck")
    worker = stack.start_worker()
    job_id = http.post("/v1/jobs", json={**SPEC, "epochs": 1000, "time_limit_s": 20}).json()["id"]
    started = re.compile(rf"job {job_id}: attempt \d+ as \S+, training in process (\d+)")
    pid = int(wait_until(lambda: (m := started.search(worker.log.read_text())) and m.group(1), 60,
                         "the training process to start"))
    os.kill(pid, signal.SIGSTOP)
    assert wait_until(lambda: open(f"/proc/{pid}/stat").read().split()[2] == "T", 10, "the process to stop")
    job = wait_status(http, job_id, ENDED, timeout_s=60)
    assert job["status"] == "failed" and job["error"]["code"] == "time_limit", job
    assert "was killed" in worker.log.read_text(), stack.logs()
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
