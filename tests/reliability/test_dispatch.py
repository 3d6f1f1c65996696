"""Dead messages cost a database look, not a process, in a real worker.

Promises: messages of cancelled jobs are answered by the worker's long-lived process (one
start_attempt each) and start no training process; a job really taken is trained in a process
of its own, which exits once the job is finished (handing back all its memory).
bench/drain.py measures how fast (bench/README.md, "Draining dead messages").
"""

import os
import re
from typing import Any

from shared.queue import queue_key
from shared.stream import redis_client
from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, job_of, wait_status

SPEC = {**TINY_SPEC, "epochs": 1}
DEAD = 20


def test_cancelled_jobs_messages_start_no_process_and_a_taken_job_gets_its_own(make_stack: Any) -> None:
    stack = make_stack()
    http = stack.client("drain")
    cancelled = []
    for seed in range(DEAD):  # no worker yet: their messages wait in the queue
        job = http.post("/v1/jobs", json={**SPEC, "seed": seed})
        assert job.status_code == 201, job.text
        cancelled.append(http.post(f"/v1/jobs/{job.json()['id']}/cancel").json()["id"])
    queue = redis_client(stack.settings.redis_url)
    assert queue.llen(queue_key(stack.settings)) == DEAD

    worker = stack.start_worker()
    main_pid = worker.process.pid
    log = lambda: worker.log.read_text(errors="replace")  # noqa: E731
    wait_until(lambda: all(f"job {j}: not taken" in log() for j in cancelled), 120, "every dead message answered")
    assert queue.llen(queue_key(stack.settings)) == 0
    assert "training in process" not in log(), "a dead message started a training process"
    answered_by = {m.group(1) for j in cancelled for m in re.finditer(rf"INFO/(\w+)\] job {j}: not taken", log())}
    assert answered_by == {"MainProcess"}, answered_by
    assert all(job_of(http, j)["attempts"] == 0 and job_of(http, j)["status"] == "cancelled" for j in cancelled)

    taken = http.post("/v1/jobs", json={**SPEC, "seed": DEAD}).json()["id"]
    assert wait_status(http, taken, {"succeeded", "failed", "cancelled"})["status"] == "succeeded", stack.logs()
    started = re.findall(rf"job {taken}: attempt 1 as \S+, training in process (\d+)", log())
    assert len(started) == 1, log()
    trainer = int(started[0])
    assert trainer != main_pid and worker.process.poll() is None
    wait_until(lambda: not os.path.exists(f"/proc/{trainer}"), 60, "the training process to exit")
    assert f"INFO/train-{taken}] job {taken}: succeeded" in log()
