"""POST /v1/datasets/{id}/versions: a new data set with fixed labels, from a job's suspects or a
reviewer's decisions; the parent never changes; lineage and changes read back; deletes refused
while versions exist; retraining in the same request goes through the job-creation path."""

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from api.main import create_app
from shared.catalog import DATASETS, LOSSES
from shared.db import get_engine
from shared.models import DatasetRow, Job
from shared.settings import Settings
from shared.spec import JobSpec, resolve_spec
from shared.store import get_store
from shared.versions import ROOT_LABEL, VersionArrays, retrain_spec
from tests.conftest import store_trained_job

FMNIST = DATASETS["fashion-mnist"].train_samples
RNG = np.random.default_rng(0)
JOB_SPEC = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "loss": "nce+rce", "epochs": 3,
            "train_size": 1000, "seed": 0}


@pytest.fixture
def alice(client: TestClient, admin_headers: dict[str, str]) -> tuple[dict[str, str], int]:
    body = client.post("/v1/api-keys", json={"name": "alice"}, headers=admin_headers).json()
    return {"Authorization": f"Bearer {body['key']}"}, body["user_id"]


def trained(settings: Settings, user_id: int, spec: dict[str, Any] = JOB_SPEC, samples: int = FMNIST,
            status: str = "succeeded") -> tuple[str, np.ndarray, np.ndarray]:
    """A finished job on a data set of `samples`: it trained on samples 100..199 and validated on 0..9, with
    labels shifted by one on every third trained sample. Returns (job id, noisy, clean)."""
    clean = RNG.integers(0, 10, samples)
    noisy = clean.copy()
    noisy[100:200:3] = (clean[100:200:3] + 1) % 10
    job_id = store_trained_job(settings, user_id, spec, noisy=noisy, clean=clean,
                               train_indices=np.arange(100, 200), val_indices=np.arange(10), suspects=[],
                               status=status)
    return job_id, noisy, clean


def put_suspects(settings: Settings, job_id: str, noisy: np.ndarray, rows: list[tuple]) -> None:
    """suspected_mislabels.csv of (index, predicted, confidence[, flagged]) rows, as the worker writes it."""
    flagged = len(rows[0]) == 4
    header = "index,noisy_label,predicted,confidence,loss,rank"
    lines = [header + (",self_confidence,margin,flagged" if flagged else "")]
    for rank, (index, predicted, confidence, *flag) in enumerate(rows, 1):
        extra = f",0.1,0.2,{flag[0]}" if flagged else ""
        lines.append(f"{index},{noisy[index]},{predicted},{confidence},1.5,{rank}{extra}")
    get_store(settings).put_bytes(f"jobs/{job_id}/suspected_mislabels.csv", "\n".join(lines).encode() + b"\n")


def stored(settings: Settings, dataset_id: str) -> VersionArrays:
    arrays = VersionArrays.read(get_store(settings).get_bytes(f"datasets/{dataset_id}/data.npz"))
    assert arrays is not None
    return arrays


def version(client: TestClient, headers: dict[str, str], parent: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/datasets/{parent}/versions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/datasets/{response.json()['id']}"
    return response.json()


def test_a_version_from_a_job_holds_its_samples_and_labels_with_the_confident_suspects_relabelled(
        client: TestClient, alice, settings: Settings):
    headers, user_id = alice
    job_id, noisy, clean = trained(settings, user_id)
    put_suspects(settings, job_id, noisy, [
        (103, (noisy[103] + 5) % 10, 0.95),  # fixed: confident and disagreeing
        (106, (noisy[106] + 7) % 10, 0.45),  # kept: not confident enough
        (109, noisy[109], 0.99),  # kept: agrees with its label
    ])

    made = version(client, headers, "fashion-mnist", from_job=job_id)

    assert {k: made[k] for k in ("parent_id", "root", "source_job", "relabelled", "dropped", "changes",
                                 "train_samples", "num_classes", "test_samples", "has_clean_labels", "job")} == {
        "parent_id": "fashion-mnist", "root": "fashion-mnist", "source_job": job_id, "relabelled": 1, "dropped": 0,
        "changes": 1, "train_samples": 110, "num_classes": 10, "test_samples": 10000, "has_clean_labels": True,
        "job": None}
    arrays = stored(settings, made["id"])
    expected = np.concatenate([np.arange(10), np.arange(100, 200)])
    assert arrays.root == "fashion-mnist" and arrays.indices.tolist() == expected.tolist()
    labels = noisy[expected].copy()
    labels[expected == 103] = (noisy[103] + 5) % 10
    assert arrays.labels.tolist() == labels.tolist()
    changes = client.get(f"/v1/datasets/{made['id']}/changes", headers=headers).json()
    assert changes == {"parent_id": "fashion-mnist", "source_job": job_id, "by": "min_score", "action": "relabel",
                       "min_score": 0.5, "relabel": [[103, int(labels[expected == 103][0])]], "drop": []}
    shown = client.get(f"/v1/datasets/{made['id']}", headers=headers).json()
    assert shown == {k: v for k, v in made.items() if k != "job"}
    assert made["id"] in [d["id"] for d in client.get("/v1/datasets", headers=headers).json()["datasets"]]


def test_flagged_suspects_are_used_unless_a_threshold_is_given_and_drop_removes_them(
        client: TestClient, alice, settings: Settings):
    headers, user_id = alice
    job_id, noisy, _ = trained(settings, user_id)
    put_suspects(settings, job_id, noisy, [(120, (noisy[120] + 3) % 10, 0.4, 1), (121, (noisy[121] + 4) % 10, 0.97, 0),
                                           (150, (noisy[150] + 2) % 10, 0.8, 1)])

    by_flag = version(client, headers, "fashion-mnist", from_job=job_id, action="drop")
    assert (by_flag["dropped"], by_flag["relabelled"], by_flag["train_samples"]) == (2, 0, 108)
    assert 120 not in stored(settings, by_flag["id"]).indices and 150 not in stored(settings, by_flag["id"]).indices
    by_score = version(client, headers, "fashion-mnist", from_job=job_id, threshold=0.75)
    changes = client.get(f"/v1/datasets/{by_score['id']}/changes", headers=headers).json()
    assert (changes["by"], changes["min_score"], changes["relabel"]) == (
        "min_score", 0.75, [[121, (noisy[121] + 4) % 10], [150, (noisy[150] + 2) % 10]])


def test_a_reviewers_decisions_apply_to_the_parent_or_to_the_jobs_samples(
        client: TestClient, alice, settings: Settings):
    headers, user_id = alice
    made = version(client, headers, "fashion-mnist", changes=[[5, 3], [70, 1]], drop=[6, 59999], name="reviewed")
    assert (made["name"], made["train_samples"], made["relabelled"], made["dropped"]) == ("reviewed", FMNIST - 2, 2, 2)
    arrays = stored(settings, made["id"])
    assert len(arrays.indices) == FMNIST - 2 and 6 not in arrays.indices and 59999 not in arrays.indices
    assert arrays.labels[5] == 3 and arrays.labels[69] == 1, "index 70 moved down by one: 6 was dropped"
    assert (arrays.labels == ROOT_LABEL).sum() == FMNIST - 4, "the built-in's own labels, which the API does not hold"

    job_id, noisy, _ = trained(settings, user_id)
    on_job = version(client, headers, "fashion-mnist", from_job=job_id, changes=[[150, 9]], drop=[0])
    arrays = stored(settings, on_job["id"])
    assert arrays.indices.tolist() == list(range(1, 10)) + list(range(100, 200))
    assert arrays.labels[arrays.indices == 150].tolist() == [9]
    assert arrays.labels[arrays.indices == 151].tolist() == [noisy[151]]
    refused = client.post("/v1/datasets/fashion-mnist/versions", json={"from_job": job_id, "changes": [[50, 1]]},
                          headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "changes[0]"
    assert "not among those job" in refused.json()["error"]["message"]


BAD_DECISIONS = [
    ({"changes": [[1, 2], [60000, 1]]}, "changes[1]", "0 to 59999"),
    ({"changes": [[-1, 2]]}, "changes[0]", "0 to 59999"),
    ({"changes": [[1, 10]]}, "changes[0]", "label 10 is not a class"),
    ({"changes": [[4, 1]], "drop": [7, 4]}, "drop[1]", "also in changes[0]"),
    ({"changes": [[4, 1], [4, 2]]}, "changes[1]", "decide once per sample"),
    ({"changes": []}, "changes", "say what to change"),
    ({}, "changes", "say what to change"),
    ({"changes": [[1, 2]], "action": "drop"}, "action", "leave them out"),
    ({"drop": [1], "min_score": 0.5}, "min_score", "leave them out"),
    ({"drop": list(range(59950))}, "drop", "at least 100"),
    ({"changes": [[1, True]]}, "changes.0.1", None),
    ({"changes": [[1, 2, 3]]}, "changes.0", None),
    ({"drop": [1], "retrain": {"epochs": 0}}, "retrain.epochs", "greater than or equal to 1"),
    ({"drop": [1], "retrain": {"dataset": "mnist"}}, "retrain.dataset", "leave dataset out"),
    ({"drop": [1], "name": "a\nb"}, "name", "control character"),
    ({"from_job": "job_" + "0" * 24}, "from_job", "no job"),
    ({"from_job": "nonsense"}, "from_job", "no job"),
]


@pytest.mark.parametrize("body, field, words", BAD_DECISIONS)
def test_a_bad_entry_is_a_422_naming_it_and_stores_nothing(client: TestClient, alice, settings: Settings,
                                                           body: dict, field: str, words: str | None):
    headers, _ = alice
    before = count_versions(settings)
    response = client.post("/v1/datasets/fashion-mnist/versions", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert words is None or words in error["message"], error["message"]
    assert count_versions(settings) == before


def count_versions(settings: Settings) -> tuple[int, int]:
    with Session(get_engine(settings.database_url)) as session:
        rows = session.exec(select(func.count()).select_from(DatasetRow).where(col(DatasetRow.root).is_not(None))).one()
    return rows, len(get_store(settings).list_prefix("datasets/"))


def test_the_job_must_be_the_users_succeeded_and_trained_on_the_parent(
        client: TestClient, alice, make_user, settings: Settings, admin_headers):
    headers, user_id = alice
    running, _, _ = trained(settings, user_id, status="running")
    on_mnist, _, _ = trained(settings, user_id, spec={**JOB_SPEC, "dataset": "mnist"})
    body = client.post("/v1/api-keys", json={"name": "bob"}, headers=admin_headers).json()
    bobs, _, _ = trained(settings, body["user_id"])
    for job_id, words in ((running, "is running"), (on_mnist, "trained on mnist"), (bobs, "no job")):
        response = client.post("/v1/datasets/fashion-mnist/versions", json={"from_job": job_id}, headers=headers)
        assert response.status_code == 422 and response.json()["error"]["field"] == "from_job", response.text
        assert words in response.json()["error"]["message"]
    made = version(client, headers, "fashion-mnist", drop=[0])
    for who in (make_user("mallory"), {"Authorization": f"Bearer {body['key']}"}):
        for method, path in (("POST", "versions"), ("GET", "changes"), ("GET", "lineage")):
            response = client.request(method, f"/v1/datasets/{made['id']}/{path}", json={"drop": [1]}, headers=who)
            assert response.status_code == 404, (path, response.text)


def test_versions_of_versions_map_to_the_root_and_lineage_lists_the_jobs_of_each(
        client: TestClient, alice, settings: Settings):
    headers, user_id = alice
    first = version(client, headers, "fashion-mnist", drop=list(range(0, 60000, 2)))  # the odd samples
    second = version(client, headers, first["id"], changes=[[0, 4]], drop=[1])  # relabel sample 1, drop sample 3
    arrays = stored(settings, second["id"])
    assert arrays.root == "fashion-mnist" and arrays.indices[:3].tolist() == [1, 5, 7]
    assert arrays.labels[:3].tolist() == [4, ROOT_LABEL, ROOT_LABEL]
    assert (second["parent_id"], second["root"], second["train_samples"]) == (first["id"], "fashion-mnist", 29999)

    job_id, _, _ = trained(settings, user_id, spec={**JOB_SPEC, "dataset": second["id"], "train_size": None},
                           samples=29999)
    third = version(client, headers, second["id"], from_job=job_id, drop=[150])
    assert stored(settings, third["id"]).indices.tolist() == arrays.indices[
        [i for i in [*range(10), *range(100, 200)] if i != 150]].tolist()

    lineage = client.get(f"/v1/datasets/{third['id']}/lineage", headers=headers).json()
    assert lineage["dataset_id"] == third["id"]
    assert [(n["id"], n["kind"], n["parent_id"]) for n in lineage["chain"]] == [
        ("fashion-mnist", "builtin", None), (first["id"], "version", "fashion-mnist"),
        (second["id"], "version", first["id"]), (third["id"], "version", second["id"])]
    assert [[j["id"] for j in n["jobs"]] for n in lineage["chain"]][2:] == [[job_id], []]
    assert lineage["chain"][3]["source_job"] == job_id and lineage["chain"][3]["dropped"] == 1
    builtin = client.get("/v1/datasets/fashion-mnist/lineage", headers=headers).json()
    assert [(n["id"], n["train_samples"]) for n in builtin["chain"]] == [("fashion-mnist", FMNIST)]


def test_an_uploaded_parent_carries_its_shape_and_cannot_be_deleted_while_versions_exist(
        client: TestClient, alice, settings: Settings):
    headers, _ = alice
    buffer = io.BytesIO()
    x = RNG.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    np.savez(buffer, x_train=x, y_train=np.arange(40) % 4, y_train_clean=np.arange(40) % 4, x_test=x[:8],
             y_test=np.arange(8) % 4, classes=np.array(list("abcd")))
    upload = client.post("/v1/datasets", data={"name": "mine"}, files={"file": ("d.npz", buffer.getvalue())},
                         headers=headers).json()
    made = version(client, headers, upload["id"], changes=[[0, 3]])
    assert {k: made[k] for k in ("root", "channels", "size", "num_classes", "classes", "has_clean_labels")} == {
        "root": upload["id"], "channels": 3, "size": 8, "num_classes": 4, "classes": list("abcd"),
        "has_clean_labels": True}
    job = client.post("/v1/jobs", json={"dataset": made["id"], "loss": "ce", "epochs": 1}, headers=headers)
    assert job.status_code == 201 and job.json()["spec"]["num_classes"] == 4 and job.json()["spec"]["train_size"] == 40

    refused = client.delete(f"/v1/datasets/{upload['id']}", headers=headers)
    assert refused.status_code == 409 and made["id"] in refused.json()["error"]["message"]
    busy = client.delete(f"/v1/datasets/{made['id']}", headers=headers)
    assert busy.status_code == 409 and job.json()["id"] in busy.json()["error"]["message"]
    client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=headers)
    assert client.delete(f"/v1/datasets/{made['id']}", headers=headers).status_code == 204
    assert get_store(settings).list_prefix(f"datasets/{made['id']}/") == []
    assert client.delete(f"/v1/datasets/{upload['id']}", headers=headers).status_code == 204


def test_a_job_on_a_version_of_a_builtin_resolves_as_the_builtin_with_its_own_samples(client: TestClient, alice):
    headers, _ = alice
    made = version(client, headers, "fashion-mnist", drop=list(range(100)))
    spec = {"dataset": made["id"], "loss": "nce+rce", "noise": {"type": "asymmetric", "rate": 0.2}, "epochs": 1}
    on_version = client.post("/v1/jobs", json=spec, headers=headers)
    on_builtin = client.post("/v1/jobs", json={**spec, "dataset": "fashion-mnist"}, headers=headers)
    assert on_version.status_code == on_builtin.status_code == 201, on_version.text
    assert {**on_version.json()["spec"], "dataset": None, "train_size": None} == {
        **on_builtin.json()["spec"], "dataset": None, "train_size": None}
    assert on_version.json()["spec"]["train_size"] == FMNIST - 100
    for job in (on_version, on_builtin):
        client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=headers)


def test_retrain_submits_the_source_jobs_spec_on_the_version(client: TestClient, alice, settings: Settings):
    headers, user_id = alice
    job_id, noisy, _ = trained(settings, user_id, spec={**JOB_SPEC, "validation_split": 0.1, "alpha": 2.0})
    made = version(client, headers, "fashion-mnist", from_job=job_id, drop=[150], retrain=True)
    job = made["job"]
    assert job["status"] == "queued" and job["spec"]["dataset"] == made["id"]
    with Session(get_engine(settings.database_url)) as session:
        source = session.get(Job, job_id).spec
    different = {k for k in source if source[k] != job["spec"][k]}
    assert different == {"dataset", "noise", "train_size"}
    assert job["spec"]["noise"] == {"type": "none", "rate": 0.0, "matrix": []} and job["spec"]["train_size"] == 109
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)

    overridden = version(client, headers, "fashion-mnist", from_job=job_id, retrain={"epochs": 7, "loss": "ce"})
    assert (overridden["job"]["spec"]["epochs"], overridden["job"]["spec"]["loss"]) == (7, "ce")
    client.post(f"/v1/jobs/{overridden['job']['id']}/cancel", headers=headers)


def test_a_retrain_refused_by_the_job_limit_leaves_no_version(settings: Settings, alice, make_user):
    headers, user_id = alice
    job_id, _, _ = trained(settings, user_id)
    limited = settings.model_copy(update={"max_active_jobs_per_user": 1})
    with TestClient(create_app(limited)) as client:
        busy = client.post("/v1/jobs", json=JOB_SPEC, headers=headers).json()
        before = count_versions(settings)
        refused = client.post("/v1/datasets/fashion-mnist/versions", json={"from_job": job_id, "retrain": True},
                              headers=headers)
        assert refused.status_code == 429, refused.text
        assert count_versions(settings) == before
        client.post(f"/v1/jobs/{busy['id']}/cancel", headers=headers)
        assert client.post("/v1/datasets/fashion-mnist/versions", json={"from_job": job_id, "retrain": True},
                           headers=headers).status_code == 201


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_the_retrain_spec_resolves_to_the_source_spec_but_for_data_noise_and_size(loss: str):
    source = resolve_spec(JobSpec.parse({**JOB_SPEC, "loss": loss, "time_limit_s": 60})).to_json()
    job = Job(user_id=1, spec=source)
    again = resolve_spec(JobSpec.parse({**retrain_spec("fashion-mnist", True, job), "train_size": 1000})).to_json()
    assert {k for k in source if source[k] != again[k]} == {"noise"}


def test_the_quota_counts_a_version_by_its_indices_and_labels(settings: Settings, alice):
    headers, _ = alice
    tight = settings.model_copy(update={"storage_quota_bytes": 16 * (FMNIST - 500)})
    with TestClient(create_app(tight)) as client:
        refused = client.post("/v1/datasets/fashion-mnist/versions", json={"drop": [0, 1]}, headers=headers)
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "storage_quota_exceeded"
        assert version(client, headers, "fashion-mnist", drop=list(range(1000)))["train_samples"] == FMNIST - 1000


def test_changes_of_an_upload_are_empty(client: TestClient, alice, make_user: Callable):
    headers, _ = alice
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.arange(20) % 2,
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
    upload = client.post("/v1/datasets", data={"name": "u"}, files={"file": ("d.npz", buffer.getvalue())},
                         headers=headers).json()
    assert client.get(f"/v1/datasets/{upload['id']}/changes", headers=headers).json() == {
        "parent_id": None, "source_job": None, "by": None, "action": None, "min_score": None, "relabel": [], "drop": []}
    assert upload["parent_id"] is None and upload["changes"] is None
