"""An uploaded data set, as the API stores it, loads into the engine's LoadedData."""

from pathlib import Path

import numpy as np
import pytest
import torch

from shared.uploads import checked_arrays
from shared.errors import DatasetUnavailable
from worker.datasets import load_dataset, uploaded_path


def store_upload(data_dir: Path, dataset_id: str, arrays: dict[str, np.ndarray]) -> None:
    path = uploaded_path(dataset_id, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **checked_arrays(arrays))


def test_an_uploaded_npz_loads_with_its_classes_clean_labels_and_own_statistics(tmp_path: Path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (30, 12, 12, 3), dtype=np.uint8)  # NHWC: stored as NCHW
    y_clean = np.arange(30) % 3
    y_noisy = y_clean.copy()
    y_noisy[:4] = (y_noisy[:4] + 1) % 3
    store_upload(tmp_path, "ds_0abc", {
        "x_train": x_train, "y_train": y_noisy, "y_train_clean": y_clean,
        "x_test": x_train[:6], "y_test": y_clean[:6], "classes": np.array(["cat", "dog", "owl"]),
    })

    ds = load_dataset("ds_0abc", tmp_path)

    assert ds.name == "ds_0abc" and ds.num_classes == 3 and ds.classes == ["cat", "dog", "owl"]
    assert ds.x_train.dtype == torch.uint8 and tuple(ds.x_train.shape) == (30, 3, 12, 12)
    assert torch.equal(ds.x_train, torch.from_numpy(x_train.transpose(0, 3, 1, 2).copy()))
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == y_noisy.tolist()
    assert ds.y_train_clean is not None and ds.y_train_clean.tolist() == y_clean.tolist()
    assert tuple(ds.x_test.shape) == (6, 3, 12, 12) and ds.y_test.tolist() == y_clean[:6].tolist()
    pixels = x_train.astype(np.float64) / 255
    assert ds.mean == pytest.approx(pixels.mean(axis=(0, 1, 2)).tolist(), abs=1e-12)
    assert ds.std == pytest.approx(pixels.std(axis=(0, 1, 2)).tolist(), abs=1e-12)


def test_without_clean_labels_the_field_is_none_and_a_constant_channel_keeps_a_positive_std(tmp_path: Path):
    x = np.zeros((20, 8, 8), dtype=np.uint8)
    store_upload(tmp_path, "ds_1", {"x_train": x, "y_train": np.arange(20) % 2, "x_test": x[:2], "y_test": np.array([0, 1])})
    ds = load_dataset("ds_1", tmp_path)
    assert ds.y_train_clean is None and ds.classes == ["0", "1"] and tuple(ds.x_train.shape) == (20, 1, 8, 8)
    assert ds.mean == (0.0,) and ds.std[0] > 0


def test_a_missing_upload_says_where_it_was_looked_for(tmp_path: Path):
    with pytest.raises(DatasetUnavailable, match=r"ds_2 is not in .*uploads/ds_2\.npz.*fetch_dataset"):
        load_dataset("ds_2", tmp_path)
