"""No cursor answers 500: property tests over arbitrary text (non-ASCII, huge and negative
numbers, `-`, `0-0`, garbled base64 and JSON) against the real app, for each kind of cursor:
`GET /v1/jobs/{id}/metrics?after=`, `Last-Event-ID` on `GET /v1/jobs/{id}/events`, and
`GET /v1/jobs?cursor=`. Each answers a page, or 422 `invalid_cursor` naming the parameter with
a message that says what a cursor looks like."""

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.stream import get_stream

SPEC = {"dataset": "mnist", "epochs": 3}
MAX = 2**64 - 1
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)  # Cs: lone surrogates, not encodable
number = st.one_of(st.integers(-(10**25), 10**25), st.sampled_from([0, MAX, MAX + 1, 10**20, -1]))
numbers = st.builds(lambda parts, sep: sep.join(str(p) for p in parts),
                    st.lists(number, min_size=1, max_size=3), st.sampled_from(["-", "--", "+", " ", "", "-+"]))
digits = st.text(st.characters(categories=["Nd"]), min_size=1, max_size=25)  # ٣, ５, ...
stream_cursor = st.one_of(text, numbers, st.builds("{}-{}".format, digits, digits), digits)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)
when = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+00:00",
                     "2024-01-01T00:00:00", "2024-13-01T00:00:00+00:00", "99999-01-01"]), text)
job_id = st.one_of(st.just("job_0123456789abcdef01234567"), st.from_regex(r"job_[0-9a-f]{1,70}", fullmatch=True),
                   text, st.integers(), st.none())
list_cursor = st.one_of(
    text,
    st.binary(max_size=120).map(_b64),
    json_value.map(lambda v: _b64(json.dumps(v).encode())),
    st.tuples(when, job_id).map(lambda pair: _b64(json.dumps(list(pair)).encode())),
    st.text(min_size=150, max_size=600),
)


def examples(*cursors: str) -> Any:
    """The named edge cases, tried before the generated ones."""
    def apply(test: Any) -> Any:
        for cursor in reversed(cursors):
            test = example(cursor=cursor)(test)
        return test
    return apply


@pytest.fixture(scope="module")
def owner(make_user: Any) -> dict[str, str]:
    return make_user("cursors")


@pytest.fixture(scope="module")
def finished_job(client: TestClient, owner: dict[str, str], settings: Any) -> str:
    """A cancelled job with a few events, so that a stream of it ends once caught up."""
    job = client.post("/v1/jobs", json=SPEC, headers=owner).json()["id"]
    stream = get_stream(settings)
    for n in (1, 2):
        stream.publish(job, {"type": "epoch", "epoch": n})
    assert client.post(f"/v1/jobs/{job}/cancel", headers=owner).json()["status"] == "cancelled"
    return job


def assert_invalid_cursor(response: Any, field: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "invalid_cursor" and error["field"] == field, error
    assert "cursor" in error["message"] and ("'-'" in error["message"] or "'next'" in error["message"]), error


def is_stream_id(cursor: str) -> bool:
    """The form Redis accepts, written independently of the parser under test."""
    parts = cursor.split("-")
    return (1 <= len(parts) <= 2 and all(p and p.isascii() and p.isdigit() and len(p) <= 20 and int(p) <= MAX
                                         for p in parts))


@FUZZ
@given(cursor=stream_cursor)
@examples("-", "0-0", "99999999999999999999-1", "-1", "1--1", "1-", "", f"{MAX}-{MAX}", f"{MAX + 1}-0",
          "１２-３", "1-2\n", "0x10", "1e5")
def test_any_metrics_cursor_answers_a_page_or_422(client: TestClient, owner, finished_job, cursor: str) -> None:
    response = client.get(f"/v1/jobs/{finished_job}/metrics", params={"after": cursor}, headers=owner)
    if is_stream_id(cursor):
        assert response.status_code == 200, (cursor, response.text[:300])
        assert set(response.json()) == {"events", "next"}
    else:
        assert_invalid_cursor(response, "after")


@FUZZ
@given(cursor=stream_cursor)
@examples("-", "0-0", "99999999999999999999-1", "-1", f"{MAX}-{MAX}", "1-2\r\n", "é-1", "１-1")
def test_any_last_event_id_answers_a_stream_or_422(client: TestClient, owner, finished_job, cursor: str) -> None:
    response = client.get(f"/v1/jobs/{finished_job}/events",
                          headers={**owner, "Last-Event-ID": cursor.encode()})
    sent = cursor.encode().decode("latin-1")  # what the server reads
    if not sent:  # an empty Last-Event-ID is no Last-Event-ID
        assert response.status_code == 200
    elif is_stream_id(sent):
        assert response.status_code == 200, (cursor, response.text[:300])
        assert response.headers["content-type"].startswith("text/event-stream")
    else:
        assert_invalid_cursor(response, "Last-Event-ID")


@FUZZ
@given(cursor=list_cursor)
@examples("-", "0-0", "99999999999999999999-1", "-1", "", "é",
          _b64(b'["0001-01-01T00:00:00+01:00", "job_0123456789abcdef01234567"]'),
          _b64(b'["9999-12-31T23:59:59-01:00", "job_0123456789abcdef01234567"]'),
          _b64(b'{"a": 1, "b": 2}'), _b64(b"[" * 140), _b64(b'[1e999, "job_1"]'))
def test_any_list_cursor_answers_a_page_or_422(client: TestClient, owner, cursor: str) -> None:
    response = client.get("/v1/jobs", params={"cursor": cursor}, headers=owner)
    if response.status_code == 200:
        assert set(response.json()) == {"jobs", "next"}
    else:
        assert_invalid_cursor(response, "cursor")


def test_every_real_cursor_reads_on(client: TestClient, owner, finished_job) -> None:
    """The fuzzing above must not refuse what the API itself hands out."""
    client.post("/v1/jobs", json={**SPEC, "seed": 1}, headers=owner)
    first = client.get("/v1/jobs", params={"limit": 1}, headers=owner).json()
    second = client.get("/v1/jobs", params={"limit": 1, "cursor": first["next"]}, headers=owner)
    assert second.status_code == 200 and second.json()["jobs"][0]["id"] != first["jobs"][0]["id"]
    events = client.get(f"/v1/jobs/{finished_job}/metrics", headers=owner).json()["events"]
    for event in events:
        page = client.get(f"/v1/jobs/{finished_job}/metrics", params={"after": event["id"]}, headers=owner)
        assert page.status_code == 200
        resumed = client.get(f"/v1/jobs/{finished_job}/events", headers={**owner, "Last-Event-ID": event["id"]})
        assert resumed.status_code == 200
