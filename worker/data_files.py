"""Where the built-in data sets' files live, and which of them a worker holds.

torch-free, so that the worker's long-lived process reports what it holds (shared.workers)
without importing torch; worker/datasets.py reads the files from these same places.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shared.idx import IDX_FILES, SYSTEM_DATA_DIRS

CACHE_FOLDER = "noisyfit-cache"
CACHE_VERSION = 1
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")


@dataclass(frozen=True)
class Layout:
    """A data set's files under data_dir, in torchvision's layout; `system` when a system copy
    (SYSTEM_DATA_DIRS, the files gzipped or not) stands in for them."""

    folder: str
    files: tuple[str, ...]
    system: bool = False


LAYOUTS: dict[str, Layout] = {
    "mnist": Layout("MNIST/raw", IDX_FILES),
    "fashion-mnist": Layout("FashionMNIST/raw", IDX_FILES, system=True),
    "cifar10": Layout("cifar-10-batches-py", CIFAR10_FILES),
    "cifar100": Layout("cifar-100-python", CIFAR100_FILES),
}


def cache_path(name: str, data_dir: str | os.PathLike[str]) -> Path:
    """The data set's arrays as worker/datasets.py caches them after the first load."""
    return Path(data_dir) / CACHE_FOLDER / f"{name}-v{CACHE_VERSION}.npz"


def holds(name: str, data_dir: str | os.PathLike[str], download: bool,
          system_dirs: Iterable[str | os.PathLike[str]] = SYSTEM_DATA_DIRS) -> bool:
    """Whether a worker can load the built-in data set `name`: cached, its files in data_dir, a
    system copy, or a download allowed (NOISYFIT_ALLOW_DOWNLOAD)."""
    layout = LAYOUTS[name]
    if download or cache_path(name, data_dir).is_file():
        return True
    if all((Path(data_dir) / layout.folder / file).is_file() for file in layout.files):
        return True
    return layout.system and any(
        all((Path(d) / file).is_file() or (Path(d) / f"{file}.gz").is_file() for file in layout.files)
        for d in system_dirs
    )


def held(data_dir: str | os.PathLike[str], download: bool) -> list[str]:
    """The built-in data sets this worker can load."""
    return [name for name in LAYOUTS if holds(name, data_dir, download)]
