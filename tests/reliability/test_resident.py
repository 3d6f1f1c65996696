"""A real worker with NOISYFIT_RESIDENT_DATA=on (worker/resident.py): it starts one data holder at
its first job, every job's images are lent by it, the data set is loaded into it once, each job
ends with the result it has on its own copy; a holder that died is replaced at the next job.
On this CPU the holder lends shared memory; on a GPU the same path lends device memory.
"""

import os
import re
import signal
from pathlib import Path
from typing import Any

from tests.e2e.conftest import FINISHED, wait_until
from tests.reliability.conftest import wait_status
from tests.reliability.test_packing import alone, submit

HOLDER_STARTED = r"the data holder \(process (\d+)\) keeps data sets on cpu for this worker's jobs"


def lent(log: str, job_id: str) -> bool:
    return f"jobs {job_id}: images of fashion-mnist lent by the data holder" in log


def test_a_worker_lends_its_data_set_to_every_job_from_one_holder_and_replaces_a_holder_that_died(
        make_stack: Any, reliability_data_dir: Path, tmp_path: Path) -> None:
    stack = make_stack(resident_data="on", cores_per_job=1)  # one torch thread a job, as alone() trains
    http = stack.client("resident")
    worker = stack.start_worker()
    ids = []
    for seed in (1, 2):
        ids.append(submit(http, seed=seed))
        assert wait_status(http, ids[-1], FINISHED)["status"] == "succeeded", stack.logs()
    log = worker.log.read_text(errors="replace")
    holders = re.findall(HOLDER_STARTED, log)
    assert len(holders) == 1, log
    assert all(lent(log, job_id) for job_id in ids), log
    assert log.count("the data holder keeps fashion-mnist on cpu") == 1, log  # loaded once, for both jobs

    os.kill(int(holders[0]), signal.SIGKILL)
    # Reaped by the fork server, which then tells the worker how it ended (a job that starts in
    # between finds no holder and copies its own images: the next job starts another).
    wait_until(lambda: not Path(f"/proc/{holders[0]}").exists(), 30, "the killed holder to be reaped")
    ids.append(submit(http, seed=3))
    third = wait_status(http, ids[-1], FINISHED)
    log = worker.log.read_text(errors="replace")
    assert third["status"] == "succeeded", stack.logs()
    assert f"the data holder (process {holders[0]}) ended with exit code -9; starting another" in log
    assert len(re.findall(HOLDER_STARTED, log)) == 2 and lent(log, ids[-1]), log

    reference = alone(third, reliability_data_dir, tmp_path / "alone")
    assert third["result"]["final_test_accuracy"] == reference["final_test_accuracy"]
    assert third["progress"]["metrics"]["train_loss"] == reference["history"][-1]["train_loss"]
