"""run_job into a LocalSink and the checkpoints it writes, on real Fashion-MNIST."""

import csv
import dataclasses
import io
import json

import matplotlib.image
import numpy as np
import pytest
import torch

from shared.plots import DPI, heatmap_size
from shared.spec import JobSpec, ResolvedSpec, resolve_spec
from worker.checkpoints import load_model
from worker.datasets import SYSTEM_DATA_DIRS, load_dataset
from worker.label_quality import summary
from worker.runner import balanced_order, fold_assignment, make_labels, prepare_data, run_job
from worker.sinks import LocalSink
from worker.trainer import Callback, log_probabilities, predict, train

ARTIFACTS = {
    "checkpoint.pt",
    "label_heatmap.png",
    "label_probabilities.npz",
    "label_report.json",
    "metrics.jsonl",
    "noisy_labels.npz",
    "plot.png",
    "result.json",
    "resume.pt",
    "suspected_mislabels.csv",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    if not (SYSTEM_DATA_DIRS[0] / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("the Debian package dataset-fashion-mnist is not installed: run scripts/setup.sh")
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def fashion(data_dir):
    """Fashion-MNIST with 2000 test images, to keep each epoch's evaluation short."""
    ds = load_dataset("fashion-mnist", data_dir)
    return dataclasses.replace(ds, x_test=ds.x_test[:2000], y_test=ds.y_test[:2000])


def spec_for(**fields) -> ResolvedSpec:
    base = {"dataset": "fashion-mnist", "noise": {"type": "symmetric", "rate": 0.4}, "epochs": 2, "train_size": 600}
    return resolve_spec(JobSpec(**{**base, **fields}))


@pytest.fixture(scope="module")
def finished(fashion, tmp_path_factory):
    spec = spec_for(loss="nce+rce", validation_split=0.2)
    sink = LocalSink(tmp_path_factory.mktemp("job"))
    result = run_job(spec, sink, data_dir=None, device="cpu", dataset=fashion)
    return spec, sink, result


# Artifacts


def test_run_job_writes_every_artifact(finished):
    _, sink, _ = finished
    assert set(sink.list()) == ARTIFACTS


def test_result_json_has_the_design_fields(finished):
    spec, sink, returned = finished
    result = json.loads(sink.get("result.json"))
    assert result == json.loads(json.dumps(returned))
    assert result["status"] == "succeeded" and result["spec"] == spec.to_json()
    assert result["epochs_completed"] == 2 and [m["epoch"] for m in result["history"]] == [1, 2]
    assert 0 <= result["final_test_accuracy"] <= 1 and 0 <= result["best_test_accuracy"] <= 1
    assert result["final_test_accuracy"] == result["history"][-1]["test_acc"]
    assert result["best_test_accuracy"] == max(m["test_acc"] for m in result["history"])
    labels = np.load(io.BytesIO(sink.get("noisy_labels.npz")))
    assert result["noise_rate_realised"] == labels["corrupted"][labels["train_indices"]].mean()
    assert result["noise_rate_realised"] == pytest.approx(0.4, abs=0.1)
    assert len(result["noise_rate_realised_per_class"]) == 10
    assert result["samples"] == {"train": 480, "val": 120, "test": 2000}
    assert set(result["versions"]) == {"python", "torch", "numpy", "noisyfit"}
    assert result["device"]["type"] == "cpu"
    assert {"data_seconds", "train_seconds", "total_seconds"} <= set(result["timings"])
    assert all("val_acc" in m for m in result["history"])
    history = {m["epoch"]: m for m in result["history"]}
    assert result["final_val_accuracy"] == history[2]["val_acc"]
    best = result["best_val_epoch"]
    assert history[best]["val_acc"] == max(m["val_acc"] for m in history.values())
    assert result["test_accuracy_at_best_val"] == history[best]["test_acc"]


def test_metrics_jsonl_has_one_epoch_event_per_epoch(finished):
    _, sink, result = finished
    events = [json.loads(line) for line in sink.get("metrics.jsonl").decode().splitlines()]
    assert [e["type"] for e in events] == ["epoch", "epoch"]
    assert [{k: v for k, v in e.items() if k != "type"} for e in events] == result["history"]


def test_noisy_labels_npz_records_the_labels_trained_on(finished, fashion):
    spec, sink, _ = finished
    with np.load(io.BytesIO(sink.get("noisy_labels.npz")), allow_pickle=False) as npz:
        labels = {k: npz[k] for k in npz.files}
    np.testing.assert_array_equal(labels["clean"], fashion.y_train.numpy())
    np.testing.assert_array_equal(labels["corrupted"], labels["noisy"] != labels["clean"])
    train, val = labels["train_indices"], labels["val_indices"]
    assert len(train) == 480 and len(val) == 120 and not set(train) & set(val)
    assert labels["corrupted"].mean() == pytest.approx(0.4, abs=1e-3)  # drawn on the full training set


def test_suspected_mislabels_rank_training_samples_by_loss(finished):
    _, sink, result = finished
    rows = list(csv.DictReader(io.StringIO(sink.get("suspected_mislabels.csv").decode())))
    assert list(rows[0]) == ["index", "noisy_label", "predicted", "confidence", "loss", "rank", "self_confidence",
                             "margin", "flagged"]
    assert len(rows) == 480 and [int(r["rank"]) for r in rows] == list(range(1, 481))
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    with np.load(io.BytesIO(sink.get("noisy_labels.npz")), allow_pickle=False) as npz:
        noisy, corrupted, train = npz["noisy"], npz["corrupted"], npz["train_indices"]
    assert sorted(int(r["index"]) for r in rows) == sorted(train.tolist())
    assert all(int(r["noisy_label"]) == noisy[int(r["index"])] for r in rows)
    k = int(corrupted[train].sum())
    hits = sum(corrupted[int(r["index"])] for r in rows[:k])
    detection = result["mislabel_detection"]
    assert detection["k"] == k and detection["precision_at_k"] == detection["recall_at_k"] == hits / k


def test_checkpoint_loads_weights_only_and_reproduces_the_final_test_accuracy(finished, fashion):
    spec, sink, result = finished
    raw = torch.load(io.BytesIO(sink.get("checkpoint.pt")), weights_only=True)
    assert raw["spec"] == spec.to_json() and raw["model_name"] == "cnn4" and raw["num_classes"] == 10
    model, meta = load_model(sink.get("checkpoint.pt"))
    assert not model.training
    _, predicted, _ = predict(model, fashion.x_test, fashion.y_test, meta["mean"], meta["std"])
    accuracy = (predicted == fashion.y_test).float().mean().item()
    assert accuracy == result["final_test_accuracy"]
    assert torch.load(io.BytesIO(sink.get("resume.pt")), weights_only=True)["epoch"] == 2


# The label-quality report


def csv_rows(sink) -> list[dict]:
    return list(csv.DictReader(io.StringIO(sink.get("suspected_mislabels.csv").decode())))


def npz(sink, name: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(sink.get(name)), allow_pickle=False) as arrays:
        return {k: arrays[k] for k in arrays.files}


def test_label_report_is_computed_from_the_final_models_probabilities_against_the_known_noise(finished, fashion):
    _, sink, result = finished
    report = json.loads(sink.get("label_report.json"))
    assert report["probabilities"] == "in_sample" and report["cross_fit_folds"] == 0
    assert report["num_samples"] == 480 and report["classes"] == fashion.classes
    assert len(report["transition_matrix"]) == 10 and all(sum(row) == pytest.approx(1) for row in report["transition_matrix"])
    rate = report["noise_rate"]
    assert 0 <= rate["low"] <= rate["estimate"] <= rate["high"] <= 1
    assert len(report["per_class_noise_rate"]) == 10 and len(report["confused_pairs"]) == 5
    clean = report["against_clean"]
    assert clean["noise_rate"] == pytest.approx(result["noise_rate_realised"])
    assert clean["per_class_noise_rate"] == pytest.approx(result["noise_rate_realised_per_class"])
    assert {"precision", "recall", "f1", "average_precision", "noise_rate_error"} <= set(clean)
    assert result["label_quality"] == json.loads(json.dumps(summary(report)))

    probabilities = npz(sink, "label_probabilities.npz")
    labels = npz(sink, "noisy_labels.npz")
    np.testing.assert_array_equal(probabilities["train_indices"], labels["train_indices"])
    p = probabilities["in_sample"]
    assert p.dtype == np.float32 and p.shape == (480, 10)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    rows = {int(r["index"]): r for r in csv_rows(sink)}
    given = labels["noisy"][labels["train_indices"]]
    for position, index in enumerate(labels["train_indices"]):
        row, p_given = rows[int(index)], p[position, given[position]]
        assert float(row["self_confidence"]) == pytest.approx(p_given, abs=1e-6)
        assert float(row["margin"]) == pytest.approx(p_given - np.delete(p[position], given[position]).max(), abs=1e-6)
        assert float(row["loss"]) == pytest.approx(-np.log(p_given), rel=1e-4, abs=1e-5)
    assert sum(int(r["flagged"]) for r in rows.values()) == report["flagged"]["count"]


def test_label_heatmap_shows_the_estimate_beside_the_truth(finished):
    _, sink, _ = finished
    image = matplotlib.image.imread(io.BytesIO(sink.get("label_heatmap.png")), format="png")
    width, height = heatmap_size(with_truth=True)
    assert image.shape[:2] == (height * DPI, width * DPI)


class FoldLog(Callback):
    """Records fold events; after `stop_after` of them, stops training at the next step."""

    def __init__(self, stop_after: int | None = None):
        self.events: list[tuple[int, int, int]] = []
        self.stop_after = stop_after

    def on_fold_epoch_end(self, fold, folds, state, metrics):
        self.events.append((fold, folds, metrics["epoch"]))

    def should_stop(self):
        return self.stop_after is not None and len(self.events) >= self.stop_after


def cross_fit_spec() -> ResolvedSpec:
    return spec_for(loss="ce", epochs=2, train_size=330, validation_split=0.1, cross_fit_folds=3)


@pytest.fixture(scope="module")
def cross_fitted(fashion, tmp_path_factory):
    log = FoldLog()
    sink = LocalSink(tmp_path_factory.mktemp("cross_fit"))
    result = run_job(cross_fit_spec(), sink, None, callbacks=[log], device="cpu", dataset=fashion)
    return sink, result, log


def test_cross_fitting_splits_the_training_samples_into_disjoint_balanced_folds(cross_fitted):
    sink, result, log = cross_fitted
    probabilities, labels = npz(sink, "label_probabilities.npz"), npz(sink, "noisy_labels.npz")
    fold, given = probabilities["fold"], probabilities["given"]
    assert len(fold) == result["samples"]["train"] == 297 and set(fold.tolist()) == {0, 1, 2}
    assert np.bincount(fold).tolist() == [99, 99, 99], "every training sample in exactly one fold"
    for f in range(3):
        per_class = np.bincount(given[fold == f], minlength=10)
        assert np.abs(per_class - np.bincount(given, minlength=10) / 3).max() <= 1
    assert not set(labels["val_indices"]) & set(probabilities["train_indices"]), "validation samples take no part"
    np.testing.assert_array_equal(fold, fold_assignment(given, 3, seed=0))
    assert log.events == [(f, 3, e) for f in (1, 2, 3) for e in (1, 2)], "fold events, not epoch events"
    assert [m["epoch"] for m in result["history"]] == [1, 2]
    report = json.loads(sink.get("label_report.json"))
    assert report["probabilities"] == "cross_fitted" and report["cross_fit_folds"] == 3
    assert result["label_quality"]["probabilities"] == "cross_fitted"


def test_each_samples_cross_fitted_probabilities_come_from_a_model_trained_without_its_fold(cross_fitted, fashion):
    """Fold 2's model trained again here, on the samples of folds 1 and 3 alone, gives the stored
    probabilities of fold 2's samples; it differs from the main model there."""
    sink, _, _ = cross_fitted
    spec = cross_fit_spec()
    stored = npz(sink, "label_probabilities.npz")
    assert np.isfinite(stored["cross_fitted"]).all()
    data = prepare_data(fashion, make_labels(spec, fashion))
    held = torch.from_numpy(stored["fold"] == 1)
    others = dataclasses.replace(data, x_train=data.x_train[~held], y_train=data.y_train[~held], y_train_clean=None,
                                 x_val=None, y_val=None)
    model = train(spec, others, device="cpu", evaluate=False).model
    again = log_probabilities(model, data.x_train[held], data.mean, data.std).exp().numpy()
    np.testing.assert_allclose(stored["cross_fitted"][stored["fold"] == 1], again, atol=1e-5)
    assert np.abs(stored["in_sample"][stored["fold"] == 1] - again).max() > 0.05


def test_a_job_stopped_while_cross_fitting_resumes_at_the_next_fold(cross_fitted, fashion, tmp_path):
    whole, _, _ = cross_fitted
    sink = LocalSink(tmp_path)
    first = FoldLog(stop_after=4)  # both epochs of folds 1 and 2
    assert run_job(cross_fit_spec(), sink, None, callbacks=[first], device="cpu", dataset=fashion)["status"] == "stopped"
    assert "cross_fit.npz" in sink.list() and "label_report.json" not in sink.list()
    assert npz(sink, "cross_fit.npz")["done"].tolist() == [True, True, False]
    second = FoldLog()
    result = run_job(cross_fit_spec(), sink, None, callbacks=[second], device="cpu", dataset=fashion)
    assert result["status"] == "succeeded" and {fold for fold, _, _ in second.events} == {3}
    np.testing.assert_allclose(npz(sink, "label_probabilities.npz")["cross_fitted"],
                               npz(whole, "label_probabilities.npz")["cross_fitted"], atol=1e-6)


# Resume through the sink


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int):
        self.epoch, self.done = epoch, 0

    def on_epoch_end(self, state, metrics):
        self.done = state.epoch

    def should_stop(self):
        return self.done >= self.epoch


def test_a_stopped_job_resumes_from_its_sink_to_the_uninterrupted_weights(fashion, tmp_path):
    spec = spec_for(loss="ce", epochs=2, train_size=400)
    whole = LocalSink(tmp_path / "whole")
    run_job(spec, whole, None, device="cpu", dataset=fashion)

    sink = LocalSink(tmp_path / "stopped")
    assert run_job(spec, sink, None, callbacks=[StopAfterEpoch(1)], device="cpu", dataset=fashion) == {
        "status": "stopped",
        "epochs_completed": 1,
    }
    assert "result.json" not in sink.list() and "resume.pt" in sink.list()
    result = run_job(spec, sink, None, device="cpu", dataset=fashion)
    assert result["resumed_from_epoch"] == 1 and result["epochs_completed"] == 2
    a = torch.load(io.BytesIO(whole.get("checkpoint.pt")), weights_only=True)["model"]
    b = torch.load(io.BytesIO(sink.get("checkpoint.pt")), weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sink.get("metrics.jsonl").count(b"\n") == 2


# Labels, subsets, sinks


def test_subsets_are_seeded_balanced_over_the_noisy_labels_and_keep_each_samples_noisy_label(fashion):
    small = make_labels(spec_for(train_size=500, validation_split=0.2), fashion)
    again = make_labels(spec_for(train_size=500, validation_split=0.2), fashion)
    large = make_labels(spec_for(train_size=2000), fashion)
    np.testing.assert_array_equal(small.train_indices, again.train_indices)
    np.testing.assert_array_equal(small.noisy, large.noisy)
    # balanced over the labels a user has, the noisy ones
    assert np.abs(np.bincount(small.noisy[small.train_indices], minlength=10) - 40).max() <= 1
    assert np.abs(np.bincount(small.noisy[small.val_indices], minlength=10) - 10).max() <= 1
    assert set(small.train_indices) | set(small.val_indices) <= set(large.train_indices)
    other = make_labels(spec_for(train_size=500, seed=1), fashion)
    assert set(other.train_indices) != set(small.train_indices)


def test_balanced_order_keeps_every_prefix_in_proportion():
    labels = np.repeat(np.arange(3), [600, 300, 100])
    order = balanced_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    for n in (10, 37, 100, 555):
        counts = np.bincount(labels[order[:n]], minlength=3)
        assert np.all(np.abs(counts - n * np.array([0.6, 0.3, 0.1])) <= 1), (n, counts)


def test_local_sink_puts_gets_and_lists(tmp_path):
    sink = LocalSink(tmp_path / "out")
    assert sink.get("missing.json") is None and sink.list() == []
    sink.put("a.json", b"1")
    sink.put("a.json", b"2")
    sink.put("plots/b.png", b"png")
    assert sink.get("a.json") == b"2" and sink.list() == ["a.json", "plots/b.png"]
    with pytest.raises(ValueError):
        sink.put("../escape", b"x")


def test_an_upload_with_known_flips_gets_a_mislabel_ranking_better_than_chance(fashion, tmp_path):
    """A user's own data set whose labels are already noisy, with y_train_clean: no synthetic
    noise on top, the corrupted mask is where the two differ, and the ranking finds them."""
    clean = fashion.y_train.numpy()
    flipped = np.random.default_rng(1).random(len(clean)) < 0.3
    noisy = np.where(flipped, (clean + 1) % 10, clean)
    upload = dataclasses.replace(
        fashion, name="ds_0test", y_train=torch.from_numpy(noisy), y_train_clean=torch.from_numpy(clean)
    )
    spec = spec_for(noise={"type": "none", "rate": 0.0}, loss="nce+rce", epochs=3, train_size=1000)
    sink = LocalSink(tmp_path)
    result = run_job(spec, sink, data_dir=None, device="cpu", dataset=upload)
    with np.load(io.BytesIO(sink.get("noisy_labels.npz")), allow_pickle=False) as npz:
        assert np.array_equal(npz["noisy"], noisy) and np.array_equal(npz["corrupted"], flipped)
        chance = npz["corrupted"][npz["train_indices"]].mean()
    assert result["mislabel_detection"]["precision_at_k"] > chance + 0.2
    clean = json.loads(sink.get("label_report.json"))["against_clean"]
    assert clean["noise_rate"] == pytest.approx(chance) and clean["precision"] > chance + 0.2


def test_an_upload_without_clean_labels_gets_a_report_with_no_comparison(fashion, tmp_path):
    upload = dataclasses.replace(fashion, name="ds_0plain")
    spec = spec_for(noise={"type": "none", "rate": 0.0}, loss="ce", epochs=1, train_size=200)
    result = run_job(spec, LocalSink(tmp_path), data_dir=None, device="cpu", dataset=upload)
    report = json.loads(LocalSink(tmp_path).get("label_report.json"))
    assert report["against_clean"] is None and 0 <= report["noise_rate"]["estimate"] <= 1
    assert result["label_quality"]["noise_rate_true"] is None and result["label_quality"]["precision"] is None
    image = matplotlib.image.imread(io.BytesIO(LocalSink(tmp_path).get("label_heatmap.png")), format="png")
    width, height = heatmap_size(with_truth=False)
    assert image.shape[:2] == (height * DPI, width * DPI), "the estimate alone"
