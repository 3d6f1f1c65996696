"""Where a small job's time goes in the service, beyond the engine's own training.

    python bench/job_overhead.py --runs 5            # --train-size 500 --epochs 1 by default

Each run is one real job (Fashion-MNIST, --train-size samples, --epochs epochs, on the CPU) taken
and trained as a worker does it: shared.jobs.take_next in this process, then a training process
forked from the fork server as a worker starts it (worker.dispatch.start_process_server), running
worker.tasks.run_taken_job against a real database (SQLite), Redis and S3 store (rclone). In the
training process the phases are timed by wrapping the functions that do them (exclusive times:
a phase nested in another counts once, in the inner one). The first run also writes the data
set's cache; the figures are the median over the later runs.

Its own SQLite database, Redis key prefix on NOISYFIT_REDIS_URL, `rclone serve s3` store and
data folder, in a temporary directory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session  # noqa: E402

from shared import jobs  # noqa: E402
from shared.db import get_engine, init_db  # noqa: E402
from shared.models import User  # noqa: E402
from shared.settings import Settings, get_settings  # noqa: E402
from worker.dispatch import start_process_server  # noqa: E402
from load import free_port, start  # noqa: E402  (bench/ is the script's own folder)

SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "batch_size": 128}
ENGINE = "engine: training and evaluation epochs"
BACKGROUND = " (in a thread, beside the rows below it)"
PHASES: list[tuple[str, str, str]] = [  # (label, module, attribute) of the functions timed in the training process
    ("data set: load", "worker.runner", "load_dataset"),
    ("labels: noise on the full set, subset", "worker.runner", "make_labels"),
    ("data: prepare", "worker.runner", "prepare_data"),
    (ENGINE, "worker.runner", "train"),
    ("after: per-sample losses", "worker.runner", "per_sample_losses"),
    ("after: plot.png", "worker.runner", "job_plot"),
    ("after: checkpoint bytes", "worker.runner", "final_checkpoint"),
    ("after: resume.pt bytes", "worker.runner", "resume_checkpoint"),
    ("after: mislabels csv, noise report", "worker.runner", "mislabels_csv"),
    ("after: mislabels csv, noise report", "worker.runner", "noise_report"),
    ("after: label quality report", "worker.runner", "label_quality"),
    ("after: label_heatmap.png", "worker.runner", "heatmap"),
    ("after: label_probabilities.npz", "worker.runner", "probabilities_npz"),
    ("S3: puts", "worker.sinks", "ObjectStoreSink.put"),
    ("S3: resume.pt look-up", "worker.sinks", "ObjectStoreSink.get"),
    ("DB: progress, cancel checks, finish", "shared.jobs", "update_progress"),
    ("DB: progress, cancel checks, finish", "shared.jobs", "standing"),
    ("DB: progress, cancel checks, finish", "shared.jobs", "finish"),
    ("Redis: events", "shared.stream", "MetricsStream.publish"),
]


class Profile:
    """Exclusive seconds per label of wrapped functions, nesting taken into account (per thread:
    a phase run in a background thread is labelled so, and overlaps the others)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()  # .inner: per open call, seconds spent in wrapped calls inside it

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            inner = self._local.__dict__.setdefault("inner", [])
            inner.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                nested = inner.pop()
                where = "" if threading.current_thread() is threading.main_thread() else BACKGROUND
                self.seconds[label + where] += elapsed - nested
                if inner:
                    inner[-1] += elapsed

        return timed

    def install(self) -> None:
        import importlib

        for label, module_name, attribute in PHASES:
            owner: Any = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, self.wrap(label, getattr(owner, name)))


def measured_job(job_id: str, worker_id: str, forked_at: float, results: Connection, cprofile: bool) -> None:
    """The training process: run_taken_job as worker.dispatch runs it, timed by phase (and by
    cProfile, printed, with --profile)."""
    started = time.monotonic()
    from worker.tasks import run_taken_job

    profile = Profile()
    profile.install()
    if cprofile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        code = profiler.runcall(run_taken_job, job_id, worker_id)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
    else:
        code = run_taken_job(job_id, worker_id)
    total = time.monotonic() - started
    results.send({"exit": code, "process start": started - forked_at, "training process": total,
                  "phases": dict(profile.seconds)})


def one_job(settings: Settings, user_id: int, seed: int, epochs: int, train_size: int,
            cprofile: bool = False) -> dict[str, Any]:
    processes = multiprocessing.get_context("forkserver")
    engine = get_engine(settings.database_url)
    with Session(engine) as session:
        job, _ = jobs.create_job(session, user_id, {**SPEC, "seed": seed, "epochs": epochs, "train_size": train_size},
                                 settings, enqueue=lambda job_id: None)
        job_id = job.id
    began = time.monotonic()
    with Session(engine) as session:
        taken = jobs.take_next(session, job_id, "bench-worker", settings)
    assert taken == job_id, f"took {taken}, not {job_id}"
    took = time.monotonic() - began
    results, result = processes.Pipe(duplex=False)
    process = processes.Process(target=measured_job, args=(job_id, "bench-worker", time.monotonic(), result,
                                                                     cprofile))
    process.start()
    result.close()
    report = results.recv()
    process.join()
    wall = time.monotonic() - began
    with Session(engine) as session:
        status = jobs.get_job(session, user_id, job_id).status
    return {**report, "take (DB)": took, "wall": wall, "status": status,
            "exit and join": wall - took - report["process start"] - report["training process"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print the last run's cProfile (it runs slower)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="noisyfit-overhead-"))
    s3_port = free_port()
    os.environ.update({
        "NOISYFIT_DATABASE_URL": f"sqlite:///{folder / 'noisyfit.db'}",
        "NOISYFIT_REDIS_KEY_PREFIX": f"bench-overhead-{secrets.token_hex(3)}:",
        "NOISYFIT_S3_ENDPOINT": f"127.0.0.1:{s3_port}", "NOISYFIT_S3_SECURE": "false",
        "NOISYFIT_S3_ACCESS_KEY": "bench", "NOISYFIT_S3_SECRET_KEY": secrets.token_hex(12),
        "NOISYFIT_DATA_DIR": str(folder / "data"), "NOISYFIT_ALLOW_DOWNLOAD": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    })
    settings = get_settings()
    (folder / "s3" / settings.s3_bucket).mkdir(parents=True)  # a folder is a bucket
    rclone = Path(sys.executable).parent / "rclone"
    store = start([str(rclone), "serve", "s3", "--addr", settings.s3_endpoint, "--config", "/dev/null",
                   "--auth-key", f"{settings.s3_access_key},{settings.s3_secret_key}", str(folder / "s3")],
                  folder / "s3.log")
    try:
        init_db(get_engine(settings.database_url))
        with Session(get_engine(settings.database_url)) as session:
            user = User(name="bench-overhead")
            session.add(user)
            session.commit()
            user_id = user.id
        start_process_server()  # as a worker starts: the fork server imports the engine and warms up
        runs = []
        for seed in range(args.runs):
            last = seed == args.runs - 1
            runs.append(one_job(settings, user_id, seed, args.epochs, args.train_size, args.profile and last))
            print(f"run {seed + 1}: {runs[-1]['status']} in {runs[-1]['wall']:.2f}s", flush=True)
        measured = runs[1:-1] if args.profile else runs[1:]
        print_breakdown(measured or runs, args)
    finally:
        store.terminate()
        store.wait()
    return 0


def print_breakdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def median(get: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(get(run) for run in runs)

    threads = os.cpu_count()
    print(f"\none job: Fashion-MNIST, {args.train_size} samples, {args.epochs} epoch(s), CPU ({threads} cores); "
          f"median of {len(runs)} warm runs, ms")
    rows = [("take (DB, worker)", median(lambda r: r["take (DB)"])),
            ("process start (fork server)", median(lambda r: r["process start"]))]
    labels = list(dict.fromkeys(label for label, _, _ in PHASES))
    for label in labels:
        for shown in (label, label + BACKGROUND):
            if any(shown in run["phases"] for run in runs):
                rows.append((shown, median(lambda r: r["phases"].get(shown, 0.0))))
    rows.append(("other in the training process", median(
        lambda r: r["training process"] - sum(t for label, t in r["phases"].items() if BACKGROUND not in label))))
    rows.append(("exit and join", median(lambda r: r["exit and join"])))
    for label, seconds in rows:
        print(f"  {label:72} {seconds * 1e3:8.0f}")
    wall, engine = median(lambda r: r["wall"]), median(lambda r: r["phases"][ENGINE])
    print(f"  {'total (take to exit)':72} {wall * 1e3:8.0f}")
    print(f"service beyond the engine: {(wall - engine) * 1e3:.0f} ms (engine {engine * 1e3:.0f} ms)")


if __name__ == "__main__":
    sys.exit(main())
