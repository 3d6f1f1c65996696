"""The benchmark data sets as compact uint8 NCHW tensors, cached in data_dir as .npz.

The trainer moves whole tensors to the device and normalises batches itself with `mean`/`std`
(fractions of 255), so nothing here does per-sample transforms.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision

from shared.errors import DatasetUnavailable
from shared.idx import find_idx, read_idx
from shared.version_arrays import ROOT_LABEL, VersionArrays
from worker.data_files import CIFAR10_FILES, CIFAR100_FILES, IDX_FILES, SYSTEM_DATA_DIRS, cache_path

DOWNLOAD_HINT = "or set NOISYFIT_ALLOW_DOWNLOAD=true to let the worker download it"

Arrays = dict[str, np.ndarray]



@dataclass
class LoadedData:
    """A data set in memory: uint8 images and int64 labels, train and test."""

    name: str
    x_train: torch.Tensor  # uint8 [N, C, H, W]
    y_train: torch.Tensor  # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale (pixel / 255)
    std: tuple[float, ...]
    coarse_train: torch.Tensor | None = None  # CIFAR-100 super-classes, else None
    coarse_test: torch.Tensor | None = None
    y_train_clean: torch.Tensor | None = None  # an uploaded set's true labels, when its y_train is noisy


@dataclass(frozen=True)
class Source:
    """Where a reader may look for its files."""

    data_dir: Path
    download: bool
    system_dirs: tuple[Path, ...]


Reader = Callable[[Source], Arrays]


@dataclass(frozen=True)
class DatasetReader:
    read: Reader
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetReader] = {}


def register_dataset(name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[Reader], Reader]:
    def register(read: Reader) -> Reader:
        DATASETS[name] = DatasetReader(read, mean, std)
        return read

    return register


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    download: bool = False,
    system_dirs: Iterable[str | os.PathLike[str]] | None = None,
) -> LoadedData:
    """Load a registered data set, or one of a user's (`ds_...`): an upload (load_uploaded) or
    a version of either (load_version); system_dirs overrides SYSTEM_DATA_DIRS (Fashion-MNIST).
    A registered data set this process keeps in memory (keep) is not read again."""
    if name.startswith(UPLOADED_PREFIX):
        version = VersionArrays.read(_uploaded_file(name, data_dir))
        if version is not None:
            return load_version(version, load_dataset(version.root, data_dir, download, system_dirs))
        return load_uploaded(name, data_dir)
    if name not in DATASETS:
        raise DatasetUnavailable(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    held = _kept.get((name, Path(data_dir).resolve()))
    if held is not None:
        return held
    info = DATASETS[name]
    data_dir = Path(data_dir)
    cache = cache_path(name, data_dir)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    else:
        dirs = SYSTEM_DATA_DIRS if system_dirs is None else tuple(Path(d) for d in system_dirs)
        arrays = info.read(Source(data_dir, download, dirs))
        _write_cache(cache, arrays)
    return _to_dataset(name, arrays, info.mean, info.std)


_kept: dict[tuple[str, Path], LoadedData] = {}


def keep(dataset: LoadedData, data_dir: str | os.PathLike[str]) -> None:
    """Hold a loaded built-in data set in this process's memory: load_dataset of this process, and
    of processes forked from it, returns it without reading it again (worker.warm: the fork
    server keeps the data sets of its worker). Nothing may write into its tensors."""
    _kept[(dataset.name, Path(data_dir).resolve())] = dataset


def _write_cache(path: Path, arrays: Arrays) -> None:
    """Atomic, so parallel workers never read half a file; a read-only data_dir skips caching."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)
    except OSError:
        pass


def _to_dataset(name: str, arrays: Arrays, mean: tuple[float, ...], std: tuple[float, ...]) -> LoadedData:
    def labels(key: str) -> torch.Tensor | None:
        return torch.from_numpy(arrays[key].astype(np.int64)) if key in arrays else None

    classes = [str(c) for c in arrays["classes"]]
    return LoadedData(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(arrays["x_train"], dtype=np.uint8)),
        y_train=labels("y_train"),
        x_test=torch.from_numpy(np.ascontiguousarray(arrays["x_test"], dtype=np.uint8)),
        y_test=labels("y_test"),
        num_classes=len(classes),
        classes=classes,
        mean=mean,
        std=std,
        coarse_train=labels("coarse_train"),
        coarse_test=labels("coarse_test"),
        y_train_clean=labels("y_train_clean"),
    )


# ---------------------------------------------------------------------------------------
# Uploaded data sets: the API's normalised .npz, fetched by the worker before training
# ---------------------------------------------------------------------------------------

UPLOADED_PREFIX = "ds_"
UPLOAD_FOLDER = "uploads"  # in data_dir; shared.dataset_service.fetch_dataset downloads there
MIN_STD = 1 / 255  # a constant channel would divide by zero


def uploaded_path(dataset_id: str, data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / UPLOAD_FOLDER / f"{dataset_id}.npz"


def _uploaded_file(dataset_id: str, data_dir: str | os.PathLike[str]) -> Path:
    path = uploaded_path(dataset_id, data_dir)
    if not path.is_file():
        raise DatasetUnavailable(
            f"uploaded data set {dataset_id} is not in {path}; fetch it from the object store first "
            "(shared.dataset_service.fetch_dataset)"
        )
    return path


def load_uploaded(dataset_id: str, data_dir: str | os.PathLike[str]) -> LoadedData:
    """A user's data set from `data_dir/uploads/{id}.npz` (uint8 NCHW, as the API stores it);
    mean and std per channel are those of its training images."""
    with np.load(_uploaded_file(dataset_id, data_dir), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    mean, std = channel_stats(arrays["x_train"])
    return _to_dataset(dataset_id, arrays, mean, std)


def load_version(version: VersionArrays, root: LoadedData) -> LoadedData:
    """A version (shared.versions) of the loaded `root`: its training samples at the version's
    indices with the version's labels (ROOT_LABEL: the root's own); clean labels are the root's
    (a built-in's labels, an upload's y_train_clean), unknown for an upload without them. The
    test set, normalisation and name (which picks asymmetric class maps) stay the root's."""
    indices = torch.from_numpy(version.indices)
    own = torch.from_numpy(version.labels)
    builtin = not root.name.startswith(UPLOADED_PREFIX)
    clean = root.y_train if builtin else root.y_train_clean
    return replace(
        root,
        x_train=root.x_train[indices],
        y_train=torch.where(own == ROOT_LABEL, root.y_train[indices], own),
        coarse_train=None if root.coarse_train is None else root.coarse_train[indices],
        y_train_clean=None if clean is None else clean[indices],
    )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact mean and std per channel of uint8 NCHW images, on the [0, 1] scale, from histograms."""
    levels = np.arange(256) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256)
        mean = float(counts @ levels / counts.sum())
        var = float(counts @ (levels - mean) ** 2 / counts.sum())
        means.append(mean)
        stds.append(max(var**0.5, MIN_STD))
    return tuple(means), tuple(stds)


# ---------------------------------------------------------------------------------------
# MNIST family: IDX files
# ---------------------------------------------------------------------------------------

def _idx_arrays(images: tuple[np.ndarray, np.ndarray], labels: tuple[np.ndarray, np.ndarray], classes: Sequence[str]) -> Arrays:
    return {
        "x_train": images[0][:, None], "y_train": labels[0],
        "x_test": images[1][:, None], "y_test": labels[1],
        "classes": np.array(classes),
    }


def _torchvision_mnist(kind: type[torchvision.datasets.MNIST], source: Source, download: bool) -> Arrays:
    root = str(source.data_dir)
    train, test = kind(root, train=True, download=download), kind(root, train=False, download=download)
    return _idx_arrays((train.data.numpy(), test.data.numpy()), (train.targets.numpy(), test.targets.numpy()), kind.classes)


def _missing_idx(
    kind: type[torchvision.datasets.MNIST], title: str, source: Source, failure: Exception | None, extra: str = ""
) -> DatasetUnavailable:
    raw = source.data_dir / kind.__name__ / "raw"
    why = f"download failed ({failure})" if failure else "not found"
    return DatasetUnavailable(
        f"{title} {why}. Put the uncompressed IDX files {', '.join(IDX_FILES)} in {raw}/{extra}, {DOWNLOAD_HINT}."
    )


@register_dataset("mnist", mean=(0.1307,), std=(0.3081,))
def _read_mnist(source: Source) -> Arrays:
    try:
        return _torchvision_mnist(torchvision.datasets.MNIST, source, source.download)
    except (RuntimeError, OSError) as err:
        failure = err if source.download else None
        raise _missing_idx(torchvision.datasets.MNIST, "MNIST", source, failure) from err


def _system_idx(folder: Path) -> Arrays | None:
    found = find_idx(folder)
    if found is None:
        return None
    images, labels = [read_idx(p) for p in found[0::2]], [read_idx(p) for p in found[1::2]]
    return _idx_arrays((images[0], images[1]), (labels[0], labels[1]), torchvision.datasets.FashionMNIST.classes)


@register_dataset("fashion-mnist", mean=(0.2860,), std=(0.3530,))
def _read_fashion_mnist(source: Source) -> Arrays:
    """data_dir (torchvision layout), then the system copy, then a download if allowed."""
    kind = torchvision.datasets.FashionMNIST
    try:
        return _torchvision_mnist(kind, source, download=False)
    except RuntimeError:
        pass
    for folder in source.system_dirs:
        if (arrays := _system_idx(folder)) is not None:
            return arrays
    extra = f" (or `apt-get install dataset-fashion-mnist`, which puts them gzipped in {SYSTEM_DATA_DIRS[0]}/)"
    if not source.download:
        raise _missing_idx(kind, "Fashion-MNIST", source, None, extra)
    try:
        return _torchvision_mnist(kind, source, download=True)
    except (RuntimeError, OSError) as err:
        raise _missing_idx(kind, "Fashion-MNIST", source, err, extra) from err


# ---------------------------------------------------------------------------------------
# CIFAR: python pickle batches, in torchvision's folder layout
# ---------------------------------------------------------------------------------------

_RECONSTRUCT = np.zeros(0).__reduce__()[0]
# A CIFAR batch is a dict of lists and numpy arrays; nothing else may be loaded from it.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise DatasetUnavailable(f"a CIFAR batch holds only arrays and lists, this one refers to {module}.{name}")
        return _PICKLE_GLOBALS[(module, name)]


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return _BatchUnpickler(f, encoding="latin1").load()  # the CIFAR files are Python 2 pickles


def _cifar_folder(kind: type[torchvision.datasets.CIFAR10], title: str, source: Source, files: Sequence[str]) -> Path:
    folder = source.data_dir / kind.base_folder
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return folder
    why = "not found"
    if source.download:
        try:
            kind(str(source.data_dir), download=True)
            return folder
        except (RuntimeError, OSError) as err:
            why = f"download failed ({err})"
    raise DatasetUnavailable(
        f"{title} {why}: {folder} lacks {', '.join(missing)}. Download {kind.url} and extract it in "
        f"{source.data_dir} (it unpacks to {kind.base_folder}/), {DOWNLOAD_HINT}."
    )


def _images(batches: Sequence[dict]) -> np.ndarray:
    return np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)


def _labels(batches: Sequence[dict], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])


@register_dataset("cifar10", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
def _read_cifar10(source: Source) -> Arrays:
    train_files = [f for f in CIFAR10_FILES if f.startswith("data_batch_")]
    folder = _cifar_folder(torchvision.datasets.CIFAR10, "CIFAR-10", source, CIFAR10_FILES)
    train = [_unpickle(folder / f) for f in train_files]
    test = [_unpickle(folder / "test_batch")]
    return {
        "x_train": _images(train), "y_train": _labels(train, "labels"),
        "x_test": _images(test), "y_test": _labels(test, "labels"),
        "classes": np.array(_unpickle(folder / "batches.meta")["label_names"]),
    }


@register_dataset("cifar100", mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
def _read_cifar100(source: Source) -> Arrays:
    folder = _cifar_folder(torchvision.datasets.CIFAR100, "CIFAR-100", source, CIFAR100_FILES)
    train, test = [_unpickle(folder / "train")], [_unpickle(folder / "test")]
    return {
        "x_train": _images(train), "y_train": _labels(train, "fine_labels"),
        "x_test": _images(test), "y_test": _labels(test, "fine_labels"),
        "coarse_train": _labels(train, "coarse_labels"), "coarse_test": _labels(test, "coarse_labels"),
        "classes": np.array(_unpickle(folder / "meta")["fine_label_names"]),
    }
