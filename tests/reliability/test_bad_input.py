"""Bad input: every spec field has bounds and the error names the field and what to change;
request size limits (413); artifact names cannot leave their job's prefix; ids are
validated; presigned URLs are short-lived and good for one object only.

Size limits and path traversal go through a real uvicorn process over raw sockets, so that
no client library normalises `..` or adds a Content-Length the attacker would not send.
"""

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import annotated_types as at
import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from shared.settings import Settings
from shared.spec import JobSpec, NoiseSettings
from shared.errors import BadArtifactName
from shared.store import artifact_key, get_store
from tests.reliability.conftest import TINY_SPEC, User

# Out-of-bounds values no numeric constraint describes: field → values that must be refused.
EXTRA_BAD: dict[str, list[Any]] = {
    "dataset": ["", "x" * 65, "imagenet", "../../etc/passwd", "ds_" + "0" * 24],
    "loss": ["", "x" * 65, "nce+nce", "ce+rce", "rce+nce", "nce+rce+mae", "softmax"],
    "loss_params": [{"q": "NaN"}, {"q": 1e7}, {"zeta": 1.0}, {f"k{i}": 1.0 for i in range(17)}, {"q": "x"}],
    "model": ["resnet9000", ""],
    "train_size": [0, 5, 10**9],
    "nesterov": ["maybe", 2],
    "deterministic": ["yes", 1, None],
    "schedule": ["zigzag"],
    "augment": ["rotate"],
    "precision": ["fp8"],
    "cross_fit_folds": [1],  # one fold would train on nothing
    "noise": ["symmetric", {"type": "symmetric", "rate": 0.4, "extra": 1}],
    "noise.type": ["gaussian"],
    "noise.rate": [0.95],  # symmetric over 10 classes: at most 0.9
    "noise.matrix": [[[1.0]], [[0.5, 0.5]] * 10, [[0.1] * 10] * 10],
}


def _numeric_bad(model: type[BaseModel], name: str) -> list[Any]:
    bad: list[Any] = []
    for bound in model.model_fields[name].metadata:
        match bound:
            case at.Ge(ge=v):
                bad.append(v - 1 if isinstance(v, int) else v - 1e-3)
            case at.Gt(gt=v):
                bad.append(v)
            case at.Le(le=v):
                bad.append(v + 1 if isinstance(v, int) else v * 1.01 + 1e-3)
            case at.Lt(lt=v):
                bad.append(v)
    return bad


def _cases() -> list[tuple[str, Any]]:
    cases = []
    for model, prefix in ((JobSpec, ""), (NoiseSettings, "noise.")):
        for name, field in model.model_fields.items():
            values = _numeric_bad(model, name) + EXTRA_BAD.get(prefix + name, [])
            if field.annotation in (float, float | None) or str(field.annotation) == "float | None":
                values.append("NaN")
            cases += [(prefix + name, value) for value in values]
    return cases


def _with(field: str, value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(TINY_SPEC))
    if field.startswith("noise."):
        spec["noise"] = {"type": "symmetric", "rate": 0.4} | {field.split(".", 1)[1]: value}
        if field == "noise.matrix":
            spec["noise"] = {"type": "transition", "matrix": value}
    elif field == "loss_params":
        spec |= {"loss": "gce", "loss_params": value}
    else:
        spec[field] = value
    return spec


def test_every_spec_field_is_checked_here() -> None:
    """A new spec field must come with its bounds: numeric constraints, or values in EXTRA_BAD."""
    fields = {name for name in JobSpec.model_fields} | {f"noise.{name}" for name in NoiseSettings.model_fields}
    unbounded = fields - {name for name, _ in _cases()}
    assert not unbounded, f"spec fields with no out-of-bounds value here: {sorted(unbounded)}"


@pytest.fixture(scope="module")
def bounds_user(user: Callable[..., User]) -> User:
    return user("bounds")


@pytest.mark.parametrize(("field", "value"), _cases(), ids=lambda v: str(v)[:30])
def test_out_of_bounds_spec_field_is_refused_with_what_to_change(
    api: TestClient, bounds_user: User, field: str, value: Any
) -> None:
    body = json.dumps(_with(field, value)).replace('"NaN"', "NaN")  # raw NaN, as a careless client sends it
    response = api.post("/v1/jobs", content=body, headers={**bounds_user.headers, "Content-Type": "application/json"})
    assert response.status_code == 422, (field, value, response.status_code, response.text)
    error = response.json()["error"]
    top = field.split(".")[0]
    assert error["field"] and error["field"].split(".")[0] == top, (field, error)
    assert len(error["message"]) > 10 and error["message"] != "Invalid", error


# ---------------------------------------------------------------- raw HTTP to a live uvicorn


def raw_request(base: str, method: str, path: str, headers: dict[str, str], body: bytes = b"",
                chunked: bool = False) -> tuple[int, bytes]:
    """One HTTP/1.1 request exactly as written (no normalisation); returns (status, body)."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body:
        lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sender = threading.Thread(target=_send_body, args=(sock, body, chunked), daemon=True)
        sender.start()  # read the answer meanwhile: a server refusing the body answers before reading it
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            if not data:
                raise
        sender.join(10)
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = _unchunk(payload)
    return status, payload


def _send_body(sock: socket.socket, body: bytes, chunked: bool) -> None:
    try:
        if chunked:
            for i in range(0, len(body), 65536):
                piece = body[i:i + 65536]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        elif body:
            sock.sendall(body)
    except OSError:
        pass  # the server answered and closed before reading it all


def _unchunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size, _, rest = payload.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, payload = out + rest[:n], rest[n + 2:]
    return out


@pytest.fixture(scope="module")
def live_user(live_api: Any, admin_headers: dict[str, str]) -> dict[str, str]:
    body = httpx.post(f"{live_api.url}/v1/api-keys", json={"name": "raw"}, headers=admin_headers).json()
    return {"Authorization": f"Bearer {body['key']}"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_request_body_answers_413(live_api: Any, live_user: dict[str, str], settings: Settings,
                                            chunked: bool) -> None:
    padding = "x" * (settings.max_request_bytes + 1024)
    body = json.dumps({**TINY_SPEC, "loss_params": {"q": 0.5}, "pad": padding}).encode()
    status, payload = raw_request(live_api.url, "POST", "/v1/jobs",
                                  {**live_user, "Content-Type": "application/json"}, body, chunked=chunked)
    assert status == 413, payload[:300]
    error = json.loads(payload)["error"]
    assert error["code"] == "request_too_large" and str(settings.max_request_bytes) in error["message"]
    assert httpx.get(f"{live_api.url}/healthz").status_code == 200  # the server lives on


TRAVERSALS = [
    "../{other}/artifacts/result.json", "..%2f{other}%2fresult.json", "%2e%2e/{other}/result.json",
    "%2e%2e%2f%2e%2e%2fjobs%2f{other}%2fresult.json", "..%5c{other}%5cresult.json", "..\\{other}\\result.json",
    "%2fjobs%2f{other}%2fresult.json", "/jobs/{other}/result.json", "%00result.json", "result.json%00",
    ".", "..", "%2e", "%2e%2e", "....//result.json", "sub%2f..%2f..%2f{other}%2fresult.json",
    "C:%5cwindows", "~", "result.json%2f..%2f..%2f{other}%2fresult.json",
]


def test_artifact_names_cannot_leave_the_jobs_prefix(
    live_api: Any, live_user: dict[str, str], settings: Settings
) -> None:
    """Names that would reach another job's (the same user's!) artifacts or anything outside
    jobs/{id}/ are refused, however they are encoded."""
    mine = httpx.post(f"{live_api.url}/v1/jobs", json=TINY_SPEC, headers=live_user).json()["id"]
    other = httpx.post(f"{live_api.url}/v1/jobs", json={**TINY_SPEC, "seed": 5}, headers=live_user).json()["id"]
    for job_id in (mine, other):
        httpx.post(f"{live_api.url}/v1/jobs/{job_id}/cancel", headers=live_user)
    store = get_store(settings)
    secret = b"the other job's result"
    store.put_bytes(artifact_key(other, "result.json"), secret)
    store.put_bytes(f"jobs/{mine}/resume/state.pt", b"internal")  # a sub-folder is not an artifact
    for template in TRAVERSALS:
        name = template.format(other=other)
        for path in (f"/v1/jobs/{mine}/artifacts/{name}", f"/v1/jobs/{mine}/artifacts/{name}?redirect=true"):
            status, payload = raw_request(live_api.url, "GET", path, live_user)
            assert status in (400, 404, 422), (path, status, payload[:200])
            assert secret not in payload, path
    listed = httpx.get(f"{live_api.url}/v1/jobs/{mine}/artifacts", headers=live_user).json()["artifacts"]
    assert [a["name"] for a in listed] == []
    for name in ("../x", "..", "a/b", "/etc/passwd", "a\\b", "%2e%2e", "", ".hidden", "x" * 200, "a\x00b"):
        with pytest.raises(BadArtifactName):
            artifact_key(mine, name)


BAD_IDS = ["%00", "job_%00", "job_1'%20OR%20'1'='1", "..", "job_" + "a" * 70, "%2e%2e%2fjobs", "JOB_ABC",
           "job_xyz", "%F0%9F%98%80", "job_1;DROP%20TABLE%20job", "%25", "*"]


def test_malformed_ids_answer_404_or_422_never_500(live_api: Any, live_user: dict[str, str]) -> None:
    for bad in BAD_IDS:
        for suffix in ("", "/cancel", "/metrics", "/artifacts", "/artifacts/result.json", "/events"):
            method = "POST" if suffix == "/cancel" else "GET"
            status, payload = raw_request(live_api.url, method, f"/v1/jobs/{bad}{suffix}", live_user)
            assert status in (404, 405, 422), (bad, suffix, status, payload[:200])
            assert payload.startswith(b"{") and b'"error"' in payload, payload[:200]
    for cursor in ("%00", "bm90IGpzb24", "WyIyMDIwIiwgImpvYl8xIl0", "x" * 400):
        status, payload = raw_request(live_api.url, "GET", f"/v1/jobs?cursor={cursor}", live_user)
        assert status == 422, (cursor, status, payload[:200])


# ---------------------------------------------------------------- presigned URLs


def test_presigned_urls_are_short_lived_and_per_object(
    api: TestClient, user: Callable[..., User], isolated_settings: Settings
) -> None:
    owner = user("presign")
    a, b = (api.post("/v1/jobs", json={**TINY_SPEC, "seed": s}, headers=owner.headers).json()["id"] for s in (1, 2))
    store = get_store(isolated_settings)
    store.put_bytes(artifact_key(a, "result.json"), b"AAA")
    store.put_bytes(artifact_key(b, "result.json"), b"BBB")
    response = api.get(f"/v1/jobs/{a}/artifacts/result.json?redirect=true", headers=owner.headers,
                       follow_redirects=False)
    assert response.status_code == 307
    url = response.headers["location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert 0 < int(query["X-Amz-Expires"][0]) <= isolated_settings.presign_ttl_s
    assert httpx.get(url).content == b"AAA"
    for forged in (url.replace(a, b), url.replace("result.json", "metrics.jsonl"), url.split("?")[0],
                   url.replace("X-Amz-Expires=", "X-Amz-Expires=9")):
        refused = httpx.get(forged)
        assert refused.status_code in (400, 403), (forged, refused.status_code)
        assert b"BBB" not in refused.content
    short = get_store(isolated_settings.model_copy(update={"presign_ttl_s": 1})).presigned_get(
        artifact_key(a, "result.json"))
    assert httpx.get(short).status_code == 200
    time.sleep(2.2)
    assert httpx.get(short).status_code in (400, 403)
