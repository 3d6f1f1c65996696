"""Artifacts: listed, streamed or redirected to a presigned URL; names cannot leave the job's prefix."""

import os

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from shared.errors import BadArtifactName, ObjectMissing, StoreUnavailable
from shared.store import artifact_key, get_store, job_prefix


@pytest.fixture
def job_id(client: TestClient, user_headers, settings) -> str:
    job_id = client.post("/v1/jobs", json={"dataset": "mnist", "epochs": 1}, headers=user_headers).json()["id"]
    store = get_store(settings)
    store.put_bytes(artifact_key(job_id, "result.json"), b'{"final_test_accuracy": 0.9}', "application/json")
    store.put_bytes(artifact_key(job_id, "checkpoint.pt"), os.urandom(3000))
    store.put_bytes(job_prefix(job_id) + "resume/epoch_1.pt", b"resume point")
    return job_id


def test_artifacts_are_listed_with_their_sizes(client: TestClient, user_headers, job_id):
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=user_headers).json()["artifacts"]
    assert [(a["name"], a["size"]) for a in listed] == [("checkpoint.pt", 3000), ("result.json", 28)]


def test_an_artifact_is_streamed(client: TestClient, user_headers, settings, job_id):
    response = client.get(f"/v1/jobs/{job_id}/artifacts/result.json", headers=user_headers)
    assert response.status_code == 200 and response.json() == {"final_test_accuracy": 0.9}
    assert response.headers["content-type"] == "application/json"
    assert 'filename="result.json"' in response.headers["content-disposition"]
    binary = client.get(f"/v1/jobs/{job_id}/artifacts/checkpoint.pt", headers=user_headers)
    assert binary.content == get_store(settings).get_bytes(artifact_key(job_id, "checkpoint.pt"))


def test_redirect_gives_a_working_presigned_url(client: TestClient, user_headers, job_id):
    response = client.get(f"/v1/jobs/{job_id}/artifacts/result.json", params={"redirect": "true"},
                          headers=user_headers, follow_redirects=False)
    assert response.status_code == 307
    url = response.headers["location"]
    assert "X-Amz-Signature" in url and "X-Amz-Expires=300" in url
    assert httpx.get(url).json() == {"final_test_accuracy": 0.9}


def test_missing_and_unsafe_names(client: TestClient, user_headers, job_id):
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/plot.png", headers=user_headers)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "name"
    for name in ("a..b", ".env", "%2E%2E%2Fother", "x%2Fy"):
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=user_headers)
        assert response.status_code in (404, 422), name
        if response.status_code == 422:
            assert response.json()["error"]["code"] == "invalid_artifact_name"


@pytest.mark.parametrize("name", ["../x", "x/y", "..", ".hidden", "a..b", "", "x\\y", "x" * 129, "é"])
def test_artifact_names_cannot_leave_the_job_prefix(name):
    with pytest.raises(BadArtifactName):
        artifact_key("job_ab12", name)


def test_job_ids_cannot_leave_the_jobs_prefix():
    with pytest.raises(ValueError):
        job_prefix("../datasets")


def test_large_files_round_trip_with_multipart(settings, tmp_path):
    store = get_store(settings)
    path = tmp_path / "big.bin"
    data = os.urandom(6 * 1024 * 1024 + 17)  # over the 5 MiB multipart threshold
    path.write_bytes(data)
    key = artifact_key("job_beef01", "checkpoint.pt")
    store.put_file(key, path)
    assert store.stat(key).size == len(data)
    assert b"".join(store.iter_bytes(key)) == data
    store.get_file(key, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data
    assert store.delete_prefix(job_prefix("job_beef01")) == 1
    with pytest.raises(ObjectMissing):
        store.get_bytes(key)


def test_an_unreachable_store_raises_store_unavailable(settings):
    down = get_store(settings.model_copy(update={"s3_endpoint": "127.0.0.1:1", "s3_attempts": 2}))
    with pytest.raises(StoreUnavailable):
        down.get_bytes("jobs/job_ab/result.json")


def test_store_down_answers_503_on_artifact_routes(settings, user_headers, job_id):
    broken = create_app(settings.model_copy(update={"s3_endpoint": "127.0.0.1:1", "s3_attempts": 1}))
    with TestClient(broken) as down:
        response = down.get(f"/v1/jobs/{job_id}/artifacts", headers=user_headers)
        assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
        assert down.get(f"/v1/jobs/{job_id}", headers=user_headers).status_code == 200
