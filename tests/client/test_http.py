"""The Python client: what it sends, how it reads answers, and how API errors read."""

import json
from pathlib import Path

import httpx
import pytest

import client.http
from client.http import ApiError, ConnectionFailed, NoisyfitClient, ServerSentEvent, parse_sse
from tests.client.conftest import FakeApi, error, event_stream, job, sse


def test_api_errors_read_as_one_line_naming_the_field_and_status():
    message = "symmetric noise at rate 0.95 leaves the true class\nno more likely"
    err = ApiError(422, "invalid_spec", message, "noise.rate")
    assert str(err) == (
        "symmetric noise at rate 0.95 leaves the true class no more likely (field: noise.rate) [HTTP 422 invalid_spec]"
    )
    assert str(ApiError(404, "not_found", "job x not found")) == "job x not found [HTTP 404 not_found]"


def test_error_answers_become_api_errors(fake_api: FakeApi):
    fake_api.route("POST", "/v1/jobs", lambda r: error(422, "invalid_spec", "unknown loss 'nce+foo'", "loss"))
    fake_api.route("GET", "/v1/jobs/j1", lambda r: httpx.Response(502, text="<html>Bad gateway</html>"))
    with fake_api.client() as nf:
        with pytest.raises(ApiError) as refused:
            nf.submit_job({"dataset": "mnist", "loss": "nce+foo"})
        assert (refused.value.status, refused.value.code, refused.value.field) == (422, "invalid_spec", "loss")
        with pytest.raises(ApiError) as proxy:
            nf.get_job("j1")
        assert proxy.value.code == "http_error" and "Bad gateway" in str(proxy.value) and "502" in str(proxy.value)


def test_an_unreachable_api_is_a_connection_failure():
    with NoisyfitClient("http://127.0.0.1:9", "k", timeout=2.0) as nf:
        with pytest.raises(ConnectionFailed, match="cannot reach the noisyfit API at http://127.0.0.1:9"):
            nf.catalog()


def test_requests_carry_the_key_the_idempotency_key_and_the_filters(fake_api: FakeApi):
    fake_api.route("POST", "/v1/jobs", lambda r: httpx.Response(201, json=job()))
    fake_api.route("GET", "/v1/jobs", {"jobs": [job()], "next": "c2"})
    fake_api.route("GET", "/v1/jobs/j1/metrics", {"events": [], "next": "5-0"})
    with fake_api.client() as nf:
        assert nf.submit_job({"dataset": "mnist"}, idempotency_key="abc")["id"] == "j1"
        assert nf.list_jobs(status="running", cursor="c1")["next"] == "c2"
        assert nf.metrics("j1", after="4-0")["next"] == "5-0"
    submit, listing, metrics = fake_api.requests
    assert submit.headers["authorization"] == "Bearer test-key"
    assert submit.headers["idempotency-key"] == "abc"
    assert json.loads(submit.content) == {"dataset": "mnist"}
    assert dict(listing.url.params) == {"status": "running", "cursor": "c1"}
    assert dict(metrics.url.params) == {"after": "4-0"}


def test_sweep_and_data_set_routes(fake_api: FakeApi, tmp_path: Path):
    fake_api.route("POST", "/v1/sweeps", lambda r: httpx.Response(201, json={"id": "s1", "jobs": ["a", "b"]}))
    fake_api.route("GET", "/v1/sweeps/s1/table", lambda r: httpx.Response(200, text=f"format={r.url.params['format']}"))
    fake_api.route("POST", "/v1/sweeps/s1/cancel", {"id": "s1", "status": "cancelled"})
    fake_api.route("POST", "/v1/datasets", lambda r: httpx.Response(201, json={"id": "d1"}))
    data = tmp_path / "mine.npz"
    data.write_bytes(b"npz bytes")
    with fake_api.client() as nf:
        nf.submit_sweep({"dataset": "mnist"}, {"seed": [0, 1]})
        assert nf.sweep_table("s1", "markdown") == "format=markdown"
        assert nf.cancel_sweep("s1")["status"] == "cancelled"
        assert nf.upload_dataset(data, "mine") == {"id": "d1"}
    sweep, _, _, upload = fake_api.requests
    assert json.loads(sweep.content) == {"base": {"dataset": "mnist"}, "grid": {"seed": [0, 1]}}
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b'name="name"\r\n\r\nmine' in upload.content and b'filename="mine.npz"' in upload.content
    assert b"npz bytes" in upload.content


def test_wait_polls_until_the_job_ends(fake_api: FakeApi):
    states = iter(["queued", "running", "succeeded"])
    fake_api.route("GET", "/v1/jobs/j1", lambda r: httpx.Response(200, json=job(status=next(states))))
    with fake_api.client() as nf:
        assert nf.wait("j1", poll=0)["status"] == "succeeded"
    assert len(fake_api.requests) == 3


def test_download_follows_a_presigned_redirect_without_the_api_key(fake_api: FakeApi, tmp_path: Path):
    presigned = "http://s3.test/bucket/jobs/j1/result.json?X-Amz-Signature=abc"
    fake_api.route(
        "GET", "/v1/jobs/j1/artifacts/result.json", lambda r: httpx.Response(307, headers={"location": presigned})
    )
    fake_api.route("GET", "/bucket/jobs/j1/result.json", lambda r: httpx.Response(200, content=b'{"final": 0.9}'))
    fake_api.route("GET", "/v1/jobs/j1/artifacts", {"artifacts": [{"name": "result.json", "size": 14}, "plot.png"]})
    with fake_api.client() as nf:
        assert nf.download("j1", "result.json", tmp_path) == tmp_path / "result.json"
        assert [a["name"] for a in nf.artifacts("j1")] == ["result.json", "plot.png"]
    assert (tmp_path / "result.json").read_bytes() == b'{"final": 0.9}'
    assert "authorization" not in fake_api.requests[1].headers, "the key never goes to the object store"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"], "no partial file left"


def test_a_failed_download_leaves_no_file(fake_api: FakeApi, tmp_path: Path):
    fake_api.route("GET", "/v1/jobs/j1/artifacts/checkpoint.pt", lambda r: error(404, "not_found", "no checkpoint.pt"))
    with fake_api.client() as nf:
        with pytest.raises(ApiError, match="no checkpoint.pt"):
            nf.download("j1", "checkpoint.pt", tmp_path)
    assert list(tmp_path.iterdir()) == []


# Server-Sent Events


def lines(data: bytes) -> list[str]:
    return httpx.Response(200, content=data).iter_lines()


def test_sse_lines_parse_into_messages():
    stream = (
        b"retry: 3000\n\n"
        b": a heartbeat comment\n\n"
        b"id: 1-0\nevent: epoch\ndata: {\"epoch\": 1}\n\n"
        b"data:first\r\ndata: second\r\nretry: 2500\r\n\r\n"
        b"id: 2-0\ndata: {\"type\": \"done\"}\n\n"
        b"data: never finished"
    )
    assert list(parse_sse(lines(stream))) == [
        ServerSentEvent('{"epoch": 1}', "epoch", "1-0", 3000),
        ServerSentEvent("first\nsecond", "message", "1-0", 2500),
        ServerSentEvent('{"type": "done"}', "message", "2-0", 2500),
    ]


def test_events_stop_at_done(fake_api: FakeApi):
    chunks = [sse({"type": "status", "status": "running"}, "1-0"), sse({"type": "epoch", "epoch": 1}, "2-0")]
    chunks.append(sse({"type": "done", "status": "succeeded"}, "3-0") + sse({"type": "epoch", "epoch": 9}, "4-0"))
    fake_api.route("GET", "/v1/jobs/j1/events", lambda r: event_stream(*chunks))
    with fake_api.client() as nf:
        events = list(nf.events("j1"))
    assert [e["type"] for e in events] == ["status", "epoch", "done"]
    assert fake_api.requests[0].headers["accept"] == "text/event-stream"


def test_a_dropped_stream_resumes_after_the_last_event_id(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client.http, "RECONNECT_DELAY_S", 0.0)
    answers = iter(
        [
            event_stream(sse({"type": "epoch", "epoch": 1}, "1-0"), b'data: {"ty', fail=httpx.ReadError("reset")),
            event_stream(sse({"type": "epoch", "epoch": 2}, "2-0"), sse({"type": "done"}, "3-0")),
        ]
    )
    fake_api.route("GET", "/v1/jobs/j1/events", lambda r: next(answers))
    with fake_api.client() as nf:
        epochs = [e.get("epoch") for e in nf.events("j1", last_event_id="0-5")]
    assert epochs == [1, 2, None]
    assert [r.headers.get("last-event-id") for r in fake_api.requests] == ["0-5", "1-0"]


def test_a_stream_ending_without_done_stops_once_the_job_finished(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client.http, "RECONNECT_DELAY_S", 0.0)
    statuses = iter(["running", "cancelled"])
    fake_api.route("GET", "/v1/jobs/j1/events", lambda r: event_stream(b": idle\n\n"))
    fake_api.route("GET", "/v1/jobs/j1", lambda r: httpx.Response(200, json=job(status=next(statuses))))
    with fake_api.client() as nf:
        assert list(nf.events("j1")) == []
    assert [r.url.path for r in fake_api.requests] == ["/v1/jobs/j1/events", "/v1/jobs/j1"] * 2


def test_a_stream_that_keeps_failing_gives_up(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(client.http, "RECONNECT_DELAY_S", 0.0)
    fake_api.route("GET", "/v1/jobs/j1/events", lambda r: event_stream(fail=httpx.RemoteProtocolError("closed")))
    with fake_api.client() as nf:
        with pytest.raises(ConnectionFailed, match="lost the event stream of job j1"):
            list(nf.events("j1"))
    assert len(fake_api.requests) == client.http.RECONNECTS + 1


def test_an_event_stream_error_answer_is_an_api_error(fake_api: FakeApi):
    fake_api.route("GET", "/v1/jobs/nope/events", lambda r: error(404, "not_found", "job nope not found"))
    with fake_api.client() as nf:
        with pytest.raises(ApiError, match="job nope not found"):
            next(nf.events("nope"))
