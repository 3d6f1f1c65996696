"""Packing in a real worker (worker/packing.py): a worker of this 2-core machine with
NOISYFIT_CORES_PER_JOB=1 runs two jobs at once, each in a training process pinned to a core of
its own, each with its own lease and result; cancelling one leaves the other to succeed, and the
cancelled job's slot takes the next job. Jobs are tiny (500 samples) and checked by their
records and logs, never by how long they took.

A GPU worker's take, without a GPU: worker.dispatch's take with a real database and queue, and a
packer whose device reports plain numbers: a job that does not fit waits for room, is taken
when a running job ends, and goes back to the queue when no room comes.
"""

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from shared import jobs
from shared.db import get_engine, init_db
from shared.models import Job, JobStatus, User
from shared.queue import queue_key
from shared.settings import Settings
from shared.spec import JobSpec, ResolvedSpec, resolve_spec
from shared.stream import redis_client
from tests.e2e.conftest import FINISHED, wait_until
from tests.reliability.conftest import TINY_SPEC, job_of, wait_status
from worker import dispatch
from worker.packing import Packer

SPEC = {**TINY_SPEC, "epochs": 1, "train_size": 500}


def submit(http: httpx.Client, **fields: Any) -> str:
    response = http.post("/v1/jobs", json={**SPEC, **fields})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def training_cores(log: str, job_id: str) -> list[str]:
    return re.findall(rf"job {job_id}: attempt \d+ as \S+, training in process \d+ on cores (\S+)", log)


def overlapped(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Each job started before the other finished: they ran at the same time."""
    return a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def alone(job: dict[str, Any], data_dir: Path, folder: Path) -> dict[str, Any]:
    """The job's resolved spec trained here, in this process, on one thread (as its packed process)."""
    import torch

    from worker.runner import run_job
    from worker.sinks import LocalSink

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_job(ResolvedSpec.model_validate(job["spec"]), LocalSink(folder), data_dir, device="cpu")
    finally:
        torch.set_num_threads(threads)


def test_a_worker_with_a_core_per_job_trains_two_jobs_at_once_each_to_its_own_result(
        make_stack: Any, reliability_data_dir: Path, tmp_path: Path) -> None:
    stack = make_stack(cores_per_job=1)
    http = stack.client("packed")
    ids = [submit(http, seed=seed) for seed in (1, 2)]  # before the worker: both messages wait for it
    worker = stack.start_worker()
    wait_until(lambda: (http.get("/v1/catalog").json()["slots"] or {}).get("total") == 2, 60,
               "the worker to report its two slots")
    jobs = [wait_status(http, job_id, FINISHED) for job_id in ids]
    log = worker.log.read_text(errors="replace")
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], stack.logs()
    assert overlapped(*jobs), jobs
    cores = [training_cores(log, job_id) for job_id in ids]
    assert sorted(cores) == [["0"], ["1"]], log  # one process per job, each pinned to a core of its own
    assert ".> concurrency: 2 (thread)" in log  # one pool thread per slot, whatever -c said
    assert "this worker runs 2 jobs at once on its CPU, 1 core each (0 | 1)" in log

    for job in jobs:
        reference = alone(job, reliability_data_dir, tmp_path / job["id"])
        assert job["attempts"] == 1
        assert job["result"]["final_test_accuracy"] == reference["final_test_accuracy"]
        assert job["progress"]["metrics"]["train_loss"] == reference["history"][-1]["train_loss"]
    assert jobs[0]["result"] != jobs[1]["result"]  # two seeds, two results: nothing crossed over


def test_cancelling_one_packed_job_leaves_the_other_to_succeed_and_frees_its_slot(make_stack: Any) -> None:
    stack = make_stack(cores_per_job=1)
    http = stack.client("packed-cancel")
    endless = submit(http, seed=3, epochs=200)  # cancelled long before it could end
    other = submit(http, seed=4, epochs=2)
    worker = stack.start_worker()
    wait_until(lambda: job_of(http, endless)["status"] == "running", 300, "the long job to run")
    assert http.post(f"/v1/jobs/{endless}/cancel").status_code == 200
    cancelled = wait_status(http, endless, FINISHED)
    finished = wait_status(http, other, FINISHED)
    assert cancelled["status"] == "cancelled" and finished["status"] == "succeeded", stack.logs()
    assert finished["attempts"] == 1 and finished["result"]["epochs_completed"] == 2
    assert overlapped(cancelled, finished), (cancelled, finished)

    after = submit(http, seed=5)  # the cancelled job's slot takes it
    assert wait_status(http, after, FINISHED)["status"] == "succeeded", stack.logs()
    log = worker.log.read_text(errors="replace")
    assert len({tuple(training_cores(log, job_id)) for job_id in (endless, other)}) == 2, log
    assert f"INFO/train-{endless}] job {endless}: cancelled" in log


# ---------------------------------------------------------------- a GPU worker's take, on plain numbers

GIB = 2**30


@pytest.fixture
def gpu_take(make_postgres_database: Callable[[], str], isolated_settings: Settings) -> Callable[..., Any]:
    """take(packer, wait_s) → worker.dispatch's take of one queued job in a database of its own."""
    url = make_postgres_database()
    engine = get_engine(url)
    init_db(engine)
    with Session(engine) as session:
        user = User(name="gpu")
        session.add(user)
        session.commit()
        job = jobs.new_job(user.id, resolve_spec(JobSpec.parse(SPEC)).to_json())
        session.add(job)
        session.commit()
        job_id = job.id

    def take(packer: Packer, wait_s: float) -> tuple[Any, str]:
        settings = isolated_settings.model_copy(update={"database_url": url, "admission_wait_s": wait_s})
        return dispatch._take(job_id, "gpu-worker", settings, engine, packer), job_id

    take.engine = engine
    return take


def running_beside(packer: Packer, need: int) -> Any:
    with packer.admission() as admission:
        admission.check("job_running", need)
        return admission.hold("job_running")


def test_a_job_that_does_not_fit_is_taken_once_a_running_job_ends(gpu_take: Callable[..., Any]) -> None:
    reads: list[int] = []
    refused = threading.Event()

    def free_memory() -> int:
        reads.append(2 * GIB)
        refused.set()
        return 2 * GIB  # less than the job needs beside the running one

    packer = Packer("cuda", 4, free_memory=free_memory, margin=GIB)
    running = running_beside(packer, 40 * GIB)
    result: list[Any] = []
    taker = threading.Thread(target=lambda: result.append(gpu_take(packer, 300)))
    taker.start()
    assert refused.wait(120), "the take never read the device's memory"
    assert taker.is_alive()  # waiting for room
    packer.release(running)
    taker.join(120)
    (taken, job_id), = result
    assert taken is not None and taken.job_id == job_id and taken.slot.need > 0 and reads == [2 * GIB]
    with Session(gpu_take.engine) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.running and job.attempts == 1 and job.lease_owner == "gpu-worker"
    assert packer.capacity().busy == 1


def test_a_job_that_finds_no_room_stays_queued_and_its_message_goes_back(gpu_take: Callable[..., Any],
                                                                         isolated_settings: Settings) -> None:
    queue = redis_client(isolated_settings.redis_url)
    before = queue.llen(queue_key(isolated_settings))
    packer = Packer("cuda", 4, free_memory=lambda: 2 * GIB, margin=GIB)
    running_beside(packer, 40 * GIB)
    taken, job_id = gpu_take(packer, 0.5)
    assert taken is None
    with Session(gpu_take.engine) as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.queued and job.attempts == 0
    assert queue.llen(queue_key(isolated_settings)) == before + 1  # sent again, for a worker with room
    assert packer.capacity().busy == 1
