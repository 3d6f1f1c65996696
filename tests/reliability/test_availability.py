"""What the live workers hold decides at submission, with real worker processes coming and going.

Promises:
- each worker reports the built-in data sets it holds (files present, a system copy, or a
  download allowed) while it lives; GET /v1/catalog shows per data set how many live workers
  hold it, and how many are live;
- a job or sweep on a built-in data set that live workers exist for but none holds is refused
  (409 dataset_unavailable, the install step in the message), and nothing is stored;
- with no live worker at all, a job is accepted, GET /v1/jobs/{id} says it waits for a worker,
  and it runs once one starts;
- a worker killed -9 stops counting within three report intervals.
"""

import gzip
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.reliability.conftest import TINY_SPEC, Stack, job_of, wait_status
from worker.data_files import IDX_FILES, SYSTEM_DATA_DIRS

SPEC = {**TINY_SPEC, "epochs": 1}
MNIST = {**SPEC, "dataset": "mnist"}


def catalog(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/v1/catalog")
    response.raise_for_status()
    return response.json()


def held(http: httpx.Client) -> tuple[int, dict[str, int]]:
    """(live workers, live workers per data set)."""
    body = catalog(http)
    return body["live_workers"], {name: info["workers"] for name, info in body["datasets"].items()}


def refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "dataset_unavailable" and error["field"] == "dataset", error
    return error


def mnist_data_dir(folder: Path) -> Path:
    """A data folder holding MNIST in torchvision's layout (real IDX files: the system Fashion-MNIST's)."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        with gzip.open(SYSTEM_DATA_DIRS[0] / f"{name}.gz") as source, (raw / name).open("wb") as target:
            shutil.copyfileobj(source, target)
    return folder


@pytest.fixture(scope="module")
def stack(make_stack: Any) -> Stack:
    return make_stack(worker_report_s="0.5")


def test_submissions_follow_what_the_live_workers_hold(stack: Stack, tmp_path: Path) -> None:
    http = stack.client("fleet")
    assert held(http) == (0, {"mnist": 0, "fashion-mnist": 0, "cifar10": 0, "cifar100": 0})
    waiting = http.post("/v1/jobs", json=SPEC)
    assert waiting.status_code == 201, waiting.text
    job_id = waiting.json()["id"]
    assert job_of(http, job_id)["waiting_for"] == "worker"
    early = http.post("/v1/jobs", json=MNIST)  # no worker to ask: accepted, it waits
    assert early.status_code == 201 and early.json()["waiting_for"] == "worker", early.text
    http.post(f"/v1/jobs/{early.json()['id']}/cancel").raise_for_status()

    first = stack.start_worker()  # Fashion-MNIST from the system copy; nothing else, no download
    wait_until(lambda: held(http) == (1, {"mnist": 0, "fashion-mnist": 1, "cifar10": 0, "cifar100": 0}), 30,
               "the first worker's report")
    error = refused(http.post("/v1/jobs", json=MNIST))
    assert "NOISYFIT_DATA_DIR" in error["message"] and "NOISYFIT_ALLOW_DOWNLOAD=true" in error["message"]
    assert "MNIST/raw" in error["message"] and f"{stack.name}-worker" in error["message"], error
    assert "apt-get" not in refused(http.post("/v1/jobs", json={**SPEC, "dataset": "cifar10"}))["message"]
    jobs_before = len(http.get("/v1/jobs").json()["jobs"])
    refused(http.post("/v1/sweeps", json={"base": MNIST, "grid": {"seed": [0, 1]}}))
    assert http.get("/v1/sweeps").json()["sweeps"] == [] and len(http.get("/v1/jobs").json()["jobs"]) == jobs_before

    second = stack.start_worker(env={"NOISYFIT_DATA_DIR": str(mnist_data_dir(tmp_path / "data"))})
    wait_until(lambda: held(http) == (2, {"mnist": 1, "fashion-mnist": 2, "cifar10": 0, "cifar100": 0}), 30,
               "the second worker's report")
    accepted = http.post("/v1/jobs", json=MNIST)
    assert accepted.status_code == 201, accepted.text
    http.post(f"/v1/jobs/{accepted.json()['id']}/cancel").raise_for_status()

    second.kill()  # kill -9: no goodbye; its report lapses
    wait_until(lambda: held(http)[1]["mnist"] == 0, 30, "the killed worker to drop out")
    refused(http.post("/v1/jobs", json=MNIST))

    done = wait_status(http, job_id, {"succeeded", "failed", "cancelled"}, timeout_s=300)
    assert done["status"] == "succeeded" and done["waiting_for"] is None, (done, stack.logs())

    first.stop()
    wait_until(lambda: held(http)[0] == 0, 30, "the stopped worker to drop out")
    late = http.post("/v1/jobs", json=MNIST)
    assert late.status_code == 201 and late.json()["waiting_for"] == "worker", late.text
    http.post(f"/v1/jobs/{late.json()['id']}/cancel").raise_for_status()
