"""Load: a smaller run of bench/load.py against a real uvicorn process. Concurrent duplicate
submissions (one Idempotency-Key each) and polls; no error, every job recorded exactly once
(keys, GET /v1/jobs pages and database rows agree), latency percentiles printed."""

import asyncio
import importlib.util
import os
import sys
from typing import Any

import httpx
import pytest

from shared.settings import Settings
from tests.conftest import free_port, wait_for_port
from tests.e2e.conftest import start
from tests.reliability.conftest import ROOT

JOBS, CONCURRENCY, POLLS = 120, 32, 2


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load_api(isolated_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """uvicorn with the isolated queue: the load's jobs are recorded, never trained."""
    port = free_port()
    process = start("load-uvicorn", [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port),
                                     "--log-level", "warning"],
                    {**os.environ, "NOISYFIT_REDIS_KEY_PREFIX": isolated_settings.redis_key_prefix},
                    tmp_path_factory.mktemp("load"))
    try:
        wait_for_port(port, process.process, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def test_concurrent_submissions_and_polls_record_every_job_exactly_once(
    load_api: str, isolated_settings: Settings
) -> None:
    bench = _bench()
    report = asyncio.run(bench.run_load(load_api, isolated_settings.admin_token, jobs=JOBS, concurrency=CONCURRENCY,
                                        polls=POLLS, database_url=isolated_settings.database_url, timeout_s=180))
    print("\n" + report.render())
    assert report.problems() == []
    assert len(report.latencies["submit"]) == 2 * JOBS and len(report.latencies["poll"]) == POLLS * JOBS
    assert report.statuses["submit 201"] == JOBS  # each key created one job; its duplicate was a replay
    assert report.statuses["submit 200"] == JOBS
    assert httpx.get(f"{load_api}/healthz").status_code == 200
