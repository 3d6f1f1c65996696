"""Load test of the API on loopback: many concurrent submissions and polls, every job recorded once.

    python bench/load.py --jobs 300 --concurrency 64            # starts uvicorn (+ --worker) itself
    python bench/load.py --url http://127.0.0.1:8000 --admin-token T --jobs 300

Each job is submitted twice at once with the same Idempotency-Key (a client retrying), then
polled, and every user's list is read page by page. It checks that no request failed, that
each key names exactly one job, that the lists hold exactly the submitted jobs and (with a
database URL) that the database has exactly one row per key; then it cancels what it created
and prints latency percentiles per kind of request. Settings come from NOISYFIT_* variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce",
        "epochs": 1, "train_size": 100, "batch_size": 100}
JOBS_PER_USER = 40  # below the default per-user limit of active jobs (50)


@dataclass
class Report:
    jobs: int
    users: int
    wall_s: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    job_ids: dict[str, str] = field(default_factory=dict)  # idempotency key → job id
    listed: int = 0
    db_rows: int | None = None

    def percentiles(self, kind: str) -> dict[str, float]:
        values = sorted(self.latencies[kind])
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"n": len(values), "p50_ms": pick(0.50) * 1e3, "p95_ms": pick(0.95) * 1e3,
                "p99_ms": pick(0.99) * 1e3, "max_ms": values[-1] * 1e3}

    def problems(self) -> list[str]:
        found = list(self.errors[:20])
        if len(self.job_ids) != self.jobs:
            found.append(f"{self.jobs} jobs submitted, {len(self.job_ids)} keys answered with a job")
        if len(set(self.job_ids.values())) != len(self.job_ids):
            found.append("two idempotency keys answered with the same job")
        if self.listed != self.jobs:
            found.append(f"GET /v1/jobs lists {self.listed} jobs, {self.jobs} were submitted")
        if self.db_rows is not None and self.db_rows != self.jobs:
            found.append(f"the database holds {self.db_rows} rows for {self.jobs} submitted jobs")
        return found

    def render(self) -> str:
        lines = [f"{self.jobs} jobs by {self.users} users in {self.wall_s:.1f}s; "
                 f"answers: {dict(sorted(self.statuses.items()))}",
                 f"{'request':<10} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
        for kind in sorted(self.latencies):
            p = self.percentiles(kind)
            lines.append(f"{kind:<10} {p['n']:>6} {p['p50_ms']:>8.1f} {p['p95_ms']:>8.1f} {p['p99_ms']:>8.1f} "
                         f"{p['max_ms']:>8.1f}")
        lines.append(f"listed {self.listed}, database rows {self.db_rows}; "
                     + ("OK: every job recorded exactly once" if not self.problems() else
                        "PROBLEMS: " + "; ".join(self.problems())))
        return "\n".join(lines)


async def _timed(report: Report, kind: str, client: httpx.AsyncClient, method: str, url: str,
                 ok: tuple[int, ...] = (200,), **kw: Any) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        report.errors.append(f"{kind} {url}: {type(exc).__name__}: {exc}")
        return None
    report.latencies[kind].append(time.perf_counter() - start)
    report.statuses[f"{kind} {response.status_code}"] += 1
    if response.status_code not in ok:
        report.errors.append(f"{kind} {url}: {response.status_code} {response.text[:200]}")
        return None
    return response


async def run_load(base_url: str, admin_token: str, jobs: int = 300, concurrency: int = 64, polls: int = 3,
                   database_url: str | None = None, cancel: bool = True, timeout_s: float = 300) -> Report:
    """Submit `jobs` jobs (each twice, at once, with one key), poll each `polls` times, list and count."""
    users = max(1, -(-jobs // JOBS_PER_USER))
    report = Report(jobs, users)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        admin = {"Authorization": f"Bearer {admin_token}"}
        keys = []
        for i in range(users):
            created = await _timed(report, "key", client, "POST", "/v1/api-keys", (201,),
                                   json={"name": f"load-{i}"}, headers=admin)
            if created is None:
                return report
            keys.append(created.json())
        headers = [{"Authorization": f"Bearer {k['key']}"} for k in keys]
        owner: dict[str, dict[str, str]] = {}  # job id → its user's headers

        async def one(i: int) -> None:
            auth = headers[i % users]
            key = f"load-{uuid.uuid4().hex}"
            async with gate:
                sent = [_timed(report, "submit", client, "POST", "/v1/jobs", (200, 201),
                               json={**SPEC, "seed": i}, headers={**auth, "Idempotency-Key": key})
                        for _ in range(2)]
                answers = [r for r in await asyncio.gather(*sent) if r is not None]
            ids = {r.json()["id"] for r in answers}
            if len(ids) > 1:
                report.errors.append(f"key {key} answered with {sorted(ids)}")
            if not ids:
                return
            report.job_ids[key] = job_id = ids.pop()
            owner[job_id] = auth
            for _ in range(polls):
                async with gate:
                    await _timed(report, "poll", client, "GET", f"/v1/jobs/{job_id}", headers=auth)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(jobs))), timeout_s)
        report.wall_s = time.perf_counter() - start

        mine = set(report.job_ids.values())
        for auth in headers:
            cursor = None
            while True:
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = await _timed(report, "list", client, "GET", "/v1/jobs", params=params, headers=auth)
                if page is None:
                    break
                body = page.json()
                report.listed += sum(1 for job in body["jobs"] if job["id"] in mine)
                cursor = body["next"]
                if not cursor:
                    break
        if database_url:
            report.db_rows = _count_rows(database_url, [k["user_id"] for k in keys])
        if cancel:
            async def stop(job_id: str, auth: dict[str, str]) -> None:
                async with gate:
                    await _timed(report, "cancel", client, "POST", f"/v1/jobs/{job_id}/cancel", (200, 409),
                                 headers=auth)

            await asyncio.gather(*(stop(job_id, auth) for job_id, auth in owner.items()))
    return report


def _count_rows(database_url: str, user_ids: list[int]) -> int:
    from sqlalchemy import text

    from shared.db import get_engine

    engine = get_engine(database_url)
    with engine.connect() as connection:
        query = text("SELECT count(*) FROM job WHERE user_id = ANY(:ids)") if engine.dialect.name == "postgresql" \
            else text(f"SELECT count(*) FROM job WHERE user_id IN ({','.join(str(int(i)) for i in user_ids)})")
        return int(connection.execute(query, {"ids": user_ids}).scalar_one())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A benchmark's process (uvicorn, a worker) in a session of its own, logging to `log`."""
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API; default: start uvicorn here with the NOISYFIT_* settings")
    parser.add_argument("--admin-token", default=os.environ.get("NOISYFIT_ADMIN_TOKEN", ""))
    parser.add_argument("--database-url", default=os.environ.get("NOISYFIT_DATABASE_URL"),
                        help="count the rows in this database too")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--polls", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help="also start one Celery worker (with --url unset)")
    parser.add_argument("--keep", action="store_true", help="leave the jobs queued instead of cancelling them")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.admin_token:
        parser.error("an admin token is needed (--admin-token or NOISYFIT_ADMIN_TOKEN) to create the load's users")
    started: list[subprocess.Popen] = []
    url = args.url
    try:
        if url is None:
            port = free_port()
            log = ROOT / "var" / "bench-load.log"
            log.parent.mkdir(exist_ok=True)
            started.append(start([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
                                   "--log-level", "warning"], log))
            if args.worker:
                started.append(start([sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "train",
                                       "--loglevel", "warning"], log))
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, started[0])
        report = asyncio.run(run_load(url, args.admin_token, args.jobs, args.concurrency, args.polls,
                                      args.database_url, cancel=not args.keep))
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
    if args.json:
        print(json.dumps({"jobs": report.jobs, "wall_s": report.wall_s, "problems": report.problems(),
                          **{kind: report.percentiles(kind) for kind in report.latencies}}, indent=2))
    else:
        print(report.render())
    return 1 if report.problems() else 0


def start_api(name: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """uvicorn with the NOISYFIT_* settings on a free port, logging to var/bench-NAME.log, once it
    answers /healthz: its URL and process (stop it with os.killpg(process.pid, SIGTERM))."""
    port = free_port()
    log = ROOT / "var" / f"bench-{name}.log"
    log.parent.mkdir(exist_ok=True)
    api = start([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level", "warning"],
                log, env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, api)
    return url, api


def wait_healthy(url: str, api: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with {api.returncode}; see its log")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the API at {url} did not answer within {timeout_s}s")


if __name__ == "__main__":
    sys.exit(main())
