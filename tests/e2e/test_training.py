"""A Fashion-MNIST job over HTTP, through the queue and a real worker, to its artifacts."""

import io
import json

import numpy as np
import pytest
import torch

from tests.e2e.conftest import TINY_JOB, FinishedJob, metrics
from worker.checkpoints import load_model
from worker.datasets import load_dataset
from worker.trainer import predict

OUTPUTS = {"checkpoint.pt", "result.json", "metrics.jsonl", "noisy_labels.npz", "label_report.json", "label_heatmap.png"}


def download(http, job_id: str, name: str) -> bytes:
    response = http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    response.raise_for_status()
    return response.content


def test_a_submitted_job_trains_to_succeeded(trained_job: FinishedJob):
    job = trained_job.job
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1 and job["error"] is None
    assert job["progress"]["epoch"] == job["progress"]["epochs"] == TINY_JOB["epochs"]
    assert job["progress"]["metrics"]["epoch"] == TINY_JOB["epochs"]
    assert 0.0 <= job["result"]["final_test_accuracy"] <= job["result"]["best_test_accuracy"] <= 1.0
    assert job["result"]["epochs_completed"] == TINY_JOB["epochs"]
    assert "validation_split" not in TINY_JOB, "no split: the validation figures are null, and present"
    assert {k: job["result"][k] for k in ("final_val_accuracy", "best_val_epoch", "test_accuracy_at_best_val")} == \
        {"final_val_accuracy": None, "best_val_epoch": None, "test_accuracy_at_best_val": None}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_events_arrive_live_in_order_and_end_with_done(trained_job: FinishedJob):
    events = trained_job.sse.events
    ids = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert ids == sorted(set(ids)), "event ids are strictly increasing"
    assert events[-1]["type"] == "done" and events[-1]["status"] == "succeeded"
    assert [e["status"] for e in events if e["type"] == "status"] == ["queued", "running", "succeeded"]
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, TINY_JOB["epochs"] + 1))
    for event in epochs:
        for figure in ("train_loss", "train_acc", "memorized", "true_label_acc_on_corrupted", "test_loss",
                       "test_acc", "lr", "epoch_seconds", "samples_per_second"):
            assert event[figure] is not None, figure
    first_epoch = events.index(epochs[0])
    assert trained_job.sse.status_at_arrival[first_epoch] == "running", "epoch 1 arrived while the job trained"
    assert any(e["type"] == "step" for e in events[:first_epoch]), "step events come inside an epoch"


def test_the_event_stream_and_the_metrics_route_tell_the_same_story(http, trained_job: FinishedJob):
    assert metrics(http, trained_job.job["id"])["events"] == trained_job.sse.events


def test_the_metrics_cursor_pages_through_every_event(http, trained_job: FinishedJob):
    job_id, pages, cursor = trained_job.job["id"], [], None
    while True:
        page = metrics(http, job_id, after=cursor, limit=2)
        if not page["events"]:
            assert page["next"] == cursor, "an empty page leaves the cursor where it was"
            break
        assert len(page["events"]) <= 2 and page["next"] == page["events"][-1]["id"]
        pages.append(page["events"])
        cursor = page["next"]
    events = [e for page in pages for e in page]
    assert events == trained_job.sse.events
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == list(range(1, TINY_JOB["epochs"] + 1))


def test_the_artifacts_list_holds_the_job_outputs(http, trained_job: FinishedJob):
    response = http.get(f"/v1/jobs/{trained_job.job['id']}/artifacts")
    response.raise_for_status()
    listed = {a["name"]: a["size"] for a in response.json()["artifacts"]}
    assert OUTPUTS <= set(listed)
    assert all(listed[name] > 0 for name in OUTPUTS)


def test_result_metrics_and_labels_files_describe_the_run(http, trained_job: FinishedJob):
    job = trained_job.job
    result = json.loads(download(http, job["id"], "result.json"))
    assert result["spec"] == job["spec"]
    assert result["epochs_completed"] == len(result["history"]) == TINY_JOB["epochs"]
    assert result["final_test_accuracy"] == job["result"]["final_test_accuracy"]
    assert job["result"]["label_quality"] == result["label_quality"], "the job record carries the report's summary"
    report = json.loads(download(http, job["id"], "label_report.json"))
    assert result["label_quality"]["noise_rate"] == report["noise_rate"]
    assert report["against_clean"]["noise_rate"] == pytest.approx(result["noise_rate_realised"])
    # exact on the full training set; on the subset trained on, as drawn (checked exactly below)
    assert result["noise_rate_realised"] == pytest.approx(TINY_JOB["noise"]["rate"], abs=0.1)

    lines = download(http, job["id"], "metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, TINY_JOB["epochs"] + 1))

    with np.load(io.BytesIO(download(http, job["id"], "noisy_labels.npz")), allow_pickle=False) as labels:
        trained_on = labels["train_indices"]
        assert len(trained_on) == TINY_JOB["train_size"]
        corrupted = labels["noisy"][trained_on] != labels["clean"][trained_on]
        assert (corrupted == labels["corrupted"][trained_on]).all()
        assert corrupted.mean() == pytest.approx(result["noise_rate_realised"])


def test_the_checkpoint_reproduces_the_reported_test_accuracy(http, trained_job: FinishedJob, e2e_env):
    """checkpoint.pt loads with torch.load(weights_only=True) and scores what result.json says."""
    job = trained_job.job
    model, meta = load_model(download(http, job["id"], "checkpoint.pt"))
    assert meta["spec"] == job["spec"]
    test_set = load_dataset("fashion-mnist", e2e_env["NOISYFIT_DATA_DIR"])
    _, predicted, _ = predict(model, test_set.x_test, test_set.y_test, meta["mean"], meta["std"])
    accuracy = (predicted == test_set.y_test).float().mean().item()
    assert accuracy == pytest.approx(job["result"]["final_test_accuracy"], abs=1e-6)
    assert isinstance(torch.load(io.BytesIO(download(http, job["id"], "checkpoint.pt")), weights_only=True), dict)
