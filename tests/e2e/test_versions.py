"""Fix and retrain through the real service: a noisy Fashion-MNIST job, a version that relabels
its suspects and a job on that version submitted in the same request; the second job's realised
noise is measured against the clean labels the version carries, and lineage shows both jobs."""

import io

import numpy as np

from tests.e2e.conftest import FINISHED, Workers, submit, wait_for_status


def labels_of(http, job_id: str) -> dict[str, np.ndarray]:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/noisy_labels.npz")
    response.raise_for_status()
    with np.load(io.BytesIO(response.content), allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def test_a_version_relabels_a_jobs_suspects_and_retrains_on_them(http, workers: Workers):
    workers.ensure_running()
    first = submit(http, noise={"type": "symmetric", "rate": 0.6}, epochs=1, train_size=600)
    first = wait_for_status(http, first["id"], FINISHED)
    assert first["status"] == "succeeded", first["error"]

    response = http.post("/v1/datasets/fashion-mnist/versions",
                         json={"from_job": first["id"], "action": "relabel", "min_score": 0.0, "retrain": True})
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["train_samples"] == 600 and version["relabelled"] > 0 and version["job"]["status"] == "queued"
    second = wait_for_status(http, version["job"]["id"], FINISHED)
    assert second["status"] == "succeeded", second["error"]

    before = labels_of(http, first["id"])
    used = np.sort(np.concatenate([before["train_indices"], before["val_indices"]]))
    fixed = before["noisy"].copy()
    for index, label in http.get(f"/v1/datasets/{version['id']}/changes").json()["relabel"]:
        fixed[index] = label
    expected = float(np.mean(fixed[used] != before["clean"][used]))
    assert second["result"]["noise_rate_realised"] == expected
    assert expected < first["result"]["noise_rate_realised"], "relabelling the disagreements removed noise"
    after = labels_of(http, second["id"])
    assert np.array_equal(after["clean"], before["clean"][used]), "the root's clean labels, in the version's order"
    assert np.array_equal(after["noisy"], fixed[used]) and len(after["train_indices"]) == 600

    lineage = http.get(f"/v1/datasets/{version['id']}/lineage").json()
    assert [node["id"] for node in lineage["chain"]] == ["fashion-mnist", version["id"]]
    assert first["id"] in [job["id"] for job in lineage["chain"][0]["jobs"]]
    assert [job["id"] for job in lineage["chain"][1]["jobs"]] == [second["id"]]
    assert lineage["chain"][1]["jobs"][0]["noise_rate_realised"] == expected
