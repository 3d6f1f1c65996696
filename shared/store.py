"""The object store (any S3 server, through the minio SDK): job artifacts and uploaded data sets.

A job's artifacts live under `jobs/{job_id}/`; their names are checked against one safe
pattern, so no name reaches outside its job's prefix. Calls are retried with backoff on
connection errors and then raise `StoreUnavailable`.
"""

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from shared.errors import BadArtifactName, ObjectMissing, StoreUnavailable
from shared.settings import Settings, get_settings

ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
JOB_ID = re.compile(r"job_[0-9a-f]{1,64}")
CHUNK = 1024 * 1024
T = TypeVar("T")
log = logging.getLogger(__name__)





@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def job_prefix(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"jobs/{job_id}/"


def artifact_key(job_id: str, name: str) -> str:
    """`jobs/{job_id}/{name}`; BadArtifactName for anything but a plain file name."""
    if not ARTIFACT_NAME.fullmatch(name) or ".." in name:
        raise BadArtifactName(
            f"artifact names are 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"without '..'; got {name!r}"
        )
    return job_prefix(job_id) + name


_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class ObjectStore:
    def __init__(self, client: Minio, bucket: str, *, presign_client: Minio | None = None,
                 presign_ttl_s: int = 300, attempts: int = 3, backoff_s: float = 0.2):
        self.client = client
        self.bucket = bucket
        self.presign_client = presign_client or client
        self.presign_ttl_s = presign_ttl_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise ObjectMissing(exc.resource or "") from exc
                raise
            except InvalidResponseError as exc:  # an error body the SDK cannot parse (e.g. text/xml)
                if getattr(exc, "_code", None) == 404:
                    raise ObjectMissing(str(exc)) from exc
                raise
            except (ServerError, *_CONNECTION_ERRORS) as exc:
                if attempt + 1 == self.attempts:
                    raise StoreUnavailable(f"the object store cannot be reached: {exc}") from exc
                delay = self.backoff_s * 2**attempt
                log.warning("object store call failed (attempt %d of %d), retrying in %.1fs: %s",
                            attempt + 1, self.attempts, delay, exc)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def ensure_bucket(self) -> None:
        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # another process created it meanwhile
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        self._call(ensure)

    def ping(self) -> None:
        """Raise StoreUnavailable (or S3Error) unless the bucket answers; one attempt, for /readyz."""
        try:
            if not self.client.bucket_exists(self.bucket):
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist")
        except _CONNECTION_ERRORS as exc:
            raise StoreUnavailable(f"the object store cannot be reached: {exc}") from exc

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type))

    def put_file(self, key: str, path: str | Path, content_type: str = "application/octet-stream") -> None:
        """Upload a file (multipart when large)."""
        self._call(lambda: self.client.fput_object(self.bucket, key, str(path), content_type))

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call(get)

    def get_file(self, key: str, path: str | Path) -> None:
        self._call(lambda: self.client.fget_object(self.bucket, key, str(path)))

    def stat(self, key: str) -> ObjectInfo:
        st = self._call(lambda: self.client.stat_object(self.bucket, key))
        return ObjectInfo(key, st.size or 0, st.last_modified)

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The object's bytes in chunks; opening is retried, and ObjectMissing raised before any chunk."""
        response = self._call(lambda: self.client.get_object(self.bucket, key))

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(chunk_size)
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def list_prefix(self, prefix: str) -> list[ObjectInfo]:
        def list_all() -> list[ObjectInfo]:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return [ObjectInfo(o.object_name, o.size or 0, o.last_modified) for o in objects]

        return sorted(self._call(list_all), key=lambda o: o.key)

    def presigned_get(self, key: str) -> str:
        ttl = timedelta(seconds=self.presign_ttl_s)
        return self.presign_client.presigned_get_object(self.bucket, key, expires=ttl)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under the prefix; returns how many there were."""
        if not prefix.endswith("/"):
            raise ValueError("delete a folder-like prefix ending in '/'")
        objects = self.list_prefix(prefix)

        def delete() -> None:
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(o.key) for o in objects]))
            if errors:
                raise RuntimeError(f"could not delete {len(errors)} objects under {prefix}: {errors[0]}")

        self._call(delete)
        return len(objects)

    def list_artifacts(self, job_id: str) -> list[ObjectInfo]:
        """A job's artifacts (top level of its prefix; resume checkpoints in sub-folders are left out)."""
        prefix = job_prefix(job_id)
        return [o for o in self.list_prefix(prefix) if "/" not in o.key[len(prefix):]]


def _minio(endpoint: str, settings: Settings) -> Minio:
    timeout = urllib3.Timeout(connect=min(5.0, settings.s3_timeout_s), read=settings.s3_timeout_s)
    retries = urllib3.Retry(total=2, connect=0, read=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504])
    http = urllib3.PoolManager(timeout=timeout, retries=retries, maxsize=16)
    return Minio(
        endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
        secure=settings.s3_secure, region=settings.s3_region, http_client=http,
    )


_S3_FIELDS = {"s3_endpoint", "s3_public_endpoint", "s3_access_key", "s3_secret_key", "s3_bucket",
              "s3_secure", "s3_region", "s3_timeout_s", "s3_attempts", "presign_ttl_s"}
_stores: dict[str, ObjectStore] = {}


def get_store(settings: Settings | None = None) -> ObjectStore:
    """The store of these settings (one client per configuration, shared by threads)."""
    s = settings or get_settings()
    key = s.model_dump_json(include=_S3_FIELDS)
    if key not in _stores:
        public = _minio(s.s3_public_endpoint, s) if s.s3_public_endpoint else None
        _stores[key] = ObjectStore(
            _minio(s.s3_endpoint, s), s.s3_bucket, presign_client=public,
            presign_ttl_s=s.presign_ttl_s, attempts=s.s3_attempts,
        )
    return _stores[key]
