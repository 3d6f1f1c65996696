"""Every route but the health checks needs a live API key; key management needs the admin token."""

import pytest
from fastapi.testclient import TestClient


def test_no_key_is_refused_with_401(client: TestClient):
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/catalog"), ("GET", "/v1/jobs/job_ab")]:
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_key_is_refused(client: TestClient):
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer nf_not-a-key"})
    assert response.status_code == 401


def test_revoked_key_is_refused(client: TestClient, admin_headers):
    created = client.post("/v1/api-keys", json={"name": "bob"}, headers=admin_headers).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200

    revoked = client.delete(f"/v1/api-keys/{created['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/v1/jobs", headers=headers).status_code == 401
    assert client.delete(f"/v1/api-keys/{created['id']}", headers=admin_headers).status_code == 200


def test_key_is_shown_once_and_stored_hashed(client: TestClient, admin_headers, settings):
    from sqlmodel import Session, select

    from shared.db import get_engine
    from shared.models import ApiKey

    created = client.post("/v1/api-keys", json={"name": "carol"}, headers=admin_headers).json()
    with Session(get_engine(settings.database_url)) as session:
        stored = session.exec(select(ApiKey).where(ApiKey.id == created["id"])).one()
    assert created["key"] not in (stored.hash, stored.prefix)
    assert created["key"].startswith(stored.prefix)


def test_a_second_key_for_an_existing_user_sees_the_same_jobs(client: TestClient, admin_headers):
    first = client.post("/v1/api-keys", json={"name": "dave"}, headers=admin_headers).json()
    second = client.post("/v1/api-keys", json={"user_id": first["user_id"]}, headers=admin_headers).json()
    assert second["user_id"] == first["user_id"] and second["key"] != first["key"]
    job = client.post("/v1/jobs", json={"dataset": "mnist", "epochs": 1},
                      headers={"Authorization": f"Bearer {first['key']}"}).json()
    seen = client.get(f"/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {second['key']}"})
    assert seen.status_code == 200


def test_unknown_user_id_is_404(client: TestClient, admin_headers):
    response = client.post("/v1/api-keys", json={"user_id": 10**9}, headers=admin_headers)
    assert response.status_code == 404 and response.json()["error"]["field"] == "user_id"


def test_admin_routes_need_the_admin_token(client: TestClient, user_headers):
    assert client.post("/v1/api-keys", json={"name": "eve"}).status_code == 401
    refused = client.post("/v1/api-keys", json={"name": "eve"}, headers=user_headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert client.delete("/v1/api-keys/1", headers=user_headers).status_code == 403


def test_health_routes_need_no_key(client: TestClient):
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("key_id", [2**31, 2**63, 10**30, 0, -1])
def test_an_id_no_row_can_have_is_a_422_not_a_500(client, admin_headers, key_id):
    revoked = client.delete(f"/v1/api-keys/{key_id}", headers=admin_headers)
    created = client.post("/v1/api-keys", json={"user_id": key_id}, headers=admin_headers)
    assert (revoked.status_code, created.status_code) == (422, 422), (revoked.text, created.text)
