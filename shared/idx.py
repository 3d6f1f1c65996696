"""IDX files (LeCun's MNIST format), torch-free: where the system's copy of Fashion-MNIST lives,
how to find a data set's four files in a folder, and how to read one. The worker trains on them
(worker/datasets.py); the dashboard shows their images (shared/samples.py).
"""

import gzip
import struct
from pathlib import Path

import numpy as np

from shared.errors import DatasetUnavailable

SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)  # Debian dataset-fashion-mnist
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def find_idx(folder: Path) -> list[Path] | None:
    """The IDX_FILES in `folder` (each gzipped or not), in their order; None unless all are there."""
    found = [next((p for p in (folder / f"{n}.gz", folder / n) if p.is_file()), None) for n in IDX_FILES]
    return None if None in found else [p for p in found if p is not None]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzipped or not."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise DatasetUnavailable(f"{path} is not an IDX file")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != np.prod(shape):
        raise DatasetUnavailable(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))
