"""Real services for the tests, started once per session.

- `postgres_url`: a fresh database `noisyfit_test_<pid>_<hex>` on the local PostgreSQL, dropped at the end;
  `make_postgres_database()` → the URL of another fresh one (dropped after the test); `pg_admin(sql)`.
- `redis_prefix`: a key prefix of this session on the local Redis; only its keys are deleted at the end.
- `s3_server`: `rclone serve s3` (the binary beside sys.executable) on a free port over a temp folder.
- `service_env`: the NOISYFIT_* variables of all three, exported to os.environ, so that
  subprocesses (uvicorn, a Celery worker) inherit them; `settings` is the same as a Settings.
- `sqlite_settings`, `db_settings` (parametrized: PostgreSQL and SQLite), `session`.
- `app`, `client` (TestClient, lifespan run), `admin_headers`, `make_user` (→ headers of a new
  user's key), `user_headers`, `other_user_headers`, `live_api` (a real uvicorn process: .url, .process).
- `ui_sign_in(client, key)`: sign a TestClient into the dashboard (/ui) as a browser does;
  `csrf_token(html)`: the token of a page's forms.
- `store_trained_job(...)`: a succeeded job's row and the artifacts that versions read, without training.
"""

import csv
import io
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from shared.db import get_engine, init_db
from shared.jobs import _data_info, new_job
from shared.models import utcnow
from shared.settings import Settings, get_settings
from shared.spec import JobSpec, resolve_spec
from shared.store import artifact_key, get_store

PG_ADMIN_DSN = os.environ.get("NOISYFIT_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
REDIS_URL = os.environ.get("NOISYFIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent

Headers = dict[str, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s}s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def pg_admin(statement: str) -> None:
    """Run `statement` (CREATE/DROP DATABASE) as the admin of the local PostgreSQL."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(statement)


def create_postgres_database(tag: str = "") -> str:
    """A fresh database `noisyfit_test_<pid>_<hex><tag>` → its URL (postgresql://, no driver named)."""
    name = f"noisyfit_test_{os.getpid()}_{secrets.token_hex(3)}{tag}"
    pg_admin(f'CREATE DATABASE "{name}"')
    with psycopg.connect(PG_ADMIN_DSN) as connection:
        info = connection.info
        return f"postgresql://{info.user}@{info.host}:{info.port}/{name}"


def drop_postgres_database(url: str) -> None:
    pg_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
def make_postgres_database() -> Iterator[Callable[[], str]]:
    urls: list[str] = []

    def make() -> str:
        urls.append(create_postgres_database())
        return urls[-1]

    yield make
    for url in urls:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"nftest:{os.getpid()}:{secrets.token_hex(3)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    root: Path
    process: subprocess.Popen


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    rclone = Path(sys.executable).parent / "rclone"
    if not rclone.exists():
        rclone = Path(shutil.which("rclone") or "rclone")
    root = tmp_path_factory.mktemp("s3")
    port = free_port()
    key, secret = "nf-test", secrets.token_hex(12)
    process = subprocess.Popen(
        [str(rclone), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{key},{secret}",
         "--config", "/dev/null", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield S3Server(f"127.0.0.1:{port}", key, secret, root, process)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def service_env(postgres_url: str, redis_prefix: str, s3_server: S3Server) -> Iterator[dict[str, str]]:
    env = {
        "NOISYFIT_DATABASE_URL": postgres_url,
        "NOISYFIT_REDIS_URL": REDIS_URL,
        "NOISYFIT_REDIS_KEY_PREFIX": redis_prefix,
        "NOISYFIT_S3_ENDPOINT": s3_server.endpoint,
        "NOISYFIT_S3_ACCESS_KEY": s3_server.access_key,
        "NOISYFIT_S3_SECRET_KEY": s3_server.secret_key,
        "NOISYFIT_S3_BUCKET": "noisyfit-test",
        "NOISYFIT_S3_SECURE": "false",
        "NOISYFIT_S3_REGION": "us-east-1",
        "NOISYFIT_ADMIN_TOKEN": "admin-" + secrets.token_hex(12),
        "NOISYFIT_REAPER_INTERVAL_S": "0",
        "NOISYFIT_SSE_HEARTBEAT_S": "0.5",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield env
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    settings = Settings()
    init_db(get_engine(settings.database_url))
    return settings


@pytest.fixture(scope="session")
def sqlite_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("sqlite") / "noisyfit.db"
    sqlite = settings.model_copy(update={"database_url": f"sqlite:///{path}"})
    init_db(get_engine(sqlite.database_url))
    return sqlite


@pytest.fixture(params=["postgresql", "sqlite"])
def db_settings(request: pytest.FixtureRequest, settings: Settings, sqlite_settings: Settings) -> Settings:
    """The same test on PostgreSQL and on SQLite."""
    return settings if request.param == "postgresql" else sqlite_settings


@pytest.fixture
def session(db_settings: Settings) -> Iterator[Session]:
    with Session(get_engine(db_settings.database_url)) as session:
        yield session


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    from api.main import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def admin_headers(settings: Settings) -> Headers:
    return {"Authorization": f"Bearer {settings.admin_token}"}


@pytest.fixture(scope="session")
def make_user(client: TestClient, admin_headers: Headers) -> Callable[..., Headers]:
    """make_user(name) → the Authorization headers of a new user's fresh key."""
    def make(name: str = "tester") -> Headers:
        response = client.post("/v1/api-keys", json={"name": name}, headers=admin_headers)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['key']}"}

    return make


@pytest.fixture
def user_headers(make_user: Callable[..., Headers]) -> Headers:
    return make_user("alice")


@pytest.fixture
def other_user_headers(make_user: Callable[..., Headers]) -> Headers:
    return make_user("mallory")


def csrf_token(html: str) -> str:
    """The CSRF token a dashboard page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def ui_sign_in(client: TestClient, key: str) -> TestClient:
    """Sign `client` into the dashboard with an API key, as the sign-in form does; its cookie jar
    then holds the session."""
    token = csrf_token(client.get("/ui/login").text)
    response = client.post("/ui/login", data={"api_key": key, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


@dataclass(frozen=True)
class LiveApi:
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="session")
def live_api(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """A real `uvicorn api.main:app` process with the session's settings."""
    port = free_port()
    log = (tmp_path_factory.mktemp("uvicorn") / "uvicorn.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **service_env}, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process, timeout_s=60)
        httpx.get(f"{base}/healthz", timeout=10).raise_for_status()
        yield LiveApi(base, process)
    finally:
        stop(process)
        log.close()


def store_trained_job(settings: Settings, user_id: int, spec: dict, *, noisy: np.ndarray, clean: np.ndarray,
                      train_indices: np.ndarray, val_indices: np.ndarray, suspects: list[dict],
                      status: str = "succeeded") -> str:
    """A job as a worker leaves it (its row; noisy_labels.npz and suspected_mislabels.csv with the
    `suspects` rows in the store), without training: for tests of what reads a finished job."""
    with Session(get_engine(settings.database_url)) as session:
        parsed = JobSpec.parse(spec)
        job = new_job(user_id, resolve_spec(parsed, _data_info(session, user_id, parsed.dataset)).to_json())
        job.status, job.finished_at, job.result = status, utcnow(), {"final_test_accuracy": 0.5}
        session.add(job)
        session.commit()
        job_id = job.id
    labels = io.BytesIO()
    np.savez(labels, noisy=noisy, clean=clean, corrupted=noisy != clean, train_indices=train_indices,
             val_indices=val_indices)
    table = io.StringIO()
    columns = list(dict.fromkeys(name for row in suspects for name in row)) or ["index", "noisy_label", "predicted",
                                                                                "confidence", "loss", "rank"]
    writer = csv.DictWriter(table, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(suspects)
    store = get_store(settings)
    store.put_bytes(artifact_key(job_id, "noisy_labels.npz"), labels.getvalue())
    store.put_bytes(artifact_key(job_id, "suspected_mislabels.csv"), table.getvalue().encode())
    return job_id
