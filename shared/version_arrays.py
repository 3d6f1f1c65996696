"""A data-set version's arrays (shared.versions): which samples of its root, with which labels.

Apart from shared.versions, which creates versions with the database, so that the engine
(worker.datasets, which loads them) imports no database code: the lent GPU machine has none
(bench/device_imports.py).
"""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT_LABEL = -1  # in a version's labels: the root's own label of that sample


@dataclass(frozen=True)
class VersionArrays:
    """A version's samples: indices into its root's training set and their labels."""

    root: str
    indices: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]; ROOT_LABEL: the root's own

    def npz(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, root=np.array(self.root), indices=self.indices.astype(np.int64),
                            labels=self.labels.astype(np.int64))
        return buffer.getvalue()

    @classmethod
    def read(cls, source: bytes | Path) -> "VersionArrays | None":
        """The version a data set file holds; None for an upload's file (images and labels)."""
        with np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False) as stored:
            if "indices" not in stored.files:
                return None
            return cls(str(stored["root"]), stored["indices"].astype(np.int64), stored["labels"].astype(np.int64))

    @classmethod
    def whole(cls, root: str, samples: int) -> "VersionArrays":
        """A root data set as a version of itself: every sample, its own labels."""
        return cls(root, np.arange(samples, dtype=np.int64), np.full(samples, ROOT_LABEL, dtype=np.int64))
