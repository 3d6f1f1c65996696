"""Real processes for the end-to-end tests: `uvicorn api.main:app` and a Celery worker.

Both run with a PostgreSQL database and Redis prefix of their own and the session's rclone S3 server
(tests/conftest.py), and with a short job lease, a quick heartbeat and the API's reaper on,
so that a job whose worker is killed is requeued within seconds. Nothing is eager or mocked:
jobs go over HTTP, through the Redis queue, to the worker process. When a test fails, the
tail of both processes' logs is printed with it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.http import parse_sse
from shared.settings import Settings
from tests.conftest import ROOT, Headers, create_postgres_database, drop_postgres_database, free_port, wait_for_port

# Small enough for two shared CPU cores: one epoch of 1000 samples and a 10 000-image test pass.
TINY_JOB = {
    "dataset": "fashion-mnist",
    "noise": {"type": "symmetric", "rate": 0.4},
    "loss": "nce+rce",
    "epochs": 2,
    "train_size": 1000,
    "seed": 0,
}
FINISHED = {"succeeded", "failed", "cancelled"}
LEASE_TTL_S = 4


@dataclass
class Process:
    """A server process of this session, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
        """Stop it (all of its group: a prefork worker's pool child too)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # a pool child that outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the group, as when a machine dies: no shutdown code runs."""
        self.stop(signal.SIGKILL)


def start(name: str, args: list[str], env: dict[str, str], folder: Path) -> Process:
    log = folder / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return Process(name, process, log)


@pytest.fixture(scope="session")
def e2e_database() -> Iterator[str]:
    url = create_postgres_database("_e2e")
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def e2e_env(service_env: dict[str, str], e2e_database: str,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the API and worker processes. Their own database and Redis key prefix
    keep them apart from the jobs other suites leave queued: a worker takes whichever queued job
    of its database is next (shared.scheduling), so a database pairs with one queue."""
    return {
        **os.environ,
        **service_env,
        "NOISYFIT_DATABASE_URL": e2e_database,
        "NOISYFIT_REDIS_KEY_PREFIX": f"{service_env['NOISYFIT_REDIS_KEY_PREFIX']}e2e:",
        "NOISYFIT_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "NOISYFIT_ALLOW_DOWNLOAD": "false",
        "NOISYFIT_LEASE_TTL_S": str(LEASE_TTL_S),
        "NOISYFIT_HEARTBEAT_S": "0.5",
        "NOISYFIT_REAPER_INTERVAL_S": "1",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    """The settings of the API and worker processes."""
    fields = {key.removeprefix("NOISYFIT_").lower(): value for key, value in e2e_env.items()}
    return Settings(**{name: value for name, value in fields.items() if name in Settings.model_fields})


@pytest.fixture(scope="session")
def processes() -> list[Process]:
    """Every process the e2e session started, for the logs of a failed test."""
    return []


@pytest.fixture(scope="session")
def api(e2e_env: dict[str, str], processes: list[Process],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `uvicorn api.main:app`; yields its base URL once /readyz answers."""
    port = free_port()
    server = start("uvicorn", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                               "--port", str(port)], e2e_env, tmp_path_factory.mktemp("api"))
    processes.append(server)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, server.process, timeout_s=60)
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, "the API to be ready")
        yield url
    finally:
        server.stop()


class Workers:
    """Celery worker processes: `celery -A worker.app worker -Q train`, as deployed."""

    def __init__(self, env: dict[str, str], folder: Path, processes: list[Process]):
        self.env, self.folder, self.processes = env, folder, processes
        self.current: Process | None = None

    def start(self) -> Process:
        name = f"worker{len(self.processes)}"
        worker = start(name, [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train",
                              "-n", f"{name}@%h", "--loglevel", "INFO"], self.env, self.folder)
        self.processes.append(worker)
        wait_until(lambda: " ready." in worker.log.read_text() or worker.process.poll() is not None, 120,
                   "the worker to be ready")
        assert worker.process.poll() is None, worker.tail()
        self.current = worker
        return worker

    def ensure_running(self) -> Process:
        if self.current is None or self.current.process.poll() is not None:
            return self.start()
        return self.current


@pytest.fixture(scope="session")
def workers(e2e_env: dict[str, str], processes: list[Process],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pool = Workers(e2e_env, tmp_path_factory.mktemp("workers"), processes)
    yield pool
    for process in processes:
        if process.name.startswith("worker"):
            process.stop()


@pytest.fixture
def worker(workers: Workers) -> Process:
    """A live worker (started again if a test killed the last one)."""
    return workers.ensure_running()


def live_user(url: str, env: dict[str, str], name: str) -> Headers:
    """The Authorization headers of a new user's key, made by the live API (its own database)."""
    admin = {"Authorization": f"Bearer {env['NOISYFIT_ADMIN_TOKEN']}"}
    created = httpx.post(f"{url}/v1/api-keys", json={"name": name}, headers=admin, timeout=30)
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


@pytest.fixture(scope="session")
def http(api: str, e2e_env: dict[str, str]) -> Iterator[httpx.Client]:
    """An httpx client of the live API, with a fresh user's key."""
    with httpx.Client(base_url=api, headers=live_user(api, e2e_env, "e2e"), timeout=30) as client:
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for process in getattr(item, "funcargs", {}).get("processes", []):
            report.sections.append((f"{process.name} log (tail)", process.tail()))


# ---------------------------------------------------------------- helpers of the tests


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"waited {timeout_s}s for {what}")


def submit(http: httpx.Client, **changes: Any) -> dict[str, Any]:
    response = http.post("/v1/jobs", json={**TINY_JOB, **changes})
    assert response.status_code == 201, response.text
    return response.json()


def get_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return response.json()


def wait_for_status(http: httpx.Client, job_id: str, statuses: set[str], timeout_s: float = 300) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until its status is one of `statuses`."""
    return wait_until(lambda: (job := get_job(http, job_id))["status"] in statuses and job,
                      timeout_s, f"job {job_id} to be {'/'.join(sorted(statuses))}", interval_s=0.5)


def metrics(http: httpx.Client, job_id: str, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
    response = http.get(f"/v1/jobs/{job_id}/metrics", params=params)
    response.raise_for_status()
    return response.json()


def wait_for_event(http: httpx.Client, job_id: str, match: Callable[[dict[str, Any]], bool],
                   timeout_s: float = 300) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in metrics(http, job_id)["events"] if match(e)), None)

    return wait_until(found, timeout_s, f"an event of job {job_id}", interval_s=0.5)


@dataclass
class SseFollower:
    """Reads GET /v1/jobs/{id}/events in a thread from the moment of submission.

    For each event it records the job's status as GET /v1/jobs/{id} answered right after the
    event arrived, which tells a live event from one replayed after the job finished."""

    http: httpx.Client
    job_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    status_at_arrival: list[str] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> "SseFollower":
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            with self.http.stream("GET", f"/v1/jobs/{self.job_id}/events", timeout=httpx.Timeout(30, read=60)) as r:
                r.raise_for_status()
                for message in parse_sse(r.iter_lines()):
                    if not message.data:
                        continue
                    event = json.loads(message.data)
                    assert message.id == event["id"]
                    self.events.append(event)
                    self.status_at_arrival.append(get_job(self.http, self.job_id)["status"])
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self, timeout_s: float = 300) -> list[dict[str, Any]]:
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the event stream did not end"
        if self.error is not None:
            raise self.error
        return self.events


@dataclass
class FinishedJob:
    job: dict[str, Any]  # as GET /v1/jobs/{id} answered once it finished
    sse: SseFollower  # its event stream, followed from submission


@pytest.fixture(scope="session")
def trained_job(http: httpx.Client, workers: Workers) -> FinishedJob:
    """TINY_JOB, submitted over HTTP and followed to its end by polling and by SSE."""
    workers.ensure_running()
    job = submit(http)
    sse = SseFollower(http, job["id"]).start()
    finished = wait_for_status(http, job["id"], FINISHED)
    sse.join()
    return FinishedJob(finished, sse)
