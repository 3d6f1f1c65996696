"""Worker faults, injected for real: kill -9 of a Celery worker mid-training, duplicate task
deliveries while two workers run, and jobs left `running` by processes that are gone.

Promises:
- a SIGKILLed worker's job is requeued without a person, resumes from its last checkpoint
  (not from epoch 0) and ends with exactly the weights of an uninterrupted run (torch.equal
  on every tensor of checkpoint.pt; CPU, bit for bit);
- a job is trained by one worker at a time: a duplicate delivery is turned away while the
  lease holder lives, and a delivery after success changes nothing;
- a job whose holder died is requeued, and failed with a reason after max_attempts.
"""

import sys
from typing import Any

import httpx
import pytest

from shared.queue import send_train
from shared.store import artifact_key, get_store
from tests.e2e.conftest import start, wait_until
from tests.reliability.conftest import LEASE_TTL_S, TINY_SPEC, Stack, events_of, job_of, wait_status
from worker.checkpoints import from_bytes

SPEC = {**TINY_SPEC, "epochs": 2}
FINISHED = {"succeeded", "failed", "cancelled"}
TIMING = {"epoch_seconds", "samples_per_second", "time"}


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    return make_stack()


def submit(http: httpx.Client, spec: dict[str, Any]) -> str:
    response = http.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def epochs_done(http: httpx.Client, job_id: str) -> list[int]:
    return [e["epoch"] for e in events_of(http, job_id) if e["type"] == "epoch"]


def checkpoint(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/checkpoint.pt")
    response.raise_for_status()
    return from_bytes(response.content)


def worker_lines(stack: Stack, text: str) -> list[str]:
    return [line for w in stack.workers for line in w.log.read_text(errors="replace").splitlines() if text in line]


def test_sigkilled_worker_job_resumes_from_its_checkpoint_to_the_same_weights(stack: Stack) -> None:
    http = stack.client("sigkill")
    first = stack.start_worker()
    jobs = [submit(http, SPEC), submit(http, SPEC)]  # the same spec twice: one is killed, one is the reference
    victim = wait_until(lambda: next((j for j in jobs if 1 in epochs_done(http, j)), None), 300,
                        "epoch 1 of a job to finish")
    reference = next(j for j in jobs if j != victim)
    first.kill()  # kill -9 of the worker's process group, mid-epoch 2

    store = get_store(stack.settings)
    resumed_from = from_bytes(store.get_bytes(artifact_key(victim, "resume.pt")))["epoch"]
    assert 1 <= resumed_from < SPEC["epochs"], "the kill landed before the last epoch"
    requeued = wait_status(http, victim, {"queued"}, timeout_s=LEASE_TTL_S + 20)  # by the API's reaper
    assert requeued["attempts"] == 1 and requeued["status"] == "queued"

    stack.start_worker()
    done = {j: wait_status(http, j, FINISHED, timeout_s=400) for j in jobs}
    assert done[victim]["status"] == done[reference]["status"] == "succeeded", (done, stack.logs())
    assert done[victim]["attempts"] == 2 and done[reference]["attempts"] == 1
    assert done[victim]["result"]["resumed_from_epoch"] == resumed_from

    events = events_of(http, victim)
    statuses = [e["status"] for e in events if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    second_run = events[[i for i, e in enumerate(events) if e.get("status") == "running"][1]:]
    assert [e["epoch"] for e in second_run if e["type"] == "epoch"] == list(range(resumed_from + 1, SPEC["epochs"] + 1))
    assert epochs_done(http, victim) == list(range(1, SPEC["epochs"] + 1))

    killed, uninterrupted = checkpoint(http, victim)["model"], checkpoint(http, reference)["model"]
    assert killed.keys() == uninterrupted.keys()
    unequal = [name for name in killed if not torch_equal(killed[name], uninterrupted[name])]
    assert not unequal, f"tensors differ from the uninterrupted run: {unequal}"
    strip = lambda history: [{k: v for k, v in m.items() if k not in TIMING} for m in history]  # noqa: E731
    results = [http.get(f"/v1/jobs/{j}/artifacts/result.json").json() for j in (victim, reference)]
    assert strip(results[0]["history"]) == strip(results[1]["history"])
    assert results[0]["final_test_accuracy"] == results[1]["final_test_accuracy"]


def torch_equal(a: Any, b: Any) -> bool:
    import torch

    return torch.equal(a, b)


def test_duplicate_deliveries_never_train_a_job_twice(stack: Stack) -> None:
    http = stack.client("duplicates")
    while len([w for w in stack.workers if w.process.poll() is None]) < 2:
        stack.start_worker()
    job_id = submit(http, {**SPEC, "epochs": 1})
    wait_status(http, job_id, {"running"}, timeout_s=120)
    send_train(job_id, stack.settings)  # duplicates, while the first holder lives
    send_train(job_id, stack.settings)
    turned_away = f"job {job_id}: not taken"
    wait_until(lambda: len(worker_lines(stack, turned_away)) >= 2, 60, "the duplicates to be turned away")
    finished = wait_status(http, job_id, FINISHED, timeout_s=300)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1
    assert len(worker_lines(stack, f"job {job_id}: attempt")) == 1, "exactly one worker trained it"

    send_train(job_id, stack.settings)  # a late duplicate, after success
    wait_until(lambda: len(worker_lines(stack, turned_away)) >= 3, 60, "the late duplicate to be turned away")
    assert job_of(http, job_id) == finished, "a duplicate after success changed the job"
    statuses = [e["status"] for e in events_of(http, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]


GHOST = """
import sys, time
from sqlmodel import Session
from shared.db import get_engine
from shared.jobs import start_attempt
from shared.settings import get_settings
settings = get_settings()
with Session(get_engine(settings.database_url)) as session:
    print("taken" if start_attempt(session, sys.argv[1], "ghost-" + sys.argv[2], settings) else "refused", flush=True)
time.sleep(600)
"""


def test_a_job_left_running_by_a_dead_process_is_requeued_then_failed_after_max_attempts(make_stack: Any) -> None:
    """A process takes the job (the worker's start_attempt: running, leased) and is killed -9;
    the API's reaper requeues it, and after max_attempts fails it with a reason. No worker runs,
    so nothing but the reaper moves the job."""
    stack = make_stack(max_attempts="2")
    http = stack.client("stale")
    job_id = submit(http, SPEC)
    for attempt in (1, 2):
        ghost = start(f"{stack.name}-ghost{attempt}", [sys.executable, "-c", GHOST, job_id, str(attempt)],
                      stack.env, stack.folder)
        wait_until(lambda: "taken" in ghost.log.read_text() or ghost.process.poll() is not None, 60, "the ghost")
        assert "taken" in ghost.log.read_text() and "refused" not in ghost.log.read_text(), ghost.tail()
        assert job_of(http, job_id)["status"] == "running"
        ghost.kill()
        expected = "queued" if attempt == 1 else "failed"
        job = wait_status(http, job_id, {expected}, timeout_s=LEASE_TTL_S + 20)
        assert job["attempts"] == attempt
    assert job["error"]["code"] == "too_many_attempts" and "2 times" in job["error"]["message"]
    statuses = [e["status"] for e in events_of(http, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "failed"]
