"""A job's artifacts in the object store, under jobs/{job_id}/: the service's ArtifactSink."""

from pathlib import PurePosixPath

from shared.store import ObjectMissing, ObjectStore, artifact_key, job_prefix

# Stored with each object, so a presigned download is served with the right type.
CONTENT_TYPES = {".json": "application/json", ".jsonl": "application/x-ndjson", ".csv": "text/csv", ".png": "image/png"}


class ObjectStoreSink:
    """worker.runner.ArtifactSink over shared.store; names are plain file names (artifact_key checks)."""

    def __init__(self, store: ObjectStore, job_id: str):
        self.store = store
        self.job_id = job_id

    def put(self, name: str, data: bytes) -> None:
        content_type = CONTENT_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
        self.store.put_bytes(artifact_key(self.job_id, name), data, content_type)

    def get(self, name: str) -> bytes | None:
        try:
            return self.store.get_bytes(artifact_key(self.job_id, name))
        except ObjectMissing:
            return None

    def list(self) -> list[str]:
        prefix = job_prefix(self.job_id)
        return [info.key.removeprefix(prefix) for info in self.store.list_prefix(prefix)]
