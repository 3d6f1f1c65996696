"""The service the documentation's commands talk to: `uvicorn api.main:app` and one Celery
worker, started as tests/e2e starts them (its helpers and settings), on a Redis queue of their
own, for the length of this folder's module; and a fresh user for each document."""

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import free_port, wait_for_port
from tests.e2e.conftest import (  # noqa: F401  (e2e_env and the report hook register here)
    Process,
    Workers,
    e2e_database,
    e2e_env,
    live_user,
    pytest_runtest_makereport,
    start,
    wait_until,
)


@dataclass(frozen=True)
class Service:
    url: str
    workers: Workers


@pytest.fixture(scope="module")
def processes() -> list[Process]:
    """This folder's processes; their logs' tails join a failed test's report."""
    return []


@pytest.fixture(scope="module")
def service(e2e_env: dict[str, str], processes: list[Process],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:  # fmt: skip
    env = {**e2e_env, "NOISYFIT_REDIS_KEY_PREFIX": e2e_env["NOISYFIT_REDIS_KEY_PREFIX"] + "docs:"}
    folder = tmp_path_factory.mktemp("docs-service")
    port = free_port()
    api = start("uvicorn", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                            "--port", str(port)], env, folder)  # fmt: skip
    processes.append(api)
    url = f"http://127.0.0.1:{port}"
    workers = Workers(env, folder, processes)
    try:
        wait_for_port(port, api.process, timeout_s=60)
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, "the API to be ready")
        workers.start()
        yield Service(url, workers)
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.fixture
def api_key(service: Service, e2e_env: dict[str, str]) -> Iterator[str]:
    """A fresh user's key; at the end, the jobs it left queued or running are cancelled, so that
    a sweep a document submits does not keep the worker from the next document's jobs."""
    key = live_user(service.url, e2e_env, "docs")["Authorization"].removeprefix("Bearer ")
    yield key
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for status in ("queued", "running"):
            for job in list_all(http, status):
                http.post(f"/v1/jobs/{job['id']}/cancel")


def list_all(http: httpx.Client, status: str) -> list[dict]:
    jobs, cursor = [], None
    while True:
        page = http.get("/v1/jobs", params={"status": status, "limit": 200} | ({"cursor": cursor} if cursor else {}))
        page.raise_for_status()
        jobs += page.json()["jobs"]
        cursor = page.json().get("next")
        if not cursor:
            return jobs
