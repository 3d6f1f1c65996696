"""Health, readiness, Prometheus metrics, the body size limit, and an API process without torch."""

import subprocess
import sys
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from api.main import create_app

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_answers_without_dependencies(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_checks_database_redis_and_store(client: TestClient):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "object_store": "ok"}


def test_readyz_names_what_is_down(settings):
    broken = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0",
                                                    "s3_endpoint": "127.0.0.1:1"}))
    with TestClient(broken) as down:
        response = down.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "not_ready" and "redis" in body["error"]["message"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error") and body["checks"]["object_store"].startswith("error")


def test_metrics_expose_jobs_queue_depth_workers_and_latency(client: TestClient, user_headers):
    client.post("/v1/jobs", json={"dataset": "mnist", "epochs": 1}, headers=user_headers)
    text = client.get("/metrics").text
    assert 'noisyfit_jobs{status="queued"}' in text and 'noisyfit_jobs{status="succeeded"}' in text
    depth = next(line for line in text.splitlines() if line.startswith("noisyfit_queue_depth "))
    assert float(depth.split()[1]) >= 1
    assert "noisyfit_workers " in text
    assert 'noisyfit_worker_slots{state="total"}' in text and 'noisyfit_worker_slots{state="busy"}' in text
    assert 'noisyfit_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/jobs",status="201"}' \
        in text


def test_a_body_over_the_limit_is_413(client: TestClient, user_headers, settings):
    big = b'{"dataset": "mnist", "pad": "' + b"x" * settings.max_request_bytes + b'"}'
    response = client.post("/v1/jobs", content=big, headers={**user_headers, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_chunked_body_over_the_limit_is_413(client: TestClient, user_headers, settings):
    def chunks():
        yield b'{"dataset": "mnist", "pad": "'
        for _ in range(settings.max_request_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={**user_headers, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_routes_answer_in_the_error_shape(client: TestClient):
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.delete("/healthz").json()["error"]["code"] == "method_not_allowed"


def test_the_openapi_schema_is_served(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/api-keys"} <= set(paths)


def test_importing_and_serving_the_api_loads_no_torch(service_env):
    script = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.main import app\n"
        "with TestClient(app) as c:\n"
        "    assert c.get('/readyz').status_code == 200\n"
        "    assert c.get('/openapi.json').status_code == 200\n"
        "    assert c.get('/ui/login').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'worker')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_running_api_server_has_no_torch_mapped(live_api):
    assert httpx.get(f"{live_api.url}/readyz").status_code == 200
    maps = Path(f"/proc/{live_api.process.pid}/maps").read_text()
    assert "libtorch" not in maps and "libc10" not in maps


def test_the_api_requeues_jobs_whose_worker_died(settings, make_user):
    import time

    from sqlmodel import Session

    from shared import jobs
    from shared.db import get_engine

    reaping = create_app(settings.model_copy(update={"reaper_interval_s": 0.1}))
    with TestClient(reaping) as client:
        headers = make_user("orphan")
        job_id = client.post("/v1/jobs", json={"dataset": "mnist", "epochs": 1}, headers=headers).json()["id"]
        with Session(get_engine(settings.database_url)) as session:
            assert jobs.start_attempt(session, job_id, "dead-worker", settings.model_copy(update={"lease_ttl_s": -1}))
        deadline = time.monotonic() + 10
        while client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] != "queued":
            assert time.monotonic() < deadline, "the reaper did not requeue the job"
            time.sleep(0.05)
        assert client.get(f"/v1/jobs/{job_id}", headers=headers).json()["attempts"] == 1
