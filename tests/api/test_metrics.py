"""Metric events: cursor pages, the metrics.jsonl fallback, Server-Sent Events, Redis down, NaN as null."""

import json
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.main import create_app
from shared import jobs
from shared.db import get_engine
from shared.models import JobStatus
from shared.store import artifact_key, get_store
from shared.stream import MetricsStream, get_stream

SPEC = {"dataset": "mnist", "epochs": 3}


@pytest.fixture
def job_id(client: TestClient, user_headers) -> str:
    return client.post("/v1/jobs", json=SPEC, headers=user_headers).json()["id"]


def epoch(n: int) -> dict:
    return {"type": "epoch", "epoch": n, "train_loss": 1.0 / n, "test_accuracy": 0.1 * n}


def read_all(client: TestClient, job_id: str, headers, limit: int, after: str | None = None) -> list[dict]:
    events = []
    while True:
        params = {"limit": limit} | ({"after": after} if after else {})
        page = client.get(f"/v1/jobs/{job_id}/metrics", params=params, headers=headers).json()
        if not page["events"]:
            assert page["next"] == after  # nothing new: the cursor stays
            return events
        events += page["events"]
        after = page["next"]
        assert after == page["events"][-1]["id"]


def test_metric_pages_follow_the_cursor(client: TestClient, user_headers, settings, job_id):
    stream = get_stream(settings)
    ids = [stream.publish(job_id, epoch(n)) for n in range(1, 10)]
    events = read_all(client, job_id, user_headers, limit=4)
    assert [e["type"] for e in events] == ["status"] + ["epoch"] * 9
    assert [e["id"] for e in events[1:]] == ids and [e["epoch"] for e in events[1:]] == list(range(1, 10))
    assert read_all(client, job_id, user_headers, limit=4, after=ids[5]) == events[7:]


def test_a_bad_metrics_cursor_is_422(client: TestClient, user_headers, job_id):
    error = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": "x-1"}, headers=user_headers).json()["error"]
    assert error["code"] == "invalid_cursor" and error["field"] == "after"


def write_jsonl(settings, job_id: str, events: list[dict]) -> None:
    lines = "".join(json.dumps(e) + "\n" for e in events)
    get_store(settings).put_bytes(artifact_key(job_id, "metrics.jsonl"), lines.encode())


def test_an_expired_stream_falls_back_to_metrics_jsonl(client: TestClient, user_headers, settings, job_id):
    stream = get_stream(settings)
    published = [{**epoch(n), "id": stream.publish(job_id, epoch(n))} for n in range(1, 6)]
    write_jsonl(settings, job_id, published)
    stream.delete(job_id)  # as when the stream's TTL ran out
    assert read_all(client, job_id, user_headers, limit=2) == published
    assert read_all(client, job_id, user_headers, limit=2, after=published[1]["id"]) == published[2:]


def test_a_trimmed_stream_falls_back_to_metrics_jsonl(client: TestClient, user_headers, settings, job_id):
    small = MetricsStream(get_stream(settings).client, settings.redis_key_prefix, maxlen=10)
    published = [{**epoch(n), "id": small.publish(job_id, epoch(n))} for n in range(1, 400)]
    assert not small.covers(job_id, None) and not small.covers(job_id, published[0]["id"])
    assert small.covers(job_id, published[-2]["id"])
    write_jsonl(settings, job_id, published)
    events = read_all(client, job_id, user_headers, limit=1000)
    assert events == published
    tail = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": published[-3]["id"]}, headers=user_headers)
    assert tail.json()["events"] == published[-2:]


def test_jsonl_lines_without_ids_get_line_cursors(client: TestClient, user_headers, settings, job_id):
    get_stream(settings).delete(job_id)
    write_jsonl(settings, job_id, [epoch(1), epoch(2)])
    page = client.get(f"/v1/jobs/{job_id}/metrics", params={"after": "0-1"}, headers=user_headers).json()
    assert page == {"events": [{**epoch(2), "id": "0-2"}], "next": "0-2"}


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
                     and ": " in line)
        if "data" in lines:
            event = json.loads(lines["data"])
            assert lines["id"] == event["id"]
            events.append(event)
    return events


def test_events_stream_until_done_and_resume_with_last_event_id(client: TestClient, user_headers, settings, job_id):
    stream = get_stream(settings)
    ids = [stream.publish(job_id, epoch(n)) for n in range(1, 4)]

    def finish_later() -> None:
        time.sleep(0.8)  # past a heartbeat
        stream.publish(job_id, epoch(4))
        stream.publish(job_id, {"type": "done", "status": "succeeded"})

    threading.Thread(target=finish_later).start()
    response = client.get(f"/v1/jobs/{job_id}/events", headers=user_headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert ": heartbeat" in response.text
    events = sse_events(response.text)
    assert [e["type"] for e in events] == ["status", "epoch", "epoch", "epoch", "epoch", "done"]

    resumed = client.get(f"/v1/jobs/{job_id}/events", headers={**user_headers, "Last-Event-ID": ids[1]})
    assert [e.get("epoch") for e in sse_events(resumed.text)] == [3, 4, None]


def test_events_of_a_finished_job_end_at_once(client: TestClient, user_headers, settings, job_id):
    client.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers)
    events = sse_events(client.get(f"/v1/jobs/{job_id}/events", headers=user_headers).text)
    assert events[-1]["type"] == "done"
    last = events[-1]["id"]
    after_done = client.get(f"/v1/jobs/{job_id}/events", headers={**user_headers, "Last-Event-ID": last})
    assert after_done.status_code == 200 and sse_events(after_done.text) == []
    get_stream(settings).delete(job_id)  # the done event lost with its stream: the job's status ends it
    assert sse_events(client.get(f"/v1/jobs/{job_id}/events", headers=user_headers).text) == []


def test_events_are_live_over_a_real_server(live_api, make_user, settings):
    headers = make_user("live")
    job = httpx.post(f"{live_api.url}/v1/jobs", json=SPEC, headers=headers).json()
    stream = get_stream(settings)
    seen: list[dict] = []
    with httpx.stream("GET", f"{live_api.url}/v1/jobs/{job['id']}/events", headers=headers, timeout=10) as r:
        buffer = ""
        for chunk in r.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                seen += sse_events(block + "\n\n")
                if seen and seen[-1]["type"] == "status":  # the job's first event came before any epoch
                    stream.publish(job["id"], epoch(1))
                    seen.append({"type": "marker"})
                elif seen and seen[-1]["type"] == "epoch":
                    stream.publish(job["id"], {"type": "done", "status": "succeeded"})
    assert [e["type"] for e in seen] == ["status", "marker", "epoch", "done"]


def test_redis_down_answers_503_on_stream_routes_only(settings, client: TestClient, user_headers, job_id):
    broken = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    with TestClient(broken) as down:
        for path in ("metrics", "events"):
            response = down.get(f"/v1/jobs/{job_id}/{path}", headers=user_headers)
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "stream_unavailable"
        assert down.get(f"/v1/jobs/{job_id}", headers=user_headers).json()["status"] == "queued"
        assert down.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers).json()["status"] == "cancelled"


def strict_json(text: str) -> Any:
    """JSON as a browser's JSON.parse reads it: a bare NaN or Infinity fails."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in {text[:300]}")

    return json.loads(text, parse_constant=refuse)


DIVERGED = {"type": "epoch", "epoch": 2, "train_loss": float("nan"), "test_loss": float("inf"),
            "per_class": [float("-inf"), 0.5]}
AS_SENT = {"type": "epoch", "epoch": 2, "train_loss": None, "test_loss": None, "per_class": [None, 0.5]}


def test_non_finite_figures_are_sent_as_null(client: TestClient, user_headers, settings, job_id):
    """A diverged run's NaN/Infinity never reaches a client as bare NaN: not on the stream, not
    on the metrics page, not from an old metrics.jsonl, not in the job's progress."""
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.start_attempt(session, job_id, "w1", settings)
        assert jobs.update_progress(session, job_id, "w1", 2, 3, DIVERGED)
    progress = strict_json(client.get(f"/v1/jobs/{job_id}", headers=user_headers).text)["progress"]
    assert progress == {"epoch": 2, "epochs": 3, "metrics": AS_SENT}

    stream = get_stream(settings)
    published = stream.publish(job_id, DIVERGED)
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.finish(session, job_id, "w1", JobStatus.failed, settings, error={"code": "diverged", "message": "x"})
    page = strict_json(client.get(f"/v1/jobs/{job_id}/metrics", headers=user_headers).text)
    assert {**AS_SENT, "id": published} in page["events"]
    streamed = client.get(f"/v1/jobs/{job_id}/events", headers=user_headers).text
    data = [strict_json(line.removeprefix("data: ")) for line in streamed.splitlines() if line.startswith("data: ")]
    assert {**AS_SENT, "id": published} in data and data[-1]["type"] == "done"

    stream.delete(job_id)  # a metrics.jsonl of an older worker, with bare NaN in it
    write_jsonl(settings, job_id, [{**DIVERGED, "id": published}])
    streamed = client.get(f"/v1/jobs/{job_id}/events", headers=user_headers).text
    data = [strict_json(line.removeprefix("data: ")) for line in streamed.splitlines() if line.startswith("data: ")]
    assert data[0] == {**AS_SENT, "id": published}
    page = strict_json(client.get(f"/v1/jobs/{job_id}/metrics", headers=user_headers).text)
    assert page["events"] == [{**AS_SENT, "id": published}]
