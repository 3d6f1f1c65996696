"""Open event streams against one API process: how other requests fare while N streams wait.

    python bench/streams.py --streams 500                      # starts uvicorn itself
    python bench/streams.py --url http://127.0.0.1:8000 --admin-token T --streams 500

One user submits --jobs jobs (to a queue no worker reads, when it starts uvicorn itself) and
opens --streams GET /v1/jobs/{id}/events over them. Then --requests requests (GET
/v1/jobs/{id} and /healthz, alternately, --concurrency at a time) are timed twice: before
the streams open and while they are open; the streams are read by another process, as if
from other machines. Last, one event is published to every job and its arrival on every
stream is timed, and the API's CPU while the streams wait (only when it started uvicorn: it
knows the Redis prefix and the process).
It fails (exit 1) if a request or a stream fails, or a stream ends early; then it cancels the
jobs, which ends the streams. Settings come from NOISYFIT_* variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from load import ROOT, SPEC, start_api


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1e3  # noqa: E731
    return {"n": len(values), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "max_ms": values[-1] * 1e3}


class Stream:
    """One open event stream, read in a task; `arrived` notes when (wall clock) each event id came."""

    def __init__(self, client: httpx.AsyncClient, job_id: str):
        self.job_id = job_id
        self.arrived: dict[str, float] = {}
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: httpx.AsyncClient) -> None:
        try:
            async with client.stream("GET", f"/v1/jobs/{self.job_id}/events") as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {(await response.aread())[:200]!r}")
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        self.arrived[line[4:]] = time.time()
                        self.opened.set()
        finally:
            self.opened.set()  # opened, or failed to


def hold_streams(url: str, headers: dict[str, str], job_ids: list[str], streams: int, pipe: Connection) -> None:
    """In a process of its own (as if on other machines), so that reading the streams does not
    slow the client that times the requests: opens the streams, says so, and on request
    reports which are still open and when each event arrived; ends when the streams end."""
    async def hold() -> None:
        limits = httpx.Limits(max_connections=streams + 10)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                     timeout=httpx.Timeout(60, read=120)) as client:
            opened = [Stream(client, job_ids[i % len(job_ids)]) for i in range(streams)]
            await asyncio.gather(*(s.opened.wait() for s in opened))
            pipe.send([f"a stream of {s.job_id} failed: {s.task.exception()!r}" for s in opened if s.task.done()])
            while (await asyncio.to_thread(pipe.recv)) == "report":
                pipe.send([(s.job_id, s.task.done(), s.arrived) for s in opened])
            await asyncio.wait_for(asyncio.gather(*(s.task for s in opened), return_exceptions=True), 120)

    asyncio.run(hold())


async def timed_requests(client: httpx.AsyncClient, job_ids: list[str], n: int, concurrency: int,
                         errors: list[str]) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = defaultdict(list)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        kind, path = ("job", f"/v1/jobs/{job_ids[i % len(job_ids)]}") if i % 2 else ("healthz", "/healthz")
        async with gate:
            start = time.perf_counter()
            try:
                response = await client.get(path)
            except httpx.HTTPError as exc:
                errors.append(f"{path}: {type(exc).__name__}: {exc}")
                return
            latencies[kind].append(time.perf_counter() - start)
        if response.status_code != 200:
            errors.append(f"{path}: {response.status_code} {response.text[:200]}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(url: str, admin_token: str, streams: int, jobs: int, requests: int, concurrency: int,
              publish: Any | None, api_pid: int | None = None, idle_s: float = 20) -> dict[str, Any]:
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, read=120)) as client:
        key = (await client.post("/v1/api-keys", json={"name": "bench-streams"},
                                 headers={"Authorization": f"Bearer {admin_token}"})).json()["key"]
        client.headers["Authorization"] = f"Bearer {key}"
        job_ids = [(await client.post("/v1/jobs", json={**SPEC, "seed": i})).json()["id"] for i in range(jobs)]
        report: dict[str, Any] = {"streams": streams, "jobs": jobs}
        report["without streams"] = await timed_requests(client, job_ids, requests, concurrency, errors)

        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of this event loop
        pipe, child_end = spawn.Pipe()
        holder = spawn.Process(target=hold_streams,
                                         args=(url, dict(client.headers), job_ids, streams, child_end))
        start = time.perf_counter()
        holder.start()
        failed = await asyncio.to_thread(pipe.recv)
        errors += failed[:5] + ([f"... {len(failed)} streams failed to open"] if failed else [])
        report["open_s"] = time.perf_counter() - start
        if api_pid is not None:  # what the open streams cost the API while nothing happens
            before = cpu_seconds(api_pid)
            await asyncio.sleep(idle_s)
            report["idle_cpu"] = (cpu_seconds(api_pid) - before) / idle_s
            report["api_threads"] = len(os.listdir(f"/proc/{api_pid}/task"))
        report[f"with {streams} streams"] = await timed_requests(client, job_ids, requests, concurrency, errors)
        if publish is not None:
            sent = {job_id: (publish(job_id, {"type": "epoch", "epoch": 1}), time.time()) for job_id in job_ids}
            await asyncio.sleep(5)
        pipe.send("report")
        held = pipe.recv()
        errors += [f"the stream of {job_id} ended early" for job_id, ended, _arrived in held if ended][:5]
        if publish is not None:
            late = [job_id for job_id, _ended, arrived in held if sent[job_id][0] not in arrived]
            errors += [f"the event published to {job_id} did not arrive within 5 s" for job_id in late][:5]
            report["fan-out"] = {"event": [arrived[sent[job_id][0]] - sent[job_id][1]
                                           for job_id, _ended, arrived in held if sent[job_id][0] in arrived]}
        pipe.send("stop")
        for job_id in job_ids:
            await client.post(f"/v1/jobs/{job_id}/cancel")
        await asyncio.to_thread(holder.join, 120)
    report["errors"] = errors
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['streams']} open streams over {report['jobs']} jobs, opened in {report['open_s']:.1f}s"]
    if "idle_cpu" in report:
        lines.append(f"the API process while they wait: {100 * report['idle_cpu']:.1f}% of a core, "
                     f"{report['api_threads']} threads")
    lines.append(f"{'phase':<18} {'request':<8} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase, kinds in report.items():
        if isinstance(kinds, dict):
            for kind, values in sorted(kinds.items()):
                p = percentiles(values)
                lines.append(f"{phase:<18} {kind:<8} {p['n']:>6} {p['p50_ms']:>8.1f} {p['p95_ms']:>8.1f} "
                             f"{p['p99_ms']:>8.1f} {p['max_ms']:>8.1f}")
    lines.append("OK" if not report["errors"] else "PROBLEMS: " + "; ".join(report["errors"][:10]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API; default: start uvicorn here with the NOISYFIT_* settings")
    parser.add_argument("--admin-token", default=os.environ.get("NOISYFIT_ADMIN_TOKEN", ""))
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=25)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=20, help="how long to measure the idle API's CPU")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.admin_token:
        parser.error("an admin token is needed (--admin-token or NOISYFIT_ADMIN_TOKEN) to create the user")
    api: subprocess.Popen | None = None
    publish = None
    try:
        url = args.url
        if url is None:
            os.environ["NOISYFIT_REDIS_KEY_PREFIX"] = f"bench-streams-{secrets.token_hex(3)}:"  # no worker reads it
            url, api = start_api("streams")
            sys.path.insert(0, str(ROOT))
            from shared.stream import get_stream

            publish = get_stream().publish
        report = asyncio.run(run(url, args.admin_token, args.streams, args.jobs, args.requests,
                                 args.concurrency, publish, api.pid if api else None, args.idle_s))
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(30)
    if args.json:
        print(json.dumps({k: {kind: percentiles(v) for kind, v in kinds.items()} if isinstance(kinds, dict) else kinds
                          for k, kinds in report.items()}, indent=2))
    else:
        print(render(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
