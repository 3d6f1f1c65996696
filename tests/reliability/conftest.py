"""Fixtures of the reliability suite, on top of tests/conftest.py (PostgreSQL, Redis, S3).

- `isolated_settings` / `isolated_app` / `api`: the session's settings with a Redis key prefix
  of their own, so the jobs these tests create sit in a queue that no worker of another
  test consumes (they stay `queued` until a test moves them).
- `user`: make a user → `User(headers, id)`.
- `TINY_SPEC`: the smallest real training job (Fashion-MNIST, 1000 samples, CPU seconds).
- `make_stack(**settings)`: a `Stack`: its own uvicorn (and Celery workers on demand), real
  processes in their own process groups (tests/e2e/conftest.py's `start`), so a test can
  kill -9 them; a Redis key prefix of its own, a 3 s lease and a 1 s reaper.
"""

import json
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from client.http import parse_sse
from shared.db import get_engine
from shared.models import ApiKey
from shared.settings import Settings
from tests.conftest import create_postgres_database, drop_postgres_database, free_port, wait_for_port
from tests.e2e.conftest import Process, start, wait_until

ROOT = Path(__file__).resolve().parents[2]
LEASE_TTL_S = 3

TINY_SPEC = {
    "dataset": "fashion-mnist",
    "noise": {"type": "symmetric", "rate": 0.4},
    "loss": "nce+rce",
    "epochs": 2,
    "seed": 0,
    "train_size": 1000,
    "batch_size": 100,
}


@dataclass(frozen=True)
class User:
    headers: dict[str, str]
    id: int
    key_id: int
    key: str


@pytest.fixture(scope="session")
def isolated_settings(settings: Settings) -> Settings:
    """The session's settings with a queue (Redis prefix) that no worker reads."""
    prefix = f"{settings.redis_key_prefix}iso{secrets.token_hex(2)}:"
    return settings.model_copy(update={"redis_key_prefix": prefix})


@pytest.fixture(scope="session")
def isolated_app(isolated_settings: Settings) -> FastAPI:
    from api.main import create_app

    return create_app(isolated_settings)


@pytest.fixture(scope="session")
def api(isolated_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(isolated_app) as client:
        yield client


@pytest.fixture(scope="session")
def user(api: TestClient, admin_headers: dict[str, str], isolated_settings: Settings) -> Callable[[str], User]:
    def make(name: str = "user") -> User:
        response = api.post("/v1/api-keys", json={"name": name}, headers=admin_headers)
        assert response.status_code == 201, response.text
        body = response.json()
        return User({"Authorization": f"Bearer {body['key']}"}, body["user_id"], body["id"], body["key"])

    return make


def db_session(settings: Settings) -> Session:
    return Session(get_engine(settings.database_url))


def stored_key(settings: Settings, key_id: int) -> ApiKey:
    with db_session(settings) as session:
        return session.get(ApiKey, key_id)


# ---------------------------------------------------------------- a whole service, for faults


class Stack:
    """A uvicorn API and Celery workers of this suite only: their own Redis key prefix (a queue
    no other test's worker reads), a short lease, a quick heartbeat and a 1 s reaper, so that
    a killed worker's job comes back within seconds. Processes are real and killable."""

    def __init__(self, name: str, env: dict[str, str], folder: Path, admin_token: str):
        self.name, self.env, self.folder, self.admin_token = name, env, folder, admin_token
        self.api: Process | None = None
        self.url = ""
        self.workers: list[Process] = []
        self.processes: list[Process] = []

    @property
    def settings(self) -> Settings:
        return Settings(**{k.removeprefix("NOISYFIT_").lower(): v for k, v in self.env.items()
                           if k.startswith("NOISYFIT_")})

    def start_api(self, port: int | None = None) -> Process:
        port = port or free_port()
        self.api = start(f"{self.name}-uvicorn{len(self.processes)}",
                         [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
                         self.env, self.folder)
        self.processes.append(self.api)
        self.url = f"http://127.0.0.1:{port}"
        wait_for_port(port, self.api.process, timeout_s=60)
        return self.api

    def start_worker(self, env: dict[str, str] | None = None) -> Process:
        """A Celery worker with the stack's environment, `env` added (e.g. its own NOISYFIT_DATA_DIR)."""
        name = f"{self.name}-worker{len(self.processes)}"
        worker = start(name, [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train",
                              "-n", f"{name}@%h", "--loglevel", "INFO"], {**self.env, **(env or {})}, self.folder)
        self.processes.append(worker)
        wait_until(lambda: " ready." in worker.log.read_text() or worker.process.poll() is not None, 180,
                       f"{name} to be ready")
        assert worker.process.poll() is None, worker.tail()
        self.workers.append(worker)
        return worker

    def client(self, name: str = "user") -> httpx.Client:
        """An httpx client of the API with a new user's key."""
        created = httpx.post(f"{self.url}/v1/api-keys", json={"name": name},
                             headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30)
        assert created.status_code == 201, created.text
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {created.json()['key']}"})

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in self.processes)


@pytest.fixture(scope="session")
def reliability_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for every worker of the suite: Fashion-MNIST is cached once."""
    return tmp_path_factory.mktemp("reliability-data")


@pytest.fixture(scope="module")
def make_stack(service_env: dict[str, str], reliability_data_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """make_stack(env={NOISYFIT_X: ...}, x=...) → a Stack with its API started (workers on demand).

    Each stack has a database of its own: an API's reaper requeues every stale job of its
    database onto its own queue, so stacks sharing one would train each other's jobs."""
    stacks: list[Stack] = []
    databases: list[str] = []

    def make(api: bool = True, env: dict[str, str] | None = None, **overrides: str) -> Stack:
        name = f"s{len(stacks)}{secrets.token_hex(2)}"
        databases.append(create_postgres_database(f"_{name}"))
        full = {
            **os.environ, **service_env,
            "NOISYFIT_DATABASE_URL": databases[-1],
            "NOISYFIT_REDIS_KEY_PREFIX": f"{service_env['NOISYFIT_REDIS_KEY_PREFIX']}{name}:",
            "NOISYFIT_DATA_DIR": str(reliability_data_dir),
            "NOISYFIT_ALLOW_DOWNLOAD": "false",
            "NOISYFIT_LEASE_TTL_S": str(LEASE_TTL_S),
            "NOISYFIT_HEARTBEAT_S": "0.5",
            "NOISYFIT_REAPER_INTERVAL_S": "1",
            "NOISYFIT_MAX_ATTEMPTS": "3",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            **{f"NOISYFIT_{k.upper()}": str(v) for k, v in overrides.items()},
        }
        stack = Stack(name, full, tmp_path_factory.mktemp(name), service_env["NOISYFIT_ADMIN_TOKEN"])
        stacks.append(stack)
        if api:
            stack.start_api()
        return stack

    yield make
    for stack in stacks:
        stack.stop()
    for database in databases:
        drop_postgres_database(database)


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}")
    response.raise_for_status()
    return response.json()


def wait_status(http: httpx.Client, job_id: str, statuses: set[str], timeout_s: float = 300) -> dict[str, Any]:
    return wait_until(lambda: (job := job_of(http, job_id))["status"] in statuses and job, timeout_s,
                          f"job {job_id} to be {'/'.join(sorted(statuses))}", 0.25)


def events_of(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 1000})
    response.raise_for_status()
    return response.json()["events"]


class S3Process:
    """An `rclone serve s3` of one test over its own folder, stopped and started again on the
    same port and folder (an object store outage)."""

    def __init__(self, folder: Path, name: str = "rclone"):
        self.folder, self.name = folder, name
        self.root = folder / "s3-root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.key, self.secret = "nf-rel", secrets.token_hex(12)
        self.process: Process | None = None
        self.starts = 0

    @property
    def env(self) -> dict[str, str]:
        return {"NOISYFIT_S3_ENDPOINT": f"127.0.0.1:{self.port}", "NOISYFIT_S3_ACCESS_KEY": self.key,
                "NOISYFIT_S3_SECRET_KEY": self.secret}

    def start(self) -> None:
        rclone = Path(sys.executable).parent / "rclone"
        self.starts += 1
        self.process = start(f"{self.name}{self.starts}", [
            str(rclone), "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{self.key},{self.secret}",
            "--config", "/dev/null", str(self.root)], dict(os.environ), self.folder)
        wait_for_port(self.port, self.process.process)

    def stop(self) -> None:
        """kill -9: the store vanishes at once, mid-request if one is under way."""
        if self.process is not None:
            self.process.kill()


class Follower:
    """GET /v1/jobs/{id}/events in a thread, from a Last-Event-ID."""

    def __init__(self, http: httpx.Client, job_id: str, last_id: str | None = None):
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self.thread = threading.Thread(target=self._read, args=(http, job_id, headers), daemon=True)
        self.thread.start()

    def _read(self, http: httpx.Client, job_id: str, headers: dict[str, str]) -> None:
        try:
            with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                             timeout=httpx.Timeout(30, read=60)) as response:
                response.raise_for_status()
                for message in parse_sse(response.iter_lines()):
                    if message.data:
                        self.events.append(json.loads(message.data))
        except BaseException as exc:
            self.error = exc

    def ended(self) -> bool:
        return not self.thread.is_alive()


REDIS_SERVER = shutil.which("redis-server")  # Debian's redis-server; scripts/setup.sh installs it


class RedisProcess:
    """A redis-server of the test's own (the machine's Redis is shared, so it is never killed):
    started, killed -9 and started again on the same port and folder."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        self.process = start(f"redis{self.starts}", [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            {}, self.folder)
        wait_for_port(self.port, self.process.process)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A module's own redis-server."""
    server = RedisProcess(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    server.kill()
