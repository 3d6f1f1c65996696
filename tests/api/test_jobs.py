"""POST/GET /v1/jobs: validation, resolution, idempotency, isolation, pagination, cancel, limits."""

from fastapi.testclient import TestClient

from api.main import create_app

SPEC = {"dataset": "mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "epochs": 2}


def test_a_job_is_stored_queued_with_its_resolved_spec(client: TestClient, user_headers):
    response = client.post("/v1/jobs", json=SPEC, headers=user_headers)
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["id"].startswith("job_") and job["status"] == "queued" and job["attempts"] == 0
    assert job["spec"]["model"] == "cnn4" and job["spec"]["beta"] == 10.0  # the paper's MNIST preset
    assert job["progress"] == {"epoch": 0, "epochs": 2, "metrics": {}}
    assert job["result"] is None and job["error"] is None and job["started_at"] is None
    assert job["created_at"].endswith("Z")
    assert client.get(f"/v1/jobs/{job['id']}", headers=user_headers).json() == job


def test_a_job_is_sent_to_the_train_queue(client: TestClient, user_headers, settings):
    import json

    from shared.queue import queue_key
    from shared.stream import redis_client

    job = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()
    messages = redis_client(settings.redis_url).lrange(queue_key(settings), 0, -1)
    tasks = [json.loads(m) for m in messages]
    assert any(t["headers"]["task"] == "noisyfit.train" and t["headers"]["argsrepr"] == repr([job["id"]])
               and t["properties"]["delivery_info"]["routing_key"] == "train" for t in tasks)


def test_an_unknown_choice_answers_422_listing_the_allowed_values(client: TestClient, user_headers):
    response = client.post("/v1/jobs", json={**SPEC, "noise": {"type": "uniform", "rate": 0.2}}, headers=user_headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == "noise.type"
    assert "symmetric" in error["message"] and "pairflip" in error["message"]


def test_an_unknown_field_answers_422_listing_the_fields(client: TestClient, user_headers):
    error = client.post("/v1/jobs", json={**SPEC, "epochz": 3}, headers=user_headers).json()["error"]
    assert error["field"] == "epochz" and "epochs" in error["message"] and "loss" in error["message"]
    nested = client.post("/v1/jobs", json={**SPEC, "noise": {"type": "none", "ratio": 0}}, headers=user_headers)
    assert "rate" in nested.json()["error"]["message"]


def test_an_unknown_loss_or_dataset_names_the_field_and_the_choices(client: TestClient, user_headers):
    loss = client.post("/v1/jobs", json={**SPEC, "loss": "nce+xyz"}, headers=user_headers).json()["error"]
    assert loss["field"] == "loss" and "rce" in loss["message"]
    data = client.post("/v1/jobs", json={**SPEC, "dataset": "imagenet"}, headers=user_headers)
    assert data.status_code == 422
    assert data.json()["error"] == {
        "code": "invalid_spec", "field": "dataset", "message": data.json()["error"]["message"]}
    assert "cifar10" in data.json()["error"]["message"]


def test_a_spec_that_cannot_run_says_what_to_change(client: TestClient, user_headers):
    error = client.post("/v1/jobs", json={**SPEC, "noise": {"type": "symmetric", "rate": 0.95}},
                        headers=user_headers).json()["error"]
    assert error["code"] == "invalid_spec" and error["field"] == "noise.rate" and "below" in error["message"]


def test_a_body_that_is_not_json_answers_422(client: TestClient, user_headers):
    response = client.post("/v1/jobs", content=b"{not json", headers={**user_headers, "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"


def test_the_same_idempotency_key_returns_the_same_job(client: TestClient, user_headers, other_user_headers):
    headers = {**user_headers, "Idempotency-Key": "run-1"}
    first = client.post("/v1/jobs", json=SPEC, headers=headers)
    again = client.post("/v1/jobs", json=SPEC, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    listed = client.get("/v1/jobs", headers=user_headers).json()["jobs"]
    assert [j["id"] for j in listed] == [first.json()["id"]]
    other = client.post("/v1/jobs", json=SPEC, headers={**other_user_headers, "Idempotency-Key": "run-1"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_the_same_idempotency_key_with_another_spec_is_409(client: TestClient, user_headers):
    headers = {**user_headers, "Idempotency-Key": "run-2"}
    assert client.post("/v1/jobs", json=SPEC, headers=headers).status_code == 201
    response = client.post("/v1/jobs", json={**SPEC, "seed": 1}, headers=headers)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert response.json()["error"]["field"] == "Idempotency-Key"


def test_another_users_job_is_404_on_every_route(client: TestClient, user_headers, other_user_headers):
    job_id = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()["id"]
    routes = [("GET", ""), ("POST", "/cancel"), ("GET", "/metrics"), ("GET", "/events"),
              ("GET", "/artifacts"), ("GET", "/artifacts/result.json")]
    for method, suffix in routes:
        response = client.request(method, f"/v1/jobs/{job_id}{suffix}", headers=other_user_headers)
        assert response.status_code == 404, suffix
        assert response.json()["error"]["code"] == "not_found"
        unknown = client.request(method, f"/v1/jobs/job_0123456789{suffix}", headers=other_user_headers)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert client.get("/v1/jobs", headers=other_user_headers).json() == {"jobs": [], "next": None}
    assert client.get(f"/v1/jobs/{job_id}", headers=user_headers).json()["status"] == "queued"


def test_pages_follow_the_cursor_newest_first_without_gaps(client: TestClient, user_headers):
    created = [client.post("/v1/jobs", json={**SPEC, "seed": i}, headers=user_headers).json()["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=user_headers).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == created[::-1] and pages == 3


def test_jobs_filter_by_status(client: TestClient, user_headers):
    ids = [client.post("/v1/jobs", json={**SPEC, "seed": i}, headers=user_headers).json()["id"] for i in range(3)]
    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=user_headers)
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}, headers=user_headers).json()["jobs"]
    queued = client.get("/v1/jobs", params={"status": "queued"}, headers=user_headers).json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[1]]
    assert [j["id"] for j in queued] == [ids[2], ids[0]]
    bad = client.get("/v1/jobs", params={"status": "done"}, headers=user_headers).json()["error"]
    assert bad["field"] == "status" and "succeeded" in bad["message"]


def test_jobs_filter_by_data_set_and_loss_through_the_pages(client: TestClient, user_headers):
    specs = [{**SPEC, "seed": 0}, {**SPEC, "dataset": "fashion-mnist"}, {**SPEC, "loss": "ce"}, {**SPEC, "seed": 1}]
    ids = [client.post("/v1/jobs", json=spec, headers=user_headers).json()["id"] for spec in specs]

    def listed(**params: str) -> list[str]:
        seen, cursor = [], None
        while True:
            query = params | {"limit": "1"} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/jobs", params=query, headers=user_headers).json()
            seen += [j["id"] for j in page["jobs"] if j["id"] in ids]
            if (cursor := page["next"]) is None:
                return seen

    assert listed(dataset="fashion-mnist") == [ids[1]]
    assert listed(loss="NCE + RCE", dataset="mnist") == [ids[3], ids[0]]  # any spelling of a loss
    assert listed(loss="ce") == [ids[2]]
    bad = client.get("/v1/jobs", params={"loss": "xyz"}, headers=user_headers).json()["error"]
    assert bad["field"] == "loss" and "nce" in bad["message"]


def test_a_bad_cursor_is_422(client: TestClient, user_headers):
    error = client.get("/v1/jobs", params={"cursor": "garbage!"}, headers=user_headers).json()["error"]
    assert error["code"] == "invalid_cursor" and error["field"] == "cursor"


def test_a_queued_job_is_cancelled_at_once(client: TestClient, user_headers, settings):
    job_id = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers)
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers).json()["status"] == "cancelled"
    events = client.get(f"/v1/jobs/{job_id}/metrics", headers=user_headers).json()["events"]
    assert [e["type"] for e in events] == ["status", "status", "done"]
    assert events[-1]["status"] == "cancelled"


def test_a_finished_job_cannot_be_cancelled(client: TestClient, user_headers, settings):
    from sqlmodel import Session

    from shared import jobs
    from shared.db import get_engine

    job_id = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()["id"]
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.start_attempt(session, job_id, "w1", settings)
        assert jobs.finish(session, job_id, "w1", jobs.JobStatus.succeeded, settings,
                           result={"final_test_accuracy": 0.9, "best_test_accuracy": 0.91})
    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "job_finished"
    job = client.get(f"/v1/jobs/{job_id}", headers=user_headers).json()
    assert job["status"] == "succeeded" and job["result"]["final_test_accuracy"] == 0.9


def test_a_running_job_gets_a_cancel_request(client: TestClient, user_headers, settings):
    from sqlmodel import Session

    from shared import jobs
    from shared.db import get_engine

    job_id = client.post("/v1/jobs", json=SPEC, headers=user_headers).json()["id"]
    with Session(get_engine(settings.database_url)) as session:
        assert jobs.start_attempt(session, job_id, "w1", settings)
        assert jobs.standing(session, job_id, "w1") == jobs.Standing(held=True, cancel_requested=False)
        assert not jobs.standing(session, job_id, "w2").held
        job = client.post(f"/v1/jobs/{job_id}/cancel", headers=user_headers).json()
        assert job["status"] == "running" and job["cancel_requested"] is True
        assert jobs.standing(session, job_id, "w1") == jobs.Standing(held=True, cancel_requested=True)
        assert jobs.finish(session, job_id, "w1", jobs.JobStatus.cancelled, settings)
        assert not jobs.standing(session, job_id, "w1").held
    assert client.get(f"/v1/jobs/{job_id}", headers=user_headers).json()["status"] == "cancelled"


def test_too_many_active_jobs_answers_429(settings, make_user):
    limited = create_app(settings.model_copy(update={"max_active_jobs_per_user": 2}))
    with TestClient(limited) as client:
        headers = make_user("busy")
        ids = [client.post("/v1/jobs", json={**SPEC, "seed": i}, headers=headers).json()["id"] for i in range(2)]
        refused = client.post("/v1/jobs", json={**SPEC, "seed": 9}, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_active_jobs"
        client.post(f"/v1/jobs/{ids[0]}/cancel", headers=headers)
        assert client.post("/v1/jobs", json={**SPEC, "seed": 9}, headers=headers).status_code == 201


def test_the_queue_being_down_creates_no_job(settings, make_user, client):
    headers = make_user("unlucky")
    broken = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    with TestClient(broken) as broken_client:
        response = broken_client.post("/v1/jobs", json=SPEC, headers={**headers, "Idempotency-Key": "k"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "queue_unavailable"
        assert broken_client.get("/v1/jobs", headers=headers).json()["jobs"] == []
    retried = client.post("/v1/jobs", json=SPEC, headers={**headers, "Idempotency-Key": "k"})
    assert retried.status_code == 201


def test_the_catalog_lists_what_can_be_asked_for(client: TestClient, user_headers):
    catalog = client.get("/v1/catalog", headers=user_headers).json()
    assert {"mnist", "cifar100"} <= set(catalog["datasets"]) and "nce" in catalog["losses"]
    assert catalog["losses"]["nfl"]["params"]["detach_focal"] == 0.0
    assert catalog["losses"]["nfl"]["param_rules"]["detach_focal"] == "detach_focal = 0 or 1"
    assert catalog["sweep_presets"]["select"]["validation_split"] == [0.2]
    assert catalog["sweep_preset_base"] == {"select": {"epochs": 10}}


def test_malformed_strings_never_reach_sql(client: TestClient, user_headers, admin_headers):
    data = client.post("/v1/jobs", json={**SPEC, "dataset": "ds_\x00"}, headers=user_headers)
    assert data.status_code == 422 and data.json()["error"]["field"] == "dataset"
    name = client.post("/v1/api-keys", json={"name": "a\x00b"}, headers=admin_headers)
    assert name.status_code == 422 and name.json()["error"]["field"] == "name"
    assert client.get("/v1/jobs/job_%00", headers=user_headers).status_code == 404


def test_the_api_runs_on_sqlite_too(sqlite_settings, admin_headers):
    with TestClient(create_app(sqlite_settings)) as client:
        key = client.post("/v1/api-keys", json={"name": "lite"}, headers=admin_headers).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        ids = [client.post("/v1/jobs", json={**SPEC, "seed": i}, headers=headers).json()["id"] for i in range(3)]
        page = client.get("/v1/jobs", params={"limit": 2}, headers=headers).json()
        rest = client.get("/v1/jobs", params={"cursor": page["next"]}, headers=headers).json()
        assert [j["id"] for j in page["jobs"] + rest["jobs"]] == ids[::-1]
        assert client.post(f"/v1/jobs/{ids[0]}/cancel", headers=headers).json()["status"] == "cancelled"
