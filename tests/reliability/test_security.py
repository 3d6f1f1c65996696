"""Security promises: keys hashed at rest and compared in constant time, revocable keys,
admin routes behind the admin token, every route closed to the wrong user, a per-user limit.

`test_every_route_refuses_the_wrong_user` walks `app.routes`, so a route added later is
checked without anyone editing this file (or fails, naming what the walk must learn). The
dashboard's routes (/ui) are walked too, with a signed-in session instead of a key.
"""

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import text

from api import auth
from api.deps import get_current_user, require_admin
from api.ui.session import signed_in
from shared.settings import Settings
from shared.store import artifact_key, get_store
from tests.conftest import csrf_token, ui_sign_in
from tests.reliability.conftest import TINY_SPEC, User, db_session, stored_key

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                "/ui/", "/ui/login", "/ui/{path:path}"}
ARTIFACT = "result.json"
BODIES = {"/v1/datasets/{dataset_id}/versions": {"drop": [0]}}  # a body the owner's request would pass with


def _dependency_calls(dependant: Any) -> set[Any]:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= _dependency_calls(sub)
    return calls


def _flat_routes(app: FastAPI) -> list[Any]:
    """Every route with its dependencies, also inside included routers (FastAPI >= 0.16x wraps them)."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [route for route in iter_contexts(app.routes) if hasattr(route, "dependant")]


def api_routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    return sorted(
        ((method, route.path, route) for route in _flat_routes(app) for method in route.methods if method != "HEAD"),
        key=lambda t: (t[1], t[0]),
    )


def kind(route: Any) -> str:
    calls = _dependency_calls(route.dependant)
    if require_admin in calls:
        return "admin"
    if get_current_user in calls:
        return "user"
    if signed_in in calls:
        return "session"
    return "public"


def session_of(app: FastAPI, someone: User) -> TestClient:
    """A client signed into the dashboard as `someone` (its cookie jar holds the session)."""
    return ui_sign_in(TestClient(app), someone.key)


@pytest.fixture(scope="module")
def victim(api: TestClient, user: Callable[..., User], isolated_settings: Settings) -> dict[str, Any]:
    """A user owning one of everything: a finished job with an artifact, a queued job,
    and a sweep and a data set (a version of an upload) where those routes exist."""
    owner = user("victim")
    finished = api.post("/v1/jobs", json=TINY_SPEC, headers=owner.headers).json()["id"]
    assert api.post(f"/v1/jobs/{finished}/cancel", headers=owner.headers).json()["status"] == "cancelled"
    get_store(isolated_settings).put_bytes(artifact_key(finished, ARTIFACT), b'{"final_test_accuracy": 0.5}')
    queued = api.post("/v1/jobs", json={**TINY_SPEC, "seed": 1}, headers=owner.headers).json()["id"]
    ids: dict[str, Any] = {"user": owner, "job_id": finished, "queued_job_id": queued, "key_id": owner.key_id,
                           "name": ARTIFACT, "index": 0}
    paths = {route.path for route in _flat_routes(api.app)}
    if "/v1/sweeps" in paths:
        sweep = {"base": {**TINY_SPEC, "epochs": 1}, "grid": {"seed": [0]}}
        response = api.post("/v1/sweeps", json=sweep, headers=owner.headers)
        assert response.status_code in (200, 201), response.text
        ids["sweep_id"] = response.json()["id"]
        for job_id in response.json().get("jobs", []):
            api.post(f"/v1/jobs/{job_id}/cancel", headers=owner.headers)
    if "/v1/datasets" in paths:
        ids["dataset_id"] = _upload_dataset(api, owner)
    if ids.get("dataset_id") and "/v1/datasets/{dataset_id}/versions" in paths:  # a version of it, then
        response = api.post(f"/v1/datasets/{ids['dataset_id']}/versions", json={"drop": [1]}, headers=owner.headers)
        assert response.status_code == 201, response.text
        ids["dataset_id"] = response.json()["id"]
    return ids


def _upload_dataset(api: TestClient, owner: User) -> str | None:
    """A tiny data set in the upload format (npz); None when the route refuses it (the walk then
    still checks that another user's made-up id is a 404)."""
    import io

    import numpy as np

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.integers(0, 255, (200, 1, 28, 28), dtype=np.uint8),
             y_train=np.arange(200) % 10, x_test=rng.integers(0, 255, (50, 1, 28, 28), dtype=np.uint8),
             y_test=np.arange(50) % 10)
    response = api.post("/v1/datasets", files={"file": ("tiny.npz", buffer.getvalue())},
                        data={"name": "tiny"}, headers=owner.headers)
    return response.json()["id"] if response.status_code in (200, 201) else None


def _path(path: str, ids: dict[str, Any], job_key: str) -> str:
    values = {**ids, "job_id": ids[job_key]}
    for param in [p.strip("{}").split(":")[0] for p in path.split("/") if p.startswith("{")]:
        if param not in values or values[param] is None:
            pytest.fail(f"the route walk does not know the path parameter {param!r} of {path}; "
                        "teach `victim` to own one")
        path = path.replace("{" + param + "}", str(values[param])).replace("{" + param + ":path}", str(values[param]))
    return path


def test_only_health_and_docs_routes_are_public(isolated_app: FastAPI) -> None:
    public = {path for _method, path, route in api_routes(isolated_app) if kind(route) == "public"}
    assert public <= PUBLIC_PATHS, f"routes without authentication: {sorted(public - PUBLIC_PATHS)}"


def test_every_route_refuses_the_wrong_user(
    api: TestClient, isolated_app: FastAPI, victim: dict[str, Any], user: Callable[..., User]
) -> None:
    """As another user, every route with an id answers 404 (admin routes 401/403), every list
    leaves the victim's things out; the victim's own reads still work afterwards."""
    attacker = user("mallory")
    attacker_ui = session_of(isolated_app, attacker)
    form = {"csrf_token": csrf_token(attacker_ui.get("/ui/jobs").text)}
    checked = []
    for method, path, route in api_routes(isolated_app):
        if kind(route) == "public":
            continue
        if kind(route) == "session":
            if path == "/ui/logout":
                continue  # it ends the attacker's own session
            assert TestClient(isolated_app).request(method, _path(path, victim, "job_id"),
                                                    follow_redirects=False).status_code == 401, (method, path)
            if "{" not in path:
                response = attacker_ui.get(path)
                assert response.status_code == 200, (path, response.text)
                leaked = [v for k, v in victim.items() if k.endswith("_id") and k != "key_id" and v
                          and str(v) in response.text]
                assert not leaked, f"GET {path} shows another user's {leaked}"
            for job_key in ("job_id", "queued_job_id") if "{" in path else ():
                response = attacker_ui.request(method, _path(path, victim, job_key), data=form)
                assert response.status_code == 404, (method, path, response.status_code, response.text)
                assert response.json()["error"]["code"] == "not_found", response.text
            checked.append((method, path))
            continue
        if kind(route) == "admin":
            url = _path(path, victim, "job_id")
            assert api.request(method, url).status_code == 401, (method, path)
            response = api.request(method, url, headers=attacker.headers, json={"name": "x"})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
            checked.append((method, path))
            continue
        if "{" not in path:
            if method == "GET":
                response = api.get(path, headers=attacker.headers)
                assert response.status_code == 200, (path, response.text)
                leaked = [v for k, v in victim.items() if k.endswith("_id") and k != "key_id" and v
                          and str(v) in response.text]
                assert not leaked, f"GET {path} shows another user's {leaked}"
                checked.append((method, path))
            continue
        for job_key in ("job_id", "queued_job_id"):
            url = _path(path, victim, job_key)
            response = api.request(method, url, headers=attacker.headers, json=BODIES.get(path))
            assert response.status_code == 404, (method, url, response.status_code, response.text)
            assert response.json()["error"]["code"] == "not_found", response.text
            assert victim["job_id"] not in response.text or "job" in response.json()["error"]["message"]
        checked.append((method, path))
    # the walk did reach the job routes, and the victim's things are untouched and readable
    assert ("GET", "/v1/jobs/{job_id}/artifacts/{name}") in checked
    assert ("POST", "/v1/jobs/{job_id}/cancel") in checked
    assert ("POST", "/ui/jobs/{job_id}/cancel") in checked and ("GET", "/ui/jobs/{job_id}/events") in checked
    owner = victim["user"]
    assert api.get(f"/v1/jobs/{victim['queued_job_id']}", headers=owner.headers).json()["status"] == "queued"
    download = api.get(f"/v1/jobs/{victim['job_id']}/artifacts/{ARTIFACT}", headers=owner.headers)
    assert download.status_code == 200 and json.loads(download.content) == {"final_test_accuracy": 0.5}
    owner_ui = session_of(isolated_app, owner)
    for method, path, route in api_routes(isolated_app):
        if method == "GET" and kind(route) == "user" and "{" in path:
            response = api.get(_path(path, victim, "job_id"), headers=owner.headers, follow_redirects=False)
            assert response.status_code in (200, 307), (path, response.status_code, response.text)
        if method == "GET" and kind(route) == "session" and "{" in path:
            response = owner_ui.get(_path(path, victim, "job_id"))
            assert response.status_code == 200, (path, response.status_code, response.text)


def test_a_job_cannot_train_on_another_users_dataset(
    api: TestClient, victim: dict[str, Any], user: Callable[..., User]
) -> None:
    dataset = victim.get("dataset_id") or "ds_" + "0" * 24
    response = api.post("/v1/jobs", json={**TINY_SPEC, "dataset": dataset}, headers=user("mallory").headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "dataset"


def test_keys_are_stored_only_as_their_hash(api: TestClient, user: Callable[..., User],
                                            isolated_settings: Settings) -> None:
    someone = user("hash-check")
    with db_session(isolated_settings) as session:
        rows = session.execute(text("SELECT * FROM api_key")).mappings().all()
    assert rows and not any(someone.key in json.dumps({k: str(v) for k, v in row.items()}) for row in rows)
    assert stored_key(isolated_settings, someone.key_id).hash == hashlib.sha256(someone.key.encode()).hexdigest()
    assert api.get("/v1/jobs", headers=someone.headers).status_code == 200


def test_secrets_are_compared_in_constant_time() -> None:
    """The key is looked up by its sha256 (no early exit on the secret), and both the key hash
    and the admin token are compared with hmac.compare_digest."""
    assert "compare_digest" in inspect.getsource(auth.find_live_key)  # user_for_key and the dashboard's sign-in
    assert "hash_key(" in inspect.getsource(auth.find_live_key)
    assert "find_live_key(" in inspect.getsource(auth.user_for_key)
    assert "compare_digest" in inspect.getsource(auth.is_admin_token)
    assert not auth.is_admin_token("", "")  # an unset admin token opens nothing


def test_revoked_key_is_refused(api: TestClient, user: Callable[..., User], admin_headers: dict[str, str]) -> None:
    someone = user("revoked")
    assert api.get("/v1/jobs", headers=someone.headers).status_code == 200
    assert api.delete(f"/v1/api-keys/{someone.key_id}", headers=someone.headers).status_code == 403
    response = api.delete(f"/v1/api-keys/{someone.key_id}", headers=admin_headers)
    assert response.status_code == 200 and response.json()["revoked_at"]
    refused = api.get("/v1/jobs", headers=someone.headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert api.get("/v1/jobs", headers={"Authorization": "Bearer nf_made-up"}).status_code == 401


def test_admin_routes_need_the_admin_token(api: TestClient, admin_headers: dict[str, str]) -> None:
    assert api.post("/v1/api-keys", json={"name": "x"}).status_code == 401
    wrong = {"Authorization": admin_headers["Authorization"] + "x"}
    assert api.post("/v1/api-keys", json={"name": "x"}, headers=wrong).status_code == 403


def test_admin_routes_are_closed_when_no_admin_token_is_set(settings: Settings) -> None:
    from api.main import create_app

    with TestClient(create_app(settings.model_copy(update={"admin_token": ""}))) as closed:
        for token in ("", " ", "x"):
            response = closed.post("/v1/api-keys", json={"name": "x"}, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code in (401, 403), response.text


def test_per_user_limit_on_active_jobs_answers_429(isolated_settings: Settings, admin_headers: dict[str, str]) -> None:
    from api.main import create_app

    limited = create_app(isolated_settings.model_copy(update={"max_active_jobs_per_user": 3}))
    with TestClient(limited) as client:
        heads = []
        for name in ("busy", "other"):
            body = client.post("/v1/api-keys", json={"name": name}, headers=admin_headers).json()
            heads.append({"Authorization": f"Bearer {body['key']}"})
        busy, other = heads
        ids = [client.post("/v1/jobs", json={**TINY_SPEC, "seed": s}, headers=busy).json()["id"] for s in range(3)]
        refused = client.post("/v1/jobs", json={**TINY_SPEC, "seed": 9}, headers=busy)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "too_many_active_jobs" and "cancel" in error["message"]
        assert client.post("/v1/jobs", json=TINY_SPEC, headers=other).status_code == 201  # per user
        client.post(f"/v1/jobs/{ids[0]}/cancel", headers=busy)
        assert client.post("/v1/jobs", json={**TINY_SPEC, "seed": 9}, headers=busy).status_code == 201
