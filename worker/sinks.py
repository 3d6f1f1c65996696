"""Where a job's artifacts go: a local folder (LocalSink) or, in the service, the object store
under jobs/{job_id}/ (ObjectStoreSink). Both are ArtifactSinks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from shared.errors import ObjectMissing

if TYPE_CHECKING:  # the object store's client is the service's: the engine (worker.runner) runs without it
    from shared.store import ObjectStore

# Stored with each object, so a presigned download is served with the right type.
CONTENT_TYPES = {".json": "application/json", ".jsonl": "application/x-ndjson", ".csv": "text/csv", ".png": "image/png"}


class ArtifactSink(Protocol):
    """Where a job's files go: a local folder here, an object store in the service."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def list(self) -> list[str]: ...


class LocalSink:
    """A folder; every put is atomic (a temporary file renamed into place)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.folder / name).resolve()
        if not path.is_relative_to(self.folder.resolve()) or path == self.folder.resolve():
            raise ValueError(f"artifact name {name!r} must stay inside {self.folder}")
        return path

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(partial, path)
        except BaseException:
            os.unlink(partial)
            raise

    def get(self, name: str) -> bytes | None:
        path = self._path(name)
        return path.read_bytes() if path.is_file() else None

    def list(self) -> list[str]:
        return sorted(
            p.relative_to(self.folder).as_posix()
            for p in self.folder.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")
        )


class ObjectStoreSink:
    """An ArtifactSink over shared.store; names are plain file names (artifact_key checks)."""

    def __init__(self, store: ObjectStore, job_id: str):
        from shared.store import artifact_key, job_prefix  # with the store's client, which the caller has

        self.store = store
        self.prefix = job_prefix(job_id)
        self.key = lambda name: artifact_key(job_id, name)

    def put(self, name: str, data: bytes) -> None:
        content_type = CONTENT_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
        self.store.put_bytes(self.key(name), data, content_type)

    def get(self, name: str) -> bytes | None:
        try:
            return self.store.get_bytes(self.key(name))
        except ObjectMissing:
            return None

    def list(self) -> list[str]:
        return [info.key.removeprefix(self.prefix) for info in self.store.list_prefix(self.prefix)]
