"""The object store down during a run, for real: the suite's own `rclone serve s3` is killed -9
and started again on the same port and folder.

Promises:
- uploads retry with backoff: an outage shorter than the retry window costs nothing (the job
  succeeds in its first attempt, every artifact whole);
- a store that stays down fails the job with a clear error (code store_unavailable) after
  max_attempts, and no finished-looking artifact (checkpoint.pt, result.json) is listed;
- while it is down, job status still answers; artifact routes answer 503 in the error shape.
"""

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, S3Process, Stack, events_of, job_of, wait_status
from worker.checkpoints import from_bytes

SPEC = {**TINY_SPEC, "epochs": 1}
FINISHED = {"succeeded", "failed", "cancelled"}
RETRIED = "object store call failed"
S3_ATTEMPTS = 6  # backoff 0.2·2^k s: the calls of one attempt ride out about 6 s of outage


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = S3Process(tmp_path_factory.mktemp("s3-outage"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(make_stack: Any, s3: S3Process) -> Stack:
    stack = make_stack(env=s3.env, s3_attempts=str(S3_ATTEMPTS), max_attempts="2")
    stack.start_worker()
    return stack


def retries_logged(stack: Stack) -> int:
    return sum(w.log.read_text(errors="replace").count(RETRIED) for w in stack.workers)


def check_whole(http: httpx.Client, job_id: str) -> set[str]:
    """Every listed artifact downloads whole (its listed size) and parses; returns the names."""
    listed = http.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]
    for artifact in listed:
        name = artifact["name"]
        data = http.get(f"/v1/jobs/{job_id}/artifacts/{name}").content
        assert len(data) == artifact["size"] > 0, name
        suffix = Path(name).suffix
        if suffix == ".pt":
            assert from_bytes(data)
        elif suffix == ".json":
            json.loads(data)
        elif suffix == ".jsonl":
            [json.loads(line) for line in data.splitlines() if line.strip()]
        elif suffix == ".npz":
            assert np.load(io.BytesIO(data)).files
    return {a["name"] for a in listed}


def test_a_short_store_outage_is_ridden_out_by_upload_retries(stack: Stack, s3: S3Process) -> None:
    http = stack.client("outage")
    before = retries_logged(stack)
    s3.stop()
    job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
    wait_until(lambda: retries_logged(stack) > before, 120, "the worker to retry an upload", interval_s=0.05)
    s3.start()  # within the retry window

    job = wait_status(http, job_id, FINISHED, timeout_s=300)
    assert job["status"] == "succeeded" and job["attempts"] == 1, (job, stack.logs())
    assert {"checkpoint.pt", "result.json", "metrics.jsonl", "noisy_labels.npz"} <= check_whole(http, job_id)


def test_a_store_that_stays_down_fails_the_job_with_a_clear_error(stack: Stack, s3: S3Process) -> None:
    http = stack.client("long-outage")
    s3.stop()
    try:
        job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
        wait_status(http, job_id, {"running"}, timeout_s=120)
        down = http.get(f"/v1/jobs/{job_id}/artifacts")  # status still answers: it is in the database
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable", down.text
        job = wait_status(http, job_id, FINISHED, timeout_s=240)
    finally:
        s3.start()
    assert job["status"] == "failed", (job, stack.logs())
    assert job["attempts"] == 2
    assert job["error"]["code"] == "store_unavailable", job["error"]
    assert "object store" in job["error"]["message"]
    names = check_whole(http, job_id)
    assert not {"checkpoint.pt", "result.json"} & names, names
    done = [e for e in events_of(http, job_id) if e["type"] == "done"]
    assert len(done) == 1 and done[0]["status"] == "failed"


def test_deleting_a_job_while_the_store_is_down_keeps_it_listed_until_a_retry_completes(
    stack: Stack, s3: S3Process
) -> None:
    http = stack.client("delete-outage")
    job_id = http.post("/v1/jobs", json=SPEC).json()["id"]
    http.post(f"/v1/jobs/{job_id}/cancel")
    wait_status(http, job_id, {"cancelled"}, timeout_s=120)  # at once if queued; at its next check if taken
    s3.stop()
    try:
        refused = http.delete(f"/v1/jobs/{job_id}")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable", refused.text
        assert job_of(http, job_id)["status"] == "cancelled", "the row goes last"
    finally:
        s3.start()
    assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert http.get(f"/v1/jobs/{job_id}").status_code == 404
