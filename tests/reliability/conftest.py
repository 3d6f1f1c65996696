"""Fixtures of the reliability suite, on top of tests/conftest.py (PostgreSQL, Redis, S3).

- `isolated_settings` / `isolated_app` / `api`: the session's settings with a Redis key prefix
  of their own, so the jobs these tests create sit in a queue that no worker of another
  test consumes (they stay `queued` until a test moves them).
- `user`: make a user → `User(headers, id)`.
- `TINY_SPEC`: the smallest real training job (Fashion-MNIST, 1000 samples, CPU seconds).
- `Proc`: start/stop real processes in their own process group (kill -9 of the group).
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from shared.db import get_engine
from shared.models import ApiKey
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

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


class Proc:
    """A real process in its own process group, its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.args, self.log_path = args, log
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group (a Celery worker and its pool children)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)

    def stop(self, timeout_s: float = 15) -> None:
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.1) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"waited {timeout_s}s for {what}")
