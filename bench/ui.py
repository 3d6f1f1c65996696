"""The dashboard's speed with many jobs: server time of its pages, and time to the first chart.

    NOISYFIT_ADMIN_TOKEN=... .venv/bin/python bench/ui.py              # starts uvicorn itself
    .venv/bin/python bench/ui.py --url http://127.0.0.1:8000 --admin-token T

A new user gets --jobs finished jobs (10,000) written straight into the database, as
tests/api/test_ui.py does for paging. One more job has --epochs epochs (200) of metrics,
published to its stream with the step events a run sends between epochs (--steps an epoch)
and stored as its metrics.jsonl; --compare of the jobs (200) get a metrics.jsonl of 50 epochs.
Signed in as that user (the session cookie), it times --repeat requests of each page, one at
a time, on loopback (so the time is the server's, plus a loopback round trip):

- /ui/jobs, the first page and a deep one (--deep: the page reached through that many "Older" links);
- the 200-epoch job's page, and its metrics as the page's script reads them (…/metrics?limit=1000, paged);
- /ui/compare of --compare jobs, and their curves (…/compare/metrics: the first answer reads
  every job's file, later ones the finished jobs' curves kept in memory).

Then, in headless Chromium (Playwright driving Debian's `chromium`), the time from the start of
the navigation to the page's performance mark "noisyfit:first-chart" (charts.js sets it in the
frame after the first chart got its points), --rounds times for the job page and the compare
page. Settings (database, Redis, S3) come from NOISYFIT_* variables; unless --keep, the jobs,
their stream and their files are deleted at the end (the user stays).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

import httpx

from load import ROOT, start_api

sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, insert  # noqa: E402  (after the path)
from sqlmodel import Session  # noqa: E402

from shared.db import get_engine  # noqa: E402
from shared.jobs import new_job  # noqa: E402
from shared.models import Job, JobStatus, utcnow  # noqa: E402
from shared.settings import get_settings  # noqa: E402
from shared.spec import JobSpec, resolve_spec  # noqa: E402
from shared.store import artifact_key, get_store, job_prefix  # noqa: E402
from shared.stream import get_stream  # noqa: E402

SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "epochs": 50,
        "train_size": 10000, "seed": 0}
INSERT_BATCH = 1000
COMPARE_EPOCHS = 50
FIRST_CHART = "noisyfit:first-chart"


def epoch_event(epoch: int, epochs: int, seed: int = 0) -> dict[str, Any]:
    """One epoch's figures, shaped like a run of nce+rce at 40 % noise (their values do not matter here)."""
    t = epoch / epochs
    wobble = math.sin(epoch * 1.7 + seed) * 0.01
    return {"type": "epoch", "epoch": epoch, "epochs": epochs, "train_loss": 1.2 * (1 - t) + 0.3 + wobble,
            "train_acc": 0.45 + 0.15 * t + wobble, "test_loss": 0.9 - 0.4 * t, "test_acc": 0.6 + 0.25 * t + wobble,
            "memorized": 0.02 + 0.05 * t, "true_label_acc_on_corrupted": 0.5 + 0.3 * t, "lr": 0.01 * (1 - t) + 1e-3,
            "epoch_seconds": 4.2, "samples_per_second": 2400.0}


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(event) + "\n" for event in events).encode()


def seed_jobs(user_id: int, spec: dict[str, Any], jobs: int) -> list[str]:
    """`jobs` succeeded jobs of the user, newest first as listed, ten to a timestamp."""
    settings = get_settings()
    now = utcnow()
    ids = []
    with Session(get_engine(settings.database_url)) as session:
        for start_at in range(0, jobs, INSERT_BATCH):
            rows = []
            for i in range(start_at, min(jobs, start_at + INSERT_BATCH)):
                job = new_job(user_id, spec)
                rows.append({**job.model_dump(), "created_at": now - timedelta(seconds=1 + i // 10),
                             "status": JobStatus.succeeded, "result": {"final_test_accuracy": 0.8,
                                                                        "best_test_accuracy": 0.82},
                             "progress": {"epoch": spec["epochs"], "epochs": spec["epochs"],
                                          "metrics": epoch_event(spec["epochs"], spec["epochs"])}})
                ids.append(job.id)
            session.execute(insert(Job), rows)
            session.commit()
    return ids


def seed_long_job(user_id: int, spec: dict[str, Any], epochs: int, steps: int) -> str:
    """A succeeded job with `epochs` epochs of metrics in its stream (and `steps` step events an
    epoch between them) and in its metrics.jsonl."""
    settings = get_settings()
    spec = {**spec, "epochs": epochs}
    job = new_job(user_id, spec)
    with Session(get_engine(settings.database_url)) as session:
        session.execute(insert(Job), [{**job.model_dump(), "status": JobStatus.succeeded, "created_at": utcnow(),
                                       "result": {"final_test_accuracy": 0.85},
                                       "progress": {"epoch": epochs, "epochs": epochs,
                                                    "metrics": epoch_event(epochs, epochs)}}])
        session.commit()
    events: list[dict[str, Any]] = [{"type": "status", "status": "running"}]
    for epoch in range(1, epochs + 1):
        events += [{"type": "step", "epoch": epoch, "step": s, "loss": 0.5, "lr": 0.01} for s in range(steps)]
        events.append(epoch_event(epoch, epochs))
    events += [{"type": "status", "status": "succeeded"}, {"type": "done", "status": "succeeded"}]
    stream = get_stream(settings)
    for start_at in range(0, len(events), 500):
        stream.publish(job.id, *events[start_at:start_at + 500])
    get_store(settings).put_bytes(artifact_key(job.id, "metrics.jsonl"),
                                  jsonl([e for e in events if e["type"] == "epoch"]))
    return job.id


def seed_compare_files(job_ids: list[str]) -> None:
    store = get_store(get_settings())
    for n, job_id in enumerate(job_ids):
        store.put_bytes(artifact_key(job_id, "metrics.jsonl"),
                        jsonl([epoch_event(e, COMPARE_EPOCHS, seed=n) for e in range(1, COMPARE_EPOCHS + 1)]))


def clean_up(user_id: int, with_files: list[str], long_job: str) -> None:
    settings = get_settings()
    store = get_store(settings)
    for job_id in with_files:
        store.delete_prefix(job_prefix(job_id))
    get_stream(settings).delete(long_job)
    with Session(get_engine(settings.database_url)) as session:
        session.execute(delete(Job).where(Job.user_id == user_id))
        session.commit()


def sign_in(http: httpx.Client, key: str) -> None:
    page = http.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed = http.post("/ui/login", data={"api_key": key, "csrf_token": token})
    signed.raise_for_status()
    assert "Sign out" in signed.text, "signing in failed"


def timed(http: httpx.Client, path: str, repeat: int, accept: str = "text/html") -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        response = http.get(path, headers={"Accept": accept})
        times.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return times


def read_metrics(http: httpx.Client, job_id: str) -> int:
    """The job page's script's reads: every metric event, 1000 a page; the events read."""
    after, events = None, 0
    while True:
        params = {"limit": 1000} | ({"after": after} if after else {})
        page = http.get(f"/ui/jobs/{job_id}/metrics", params=params, headers={"Accept": "application/json"}).json()
        events += len(page["events"])
        after = page["next"]
        if len(page["events"]) < 1000:
            return events


def deep_page(http: httpx.Client, pages: int) -> str:
    """The path of the jobs list's page reached through `pages` "Older" links."""
    path = "/ui/jobs"
    for _ in range(pages):
        older = re.search(r'rel="next" href="([^"]+)"', http.get(path).text)
        if older is None:
            raise RuntimeError(f"the list has fewer than {pages + 1} pages")
        path = older.group(1).replace("&amp;", "&")
    return path


def first_chart(url: str, key: str, paths: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds from navigation start to the first-chart mark, and to the HTML's arrival."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian's chromium is needed: apt-get install chromium (scripts/setup.sh does)")
    found: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto("/ui/login")
        page.fill("input[name=api_key]", key)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/jobs")
        for name, path in paths.items():
            for _ in range(rounds):
                page.goto(path)
                deadline = time.monotonic() + 60
                mark = []
                while not mark and time.monotonic() < deadline:
                    mark = page.evaluate(f"performance.getEntriesByName('{FIRST_CHART}').map((e) => e.startTime)")
                    if not mark:
                        page.wait_for_timeout(20)
                if not mark:
                    raise RuntimeError(f"{path} drew no chart within 60 s")
                html = page.evaluate("performance.getEntriesByType('navigation')[0].responseEnd")
                found.setdefault(f"{name} first chart", []).append(mark[0] / 1e3)
                found.setdefault(f"{name} HTML", []).append(html / 1e3)
        browser.close()
    return found


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"{len(times):>3} {statistics.median(times) * 1e3:>9.1f} {p95 * 1e3:>9.1f} {ordered[0] * 1e3:>9.1f} "
            f"{ordered[-1] * 1e3:>9.1f}")


def run(url: str, admin_token: str, args: argparse.Namespace) -> dict[str, list[float]]:
    created = httpx.post(f"{url}/v1/api-keys", json={"name": f"bench-ui-{os.getpid()}"},
                         headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    created.raise_for_status()
    key, user_id = created.json()["key"], created.json()["user_id"]
    resolved = resolve_spec(JobSpec.parse(SPEC)).to_json()
    began = time.perf_counter()
    ids = seed_jobs(user_id, resolved, args.jobs)
    long_job = seed_long_job(user_id, resolved, args.epochs, args.steps)
    compared = ids[:args.compare]
    seed_compare_files(compared)
    print(f"seeded {args.jobs} jobs, one of {args.epochs} epochs ({args.steps} step events an epoch) and "
          f"{len(compared)} metrics files in {time.perf_counter() - began:.1f}s", flush=True)
    results: dict[str, list[float]] = {}
    try:
        with httpx.Client(base_url=url, timeout=120, follow_redirects=True) as http:
            sign_in(http, key)
            deep = deep_page(http, args.deep)
            compare_ids = ",".join(compared)
            results["cold compare curves"] = timed(http, f"/ui/compare/metrics?ids={compare_ids}", 1,
                                                   "application/json")
            results["jobs list, first page"] = timed(http, "/ui/jobs", args.repeat)
            results[f"jobs list, page {args.deep + 1}"] = timed(http, deep, args.repeat)
            results["job page (200 epochs)"] = timed(http, f"/ui/jobs/{long_job}", args.repeat)
            events = read_metrics(http, long_job)
            results[f"its metrics ({events} events)"] = [
                _time(lambda: read_metrics(http, long_job)) for _ in range(args.repeat)]
            results[f"compare page ({len(compared)} jobs)"] = timed(http, f"/ui/compare?ids={compare_ids}", args.repeat)
            results["compare curves (kept)"] = timed(http, f"/ui/compare/metrics?ids={compare_ids}", args.repeat,
                                                     "application/json")
        results |= first_chart(url, key, {"job page": f"/ui/jobs/{long_job}",
                                          f"compare of {len(compared)}": f"/ui/compare?ids={compare_ids}"},
                               args.rounds)
    finally:
        if not args.keep:
            clean_up(user_id, [*compared, long_job], long_job)
    return results


def _time(call: Any) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running API; default: start uvicorn here with the NOISYFIT_* settings")
    parser.add_argument("--admin-token", default=os.environ.get("NOISYFIT_ADMIN_TOKEN", ""))
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5, help="step events an epoch of the long job")
    parser.add_argument("--compare", type=int, default=200)
    parser.add_argument("--deep", type=int, default=150, help="'Older' links to the deep page (50 jobs a page)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="browser loads of each page")
    parser.add_argument("--keep", action="store_true", help="leave the seeded jobs in place")
    args = parser.parse_args(argv)
    if not args.admin_token:
        parser.error("an admin token is needed (--admin-token or NOISYFIT_ADMIN_TOKEN) to create the user")
    api = None
    url = args.url
    try:
        if url is None:
            url, api = start_api("ui")
        results = run(url, args.admin_token, args)
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(30)
    print(f"{'':<32} {'n':>3} {'median ms':>9} {'p95 ms':>9} {'min ms':>9} {'max ms':>9}")
    for name, times in results.items():
        print(f"{name:<32} {summary(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
