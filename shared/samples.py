"""Data-set samples for the dashboard, without torch: a data set's training labels, and any of
its training images as a PNG.

Where they come from:

- an upload: its data.npz in the object store (uint8 NCHW images, int64 labels: shared.uploads);
- a version (shared.versions): its indices into its root's training set and its own labels
  (ROOT_LABEL: the root's), over its root's images;
- a built-in data set: its IDX files where the API's host has them (the Debian package of
  Fashion-MNIST: shared.idx.SYSTEM_DATA_DIRS); elsewhere there is nothing to show.

The first use of a root (a built-in data set or an upload) unpacks its training images and
labels into `{data_dir}/ui-cache/{name}/` (or, where the API may not write data_dir, as in its
image, the same under the system's temporary folder) as .npy files, each written under a
private name and then renamed (parallel requests never read half a file); later uses
memory-map them, so an image is read without the others. The few open roots and versions are
kept (OPEN_KEPT).
"""

import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from shared.dataset_service import dataset_key
from shared.idx import SYSTEM_DATA_DIRS, find_idx, read_idx
from shared.models import DatasetRow
from shared.store import ObjectStore
from shared.versions import ROOT_LABEL, VersionArrays

CACHE_FOLDER = "ui-cache"
IMAGES, LABELS = "train-images.npy", "train-labels.npy"
# The built-in data sets whose IDX files the API's host may have, and where.
BUILTIN_IDX: dict[str, tuple[Path, ...]] = {"fashion-mnist": SYSTEM_DATA_DIRS}
OPEN_KEPT = 16


@dataclass(frozen=True)
class Samples:
    """A data set's training samples: sample i has `labels[i]` and `image(i)`."""

    images: np.ndarray  # its root's uint8 [N, C, H, W], memory-mapped
    labels: np.ndarray  # int64, one per sample of this data set
    order: np.ndarray | None  # a version's sample i is its root's order[i]; None: the root itself
    classes: list[str] | None  # class names, where the data set has them

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        """Sample `index`'s image, uint8 [C, H, W]; IndexError outside 0..len-1."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return np.asarray(self.images[index if self.order is None else int(self.order[index])])

    def png(self, index: int) -> bytes:
        image = self.image(index)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
        return buffer.getvalue()

    def counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


class _Kept:
    """The newest OPEN_KEPT values by key, made by `make` on a miss; safe from several threads."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], object]) -> object:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > OPEN_KEPT:
                self._items.popitem(last=False)
        return value


_ROOTS = _Kept()
_VERSIONS = _Kept()


def load_samples(name: str, row: DatasetRow | None, store: ObjectStore, data_dir: Path) -> Samples | None:
    """The samples of the built-in data set `name` (row None), or of the user's data set `row`;
    None for a built-in data set (or a version of one) whose files this host lacks."""
    if row is None or row.root is None:
        root = _root(name, store, Path(data_dir))
        return None if root is None else Samples(root[0], root[1], None, row.classes if row is not None else None)
    version = _VERSIONS.get((row.id,), lambda: VersionArrays.read(store.get_bytes(row.object_key)))
    assert isinstance(version, VersionArrays)
    root = _root(version.root, store, Path(data_dir))
    if root is None:
        return None
    images, root_labels = root
    labels = np.where(version.labels == ROOT_LABEL, root_labels[version.indices], version.labels)
    return Samples(images, labels, version.indices, row.classes)


@lru_cache
def cache_folder(data_dir: Path) -> Path:
    """`{data_dir}/ui-cache`, or the same under the temporary folder where data_dir cannot be written."""
    for folder in (data_dir / CACHE_FOLDER, Path(tempfile.gettempdir()) / f"noisyfit-{CACHE_FOLDER}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise PermissionError(f"neither {data_dir / CACHE_FOLDER} nor the temporary folder can be written; "
                          "set NOISYFIT_DATA_DIR to a writable folder")


def _root(name: str, store: ObjectStore, data_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A root's training images (memory-mapped) and labels, unpacked into the cache on first use."""
    folder = cache_folder(data_dir) / name

    def open_cached() -> tuple[np.ndarray, np.ndarray] | None:
        if not (folder / LABELS).is_file():
            arrays = _builtin(name) if name in BUILTIN_IDX else (_upload(name, store) if name.startswith("ds_") else None)
            if arrays is None:
                return None
            folder.mkdir(parents=True, exist_ok=True)
            _save(folder / IMAGES, arrays[0])
            _save(folder / LABELS, arrays[1])  # last: its presence says both are there
        return np.load(folder / IMAGES, mmap_mode="r"), np.load(folder / LABELS).astype(np.int64)

    root = _ROOTS.get((str(folder),), open_cached)
    return root  # type: ignore[return-value]


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    for folder in BUILTIN_IDX[name]:
        found = find_idx(folder)
        if found is not None:
            return read_idx(found[0])[:, None], read_idx(found[1])
    return None


def _upload(dataset_id: str, store: ObjectStore) -> tuple[np.ndarray, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="noisyfit-samples-") as folder:
        path = Path(folder) / "data.npz"
        store.get_file(dataset_key(dataset_id), path)
        with np.load(path, allow_pickle=False) as stored:
            return stored["x_train"], stored["y_train"]


def _save(path: Path, array: np.ndarray) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        with partial.open("wb") as f:
            np.save(f, array)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
