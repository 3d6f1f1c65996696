"""Hostile requests against a real uvicorn process: the API's memory is bounded by what a
request may be, whatever its shape, and shapes that would crash a parser are a 422.

Memory is the process's own high-water mark (VmHWM in /proc/PID/status) around the request:
a fresh API per module, so earlier tests' peaks do not hide a new one. The upload checker
runs in a child process, whose memory is not the API's.
"""

import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.limits import MAX_JSON_DEPTH
from tests.reliability.conftest import TINY_SPEC, Stack, User
from tests.reliability.test_bad_input import raw_request

GROWTH = 64 * 2**20  # what a refused hostile request may add to the API's peak memory


def peak_rss(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    return make_stack()


@pytest.fixture(scope="module")
def http(stack: Stack) -> httpx.Client:
    client = stack.client("hostile")
    client.timeout = httpx.Timeout(120)
    client.post("/v1/jobs", json=TINY_SPEC).raise_for_status()  # warm: every route module loaded
    return client


def nested(depth: int, kind: str) -> str:
    opens, closes = {"list": ("[", "]"), "object": ('{"a":', "}"), "mixed": ('[{"a":', "}]")}[kind]
    return opens * depth + "1" + closes * depth


@pytest.mark.parametrize("kind", ["list", "object", "mixed"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 600, 100_000])
def test_deeply_nested_json_is_a_422_before_parsing(stack: Stack, http: httpx.Client, depth: int, kind: str) -> None:
    """Raw bytes to uvicorn, on every JSON route, nested where a spec, a grid or a whole body sits."""
    bodies = {
        "/v1/jobs": '{"dataset": "mnist", "noise": ' + nested(depth, kind) + "}",
        "/v1/sweeps": '{"base": {"dataset": "mnist", "junk": ' + nested(depth, kind) + '}, "grid": {"seed": [0, 1]}}',
        "/v1/api-keys": nested(depth, kind),
    }
    before = peak_rss(stack.api.process.pid)
    for path, body in bodies.items():
        status, payload = raw_request(stack.url, "POST", path, {**http.headers, "Content-Type": "application/json"},
                                      body.encode())
        assert status == 422, (path, status, payload[:200])
        error = json.loads(payload)["error"]
        assert error["code"] == "json_too_deep" and str(MAX_JSON_DEPTH) in error["message"], error
    assert peak_rss(stack.api.process.pid) - before < GROWTH
    assert http.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def nester(user: Callable[..., User]) -> User:
    return user("nester")


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=st.recursive(st.integers() | st.text(max_size=3), lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=60),
       extra=st.integers(0, 40))
def test_nesting_up_to_the_limit_reaches_the_spec_checks(api: TestClient, nester: User, value: Any, extra: int) -> None:
    """Any value, nested `extra` deeper: within MAX_JSON_DEPTH it is parsed and refused as a
    spec (invalid_spec), beyond it is json_too_deep; never a 500."""
    for _ in range(extra):
        value = [value]
    body = json.dumps({"base": {"dataset": "mnist", "junk": value}, "grid": {"seed": [0]}})
    response = api.post("/v1/sweeps", content=body, headers={**nester.headers, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    depth = _depth(value) + 2  # the body and its base
    code = response.json()["error"]["code"]
    assert code == ("json_too_deep" if depth > MAX_JSON_DEPTH else "invalid_spec"), (depth, code)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_a_hostile_sweep_body_does_not_grow_the_api(stack: Stack, http: httpx.Client) -> None:
    """150 KiB of junk in the base times 1000 seeds once took the API from 330 MiB to 3.7 GiB
    (a deep copy per cell before validation); now it is refused from the base alone. A valid
    700 KiB base times 1000 seeds is refused from its size, before one cell is built."""
    junk = [[]] * 38_000  # ~150 KiB of JSON, each empty list a new object in every copy
    before = peak_rss(stack.api.process.pid)
    response = http.post("/v1/sweeps", json={"base": {**TINY_SPEC, "junk": junk}, "grid": {"seed": list(range(1000))}})
    assert response.status_code == 422 and response.json()["error"]["field"] == "base.junk", response.text[:300]
    matrix = [[0.001] * 100] * 1000  # ~700 KiB, a valid shape: only its expansion is too large
    big = http.post("/v1/sweeps", json={"base": {**TINY_SPEC, "noise": {"type": "transition", "matrix": matrix}},
                                        "grid": {"seed": list(range(1000))}})
    assert big.status_code == 422 and "specs take" in big.json()["error"]["message"], big.text[:300]
    assert peak_rss(stack.api.process.pid) - before < GROWTH
    assert http.get("/v1/sweeps").json()["sweeps"] == []


def test_an_upload_bomb_is_unpacked_outside_the_api(stack: Stack, http: httpx.Client) -> None:
    """2.6 MiB that unpack to 256 MiB (100:1, under the zip-bomb ratio): the checker process
    reads and converts it all, then refuses a label; the API's peak does not move."""
    n = 256 * 2**20 // (32 * 32 * 3)
    x = np.zeros((n, 32, 32, 3), np.uint8)
    x[:, ::4, ::4, 0] = 1
    y = np.arange(n) % 3
    y[-1] = 7  # beyond the 3 class names: found only after every image is read
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=x, y_train=y, x_test=x[:6], y_test=np.arange(6) % 3,
                        classes=np.array(["a", "b", "c"]))
    del x
    before = peak_rss(stack.api.process.pid)
    response = http.post("/v1/datasets", data={"name": "bomb"}, files={"file": ("bomb.npz", buffer.getvalue())})
    assert response.status_code == 400, response.text[:300]
    assert "label 7" in response.json()["error"]["message"]
    assert peak_rss(stack.api.process.pid) - before < GROWTH
    assert http.get("/v1/datasets").json()["datasets"] == []
