"""A data-set version (shared/versions.py) loads as its root's samples at its indices with its own
labels, and the root's clean labels, so a job on it reports the noise that is left."""

from pathlib import Path

import numpy as np
import torch

from shared.spec import JobSpec, resolve_spec
from shared.uploads import checked_arrays
from shared.versions import ROOT_LABEL, VersionArrays
from worker.datasets import load_dataset, uploaded_path
from worker.runner import make_labels


def put(data_dir: Path, dataset_id: str, data: bytes) -> None:
    path = uploaded_path(dataset_id, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_version_of_an_upload_selects_its_samples_with_its_labels_and_the_roots_clean_ones(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 3, 10, 10), dtype=np.uint8)
    clean = np.arange(30) % 3
    given = (clean + (np.arange(30) % 5 == 0)) % 3
    arrays = checked_arrays({"x_train": x, "y_train": given, "y_train_clean": clean, "x_test": x[:6],
                             "y_test": clean[:6], "classes": np.array(["a", "b", "c"])})
    path = uploaded_path("ds_00aa", tmp_path)
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    indices = np.array([25, 0, 5, 7])
    put(tmp_path, "ds_00bb", VersionArrays("ds_00aa", indices, np.array([ROOT_LABEL, 2, ROOT_LABEL, 1])).npz())

    root, version = load_dataset("ds_00aa", tmp_path), load_dataset("ds_00bb", tmp_path)

    assert torch.equal(version.x_train, root.x_train[torch.from_numpy(indices)])
    assert version.y_train.tolist() == [given[25], 2, given[5], 1]
    assert version.y_train_clean is not None and version.y_train_clean.tolist() == clean[indices].tolist()
    assert (version.name, version.mean, version.std, version.classes) == ("ds_00aa", root.mean, root.std, root.classes)
    assert torch.equal(version.x_test, root.x_test)
    spec = resolve_spec(JobSpec.parse({"dataset": "mnist", "epochs": 1}))
    labels = make_labels(spec.model_copy(update={"train_size": 4}), version)
    assert labels.corrupted.tolist() == (version.y_train != version.y_train_clean).tolist()


def test_a_version_of_fashion_mnist_carries_its_true_labels_as_clean(tmp_path: Path):
    indices = np.array([59999, 3, 17])
    put(tmp_path, "ds_00cc", VersionArrays("fashion-mnist", indices, np.array([0, ROOT_LABEL, 9])).npz())
    root = load_dataset("fashion-mnist", tmp_path)  # from the system copy (apt dataset-fashion-mnist)
    version = load_dataset("ds_00cc", tmp_path)
    true = root.y_train[torch.from_numpy(indices)]
    assert version.y_train_clean is not None and version.y_train_clean.tolist() == true.tolist()
    assert version.y_train.tolist() == [0, int(true[1]), 9]
    assert version.name == "fashion-mnist" and version.num_classes == 10 and len(version.x_test) == 10000

