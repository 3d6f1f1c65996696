"""How long one worker takes to drain messages of cancelled jobs, next to one real training start.

    python bench/drain.py --messages 500            # and --no-train to skip the training start

With no worker running, it creates --messages jobs through the service layer (shared.jobs:
stored, and their messages sent to the real Redis queue), cancels them all, then starts one
real `celery -A worker.app worker` process and times it from " ready." until it has answered
every message ("not taken" in its log) and the queue is empty. The worker's own log times
(first message received → last answered) give the figure per message. Then it submits one
small real job (Fashion-MNIST, 1 epoch of 1000 samples), then a second, and times each start:
the message received → its training process forked → its first training step → succeeded.
The first may wait for the fork server to finish importing torch after the worker's start.

Everything is its own: a SQLite database (or --database-url), a Redis key prefix of its own
on NOISYFIT_REDIS_URL, an `rclone serve s3` store and a data folder in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from sqlmodel import Session  # noqa: E402

from shared import jobs  # noqa: E402
from shared.db import get_engine, init_db  # noqa: E402
from shared.models import User  # noqa: E402
from shared.queue import queue_key  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stream import get_stream  # noqa: E402
from load import free_port, start  # noqa: E402  (bench/ is the script's own folder)

SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce",
        "epochs": 1, "train_size": 1000, "batch_size": 100}
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")
NOT_TAKEN = ": not taken"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--database-url", help="default: SQLite in the temporary folder")
    parser.add_argument("--no-train", action="store_true", help="skip the real training start")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the drain")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="noisyfit-drain-"))
    s3_port = free_port()
    env = {
        **os.environ,
        "NOISYFIT_DATABASE_URL": args.database_url or f"sqlite:///{folder / 'noisyfit.db'}",
        "NOISYFIT_REDIS_KEY_PREFIX": f"bench-drain-{secrets.token_hex(3)}:",
        "NOISYFIT_S3_ENDPOINT": f"127.0.0.1:{s3_port}", "NOISYFIT_S3_SECURE": "false",
        "NOISYFIT_S3_ACCESS_KEY": "bench", "NOISYFIT_S3_SECRET_KEY": secrets.token_hex(12),
        "NOISYFIT_DATA_DIR": str(folder / "data"), "NOISYFIT_ALLOW_DOWNLOAD": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(**{k.removeprefix("NOISYFIT_").lower(): v for k, v in env.items()
                           if k.startswith("NOISYFIT_") and k.removeprefix("NOISYFIT_").lower() in Settings.model_fields})
    settings = settings.model_copy(update={"max_active_jobs_per_user": args.messages + 1})
    processes: list[subprocess.Popen] = []
    try:
        (folder / "s3" / settings.s3_bucket).mkdir(parents=True)  # a folder is a bucket
        rclone = Path(sys.executable).parent / "rclone"
        processes.append(start([str(rclone), "serve", "s3", "--addr", f"127.0.0.1:{s3_port}", "--config", "/dev/null",
                                 "--auth-key", f"{settings.s3_access_key},{settings.s3_secret_key}",
                                 str(folder / "s3")], folder / "s3.log", env))
        engine = get_engine(settings.database_url)
        init_db(engine)
        with Session(engine) as session:
            user = User(name="bench-drain")
            session.add(user)
            session.commit()
            user_id = user.id
            made = time.perf_counter()
            for seed in range(args.messages):
                job, _ = jobs.create_job(session, user_id, {**SPEC, "seed": seed}, settings)
                jobs.request_cancel(session, user_id, job.id, settings)
            made = time.perf_counter() - made
        queue = redis.Redis.from_url(settings.redis_url)
        print(f"{args.messages} jobs created and cancelled in {made:.1f}s; "
              f"{queue.llen(queue_key(settings))} messages wait in the queue")

        log = folder / "worker.log"
        worker = start([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train",
                         "-n", "bench-drain@%h", "--loglevel", "INFO"], log, env)
        processes.append(worker)
        _wait(lambda: " ready." in log.read_text(errors="replace"), 300, worker, "the worker to be ready")
        ready = time.perf_counter()
        _wait(lambda: log.read_text(errors="replace").count(NOT_TAKEN) >= args.messages
              and queue.llen(queue_key(settings)) == 0, args.timeout, worker, "the worker to drain the queue")
        wall = time.perf_counter() - ready
        lines = log.read_text(errors="replace").splitlines()
        first = _time_of(next(line for line in lines if "] received" in line))
        last = _time_of([line for line in lines if NOT_TAKEN in line][-1])
        span = (last - first).total_seconds()
        print(f"drain: {args.messages} messages of cancelled jobs in {wall:.2f}s after the worker was ready "
              f"(worker log: first received → last answered {span:.2f}s, "
              f"{span / args.messages * 1e3:.1f} ms per message)")
        if not args.no_train:
            for which, seed in (("first", 10**6), ("second", 10**6 + 1)):
                print(f"{which} real training start: {_training_start(settings, user_id, seed, log, worker)}")
    finally:
        for process in reversed(processes):
            _stop(process)
    return 0


def _training_start(settings: Settings, user_id: int, seed: int, log: Path, worker: subprocess.Popen) -> str:
    """Submit one small real job; how long its start took, read from the worker log and its events."""
    before = len(log.read_text(errors="replace").splitlines())
    with Session(get_engine(settings.database_url)) as session:
        job, _ = jobs.create_job(session, user_id, {**SPEC, "seed": seed}, settings)
    stream = get_stream(settings)

    def events() -> list[dict]:
        return stream.read(job.id, None, 1000)[0]

    _wait(lambda: any(e["type"] == "done" for e in events()), 600, worker, f"job {job.id} to finish")
    lines = log.read_text(errors="replace").splitlines()[before:]
    received = _time_of(next(line for line in lines if "] received" in line))
    forked = _time_of(next(line for line in lines if "training in process" in line))
    step = min(datetime.fromtimestamp(int(e["id"].split("-")[0]) / 1000) for e in events() if e["type"] == "step")
    done = next(e for e in events() if e["type"] == "done")
    end = datetime.fromtimestamp(int(done["id"].split("-")[0]) / 1000)
    return (f"training process forked {(forked - received).total_seconds() * 1e3:.0f} ms after its message, "
            f"first training step after {(step - received).total_seconds():.1f}s, {done['status']} after "
            f"{(end - received).total_seconds():.1f}s ({SPEC['train_size']} Fashion-MNIST samples, 1 epoch)")


def _time_of(line: str) -> datetime:
    match = LOG_TIME.match(line)
    if match is None:
        raise ValueError(f"no time in the worker log line {line!r}")
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")




def _wait(ready, timeout_s: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            raise RuntimeError(f"the process waited on exited with {process.returncode} before {what}")
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout_s:.0f}s for {what}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


if __name__ == "__main__":
    sys.exit(main())
