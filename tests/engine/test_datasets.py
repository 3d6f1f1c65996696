import collections
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from shared.errors import DatasetUnavailable
from shared.idx import read_idx
from worker.data_files import LAYOUTS, holds
from worker.datasets import DATASETS, SYSTEM_DATA_DIRS, load_dataset

FASHION_DIR = SYSTEM_DATA_DIRS[0]


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_registry_names_are_the_design_ones():
    assert set(DATASETS) == set(LAYOUTS) == {"mnist", "fashion-mnist", "cifar10", "cifar100"}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"the Debian package dataset-fashion-mnist is not installed in {FASHION_DIR}: run scripts/setup.sh")
    data_dir = tmp_path_factory.mktemp("data")
    assert holds("fashion-mnist", data_dir, download=False)  # what a worker reports (worker.data_files)
    return data_dir, load_dataset("fashion-mnist", data_dir=data_dir)


def test_fashion_mnist_loads_from_the_system_copy(fashion):
    _, ds = fashion
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 6000))
    assert int(ds.y_test.min()) == 0 and int(ds.y_test.max()) == 9
    assert ds.coarse_train is None and ds.coarse_test is None


def test_fashion_mnist_mean_and_std_describe_the_data(fashion):
    _, ds = fashion
    pixels = ds.x_train[::3].double() / 255
    assert pixels.mean().item() == pytest.approx(ds.mean[0], abs=1e-3)
    assert pixels.std().item() == pytest.approx(ds.std[0], abs=1e-3)


def test_second_load_comes_from_the_npz_cache(fashion):
    data_dir, first = fashion
    assert list((data_dir / "noisyfit-cache").glob("fashion-mnist-*.npz"))
    assert holds("fashion-mnist", data_dir, download=False, system_dirs=[])
    again = load_dataset("fashion-mnist", data_dir=data_dir, system_dirs=[])  # no source left but the cache
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.y_test, first.y_test)
    assert again.classes == first.classes


def test_fashion_mnist_also_reads_a_system_folder_given_by_the_caller(tmp_path):
    folder = tmp_path / "system"
    for split, n in (("train", 6), ("t10k", 4)):
        write_idx(folder / f"{split}-images-idx3-ubyte", images(n, (28, 28), seed=n))
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    assert holds("fashion-mnist", tmp_path / "data", download=False, system_dirs=[folder])
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "data", system_dirs=[folder])
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.y_test.tolist() == [0, 1, 2, 3]
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(images(6, (28, 28), seed=6)))


def test_mnist_reads_the_torchvision_raw_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    train, test = images(12, (28, 28), seed=1), images(5, (28, 28), seed=2)
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(12) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    assert not holds("mnist", tmp_path, download=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([9, 8, 7, 6, 5]))
    assert holds("mnist", tmp_path, download=False)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_train.dtype == torch.uint8
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(test))
    assert ds.y_test.tolist() == [9, 8, 7, 6, 5] and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.mean == (0.1307,) and ds.std == (0.3081,)


def cifar_batch(n: int, seed: int, **labels: list[int]) -> dict:
    return {"batch_label": "test", "data": images(n, (3072,), seed), "filenames": [f"{i}.png" for i in range(n)], **labels}


def test_cifar10_reads_the_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(2, seed=i, labels=[i, i + 1]))
    write_pickle(folder / "test_batch", cifar_batch(3, seed=9, labels=[0, 1, 2]))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert not holds("cifar10", tmp_path, download=False)
    write_pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 2, "num_vis": 3072})
    assert holds("cifar10", tmp_path, download=False)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.y_train.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    # The 3072 bytes are the red plane, then green, then blue, each row-major.
    first = images(2, (3072,), seed=1)[0]
    assert torch.equal(ds.x_train[0, 1, 0], torch.from_numpy(first[1024:1056]))
    assert ds.classes == names and ds.num_classes == 10 and len(ds.mean) == 3


def test_cifar100_returns_the_super_class_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train", cifar_batch(4, seed=1, fine_labels=[0, 99, 5, 7], coarse_labels=[4, 19, 17, 7]))
    write_pickle(folder / "test", cifar_batch(2, seed=2, fine_labels=[1, 2], coarse_labels=[1, 14]))
    write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                                   "coarse_label_names": [f"c{i}" for i in range(20)]})
    assert holds("cifar100", tmp_path, download=False)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.num_classes == 100 and ds.y_train.tolist() == [0, 99, 5, 7]
    assert ds.coarse_train.tolist() == [4, 19, 17, 7] and ds.coarse_test.tolist() == [1, 14]
    assert ds.coarse_train.dtype == torch.int64 and ds.x_test.shape == (2, 3, 32, 32)


def test_cifar_batches_refuse_anything_but_arrays_and_lists(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "train", collections.OrderedDict(data=[]))
    for name in ("test", "meta"):
        write_pickle(folder / name, {})
    with pytest.raises(DatasetUnavailable, match="collections.OrderedDict"):
        load_dataset("cifar100", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("mnist", "MNIST/raw/"),
        ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
    ],
)
def test_missing_files_say_where_to_put_them(tmp_path, name, where):
    assert not holds(name, tmp_path, download=False, system_dirs=[])
    assert holds(name, tmp_path, download=True, system_dirs=[])  # a worker allowed to download reports it
    with pytest.raises(DatasetUnavailable, match="NOISYFIT_ALLOW_DOWNLOAD=true") as info:
        load_dataset(name, data_dir=tmp_path, download=False, system_dirs=[])
    assert where in str(info.value) and str(tmp_path) in str(info.value)


@pytest.mark.parametrize(("name", "kind"), [("mnist", torchvision.datasets.MNIST), ("cifar10", torchvision.datasets.CIFAR10)])
def test_failed_download_is_a_dataset_error(tmp_path, monkeypatch, name, kind):
    def offline(self):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(kind, "download", offline)
    with pytest.raises(DatasetUnavailable, match="download failed .network unreachable"):
        load_dataset(name, data_dir=tmp_path, download=True)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetUnavailable, match="fashion-mnist"):
        load_dataset("svhn", data_dir=tmp_path)


def test_read_idx_refuses_other_files(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"PK\x03\x04 zip")
    with pytest.raises(DatasetUnavailable, match="not an IDX file"):
        read_idx(path)
