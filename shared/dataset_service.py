"""Users' own data sets: store an upload, list, describe and delete them, and fetch one for training.

An upload is validated and normalised in a bounded child process (shared.upload_sandbox),
stored as one .npz (uint8 NCHW) under `datasets/{id}/data.npz`, and described by a DatasetRow
row. The object is written first and the row committed second; a failure in between removes
the object, so nothing is left behind. A user's stored data sets may take at most
settings.storage_quota_bytes (413 `storage_quota_exceeded` beyond).

Creating a job on a data set and deleting it run under the user's lock (shared.locks): a
delete waits for a job being created and then refuses (409), or a job waits for the delete
and then finds no data set (422); never both. So does making a version of it (shared.versions,
whose data.npz holds indices and labels instead of images); a data set with versions is
deleted only after them.
"""

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO

from sqlmodel import Session, col, select

from shared.errors import Conflict, NotFound, ObjectMissing, StorageQuotaExceeded
from shared.locks import lock_user
from shared.models import ACTIVE, DatasetRow, Job, new_id
from shared.store import ObjectStore
from shared.upload_sandbox import Sandbox, check_upload
from shared.uploads import UploadLimits

DATASET_ID = re.compile(r"ds_[0-9a-f]{1,64}")
LABEL_BYTES = 8  # int64
COPY_CHUNK = 1024 * 1024



def dataset_prefix(dataset_id: str) -> str:
    if not DATASET_ID.fullmatch(dataset_id):
        raise ValueError(f"not a data set id: {dataset_id!r}")
    return f"datasets/{dataset_id}/"


def dataset_key(dataset_id: str) -> str:
    return dataset_prefix(dataset_id) + "data.npz"


def stored_bytes(train_samples: int, test_samples: int, channels: int, size: int, has_clean_labels: bool) -> int:
    """What a normalised data set takes: uint8 NCHW images and int64 labels (the .npz adds a few hundred bytes)."""
    images = (train_samples + test_samples) * channels * size * size
    return images + LABEL_BYTES * (train_samples * (2 if has_clean_labels else 1) + test_samples)


def create_dataset(session: Session, user_id: int, name: str, file: IO[bytes], store: ObjectStore,
                   limits: UploadLimits, sandbox: Sandbox, quota: int) -> DatasetRow:
    """Validate the upload (BadDataset, UploadTooLarge), check the quota (StorageQuotaExceeded),
    store it normalised, and record it."""
    check_quota(session, user_id, quota, 0)
    dataset_id = new_id("ds")
    with tempfile.TemporaryDirectory(prefix="noisyfit-upload-") as folder:
        source, target = Path(folder) / "upload", Path(folder) / "data.npz"
        with source.open("wb") as copy:
            file.seek(0)
            shutil.copyfileobj(file, copy, COPY_CHUNK)
        summary = check_upload(source, target, limits, sandbox)
        dataset = DatasetRow(id=dataset_id, user_id=user_id, name=name, object_key=dataset_key(dataset_id), **summary)
        size = row_bytes(dataset)
        check_quota(session, user_id, quota, size)
        store.put_file(dataset.object_key, target)
    try:
        lock_user(session, user_id)
        check_quota(session, user_id, quota, size)
        session.add(dataset)
        session.commit()
    except BaseException:
        session.rollback()
        store.delete_prefix(dataset_prefix(dataset_id))
        raise
    session.refresh(dataset)
    return dataset


def row_bytes(dataset: DatasetRow) -> int:
    """What a data set takes in the store: an upload its images and labels, a version its
    indices and labels (shared.versions)."""
    if dataset.root is not None:
        return 2 * LABEL_BYTES * dataset.train_samples
    return stored_bytes(dataset.train_samples, dataset.test_samples, dataset.channels, dataset.size,
                        dataset.has_clean_labels)


def check_quota(session: Session, user_id: int, quota: int, adding: int) -> None:
    """StorageQuotaExceeded when the user's data sets and `adding` more bytes exceed the quota
    (with `adding` 0: when they already fill it)."""
    sizes = [(row_bytes(row), row.id, row.name) for row in session.exec(select(DatasetRow).where(
        DatasetRow.user_id == user_id))]
    used = sum(size for size, _, _ in sizes)
    if (used + adding <= quota) if adding else (used < quota):
        return
    largest = ", ".join(f"{ds_id} {name!r} ({_mib(size)})" for size, ds_id, name in sorted(sizes, reverse=True)[:3])
    needs = f"this one needs {_mib(adding)} more; " if adding else ""
    raise StorageQuotaExceeded(
        f"your data sets take {_mib(used)} of your {_mib(quota)} of storage; {needs}delete data sets you no longer "
        f"need (DELETE /v1/datasets/{{id}}) and upload again" + (f"; the largest: {largest}" if largest else ""),
        field="file",
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def list_datasets(session: Session, user_id: int) -> list[DatasetRow]:
    """The user's data sets, newest first."""
    query = select(DatasetRow).where(DatasetRow.user_id == user_id)
    return list(session.exec(query.order_by(col(DatasetRow.created_at).desc(), col(DatasetRow.id).desc())))


def versions_of(session: Session, user_id: int, dataset_id: str) -> list[DatasetRow]:
    """The user's versions made directly from `dataset_id` (a built-in name or one of theirs), newest first."""
    query = select(DatasetRow).where(DatasetRow.user_id == user_id, DatasetRow.parent_id == dataset_id)
    return list(session.exec(query.order_by(col(DatasetRow.created_at).desc(), col(DatasetRow.id).desc())))


def get_dataset(session: Session, user_id: int, dataset_id: str) -> DatasetRow:
    """The caller's data set; NotFound for an unknown id and for another user's alike."""
    dataset = session.exec(select(DatasetRow).where(DatasetRow.id == dataset_id)).first()
    if dataset is None or dataset.user_id != user_id:
        raise NotFound(f"no data set {dataset_id!r} (GET /v1/datasets lists yours)", field="id")
    return dataset


def delete_dataset(session: Session, user_id: int, dataset_id: str, store: ObjectStore) -> None:
    """Delete the row and the stored files; Conflict while a version of it exists (shared.versions)
    or a queued or running job trains on it."""
    lock_user(session, user_id)  # a job or version being made of it meanwhile is committed first, and seen below
    try:
        dataset = get_dataset(session, user_id, dataset_id)
        versions = session.exec(select(DatasetRow.id).where(DatasetRow.parent_id == dataset_id)
                                .order_by(col(DatasetRow.created_at).desc())).all()
        if versions:
            raise Conflict(f"{dataset_id} has versions made from it ({', '.join(versions[:5])}); delete those first "
                           "(DELETE /v1/datasets/{id}; GET /v1/datasets/{id}/lineage shows a version's chain)")
        active = session.exec(select(Job.id, Job.spec).where(Job.user_id == user_id, col(Job.status).in_(ACTIVE))).all()
        using = [job_id for job_id, spec in active if spec.get("dataset") == dataset_id]
        if using:
            raise Conflict(f"jobs {', '.join(using[:5])} still train on {dataset_id}; wait for them or cancel them first")
        session.delete(dataset)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    store.delete_prefix(dataset_prefix(dataset_id))


def fetch_dataset(store: ObjectStore, dataset_id: str, target: str | os.PathLike[str]) -> Path:
    """Download an uploaded data set to `target` (the worker's worker.datasets.uploaded_path), once.

    A data set never changes after upload, so a file already there is used as it is, as long
    as the store still holds the data set: a deleted one's copy is removed (ObjectMissing), and
    so are the copies beside it of other deleted data sets. The download goes to a private
    partial file first, so parallel workers never read half a file.
    """
    target = Path(target)
    prune_cache(store, target.parent)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        store.get_file(dataset_key(dataset_id), partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def prune_cache(store: ObjectStore, folder: Path) -> list[str]:
    """Remove the cached copies (`{id}.npz` in `folder`) of data sets the store no longer holds;
    returns their ids."""
    gone = []
    for path in folder.glob("ds_*.npz") if folder.is_dir() else []:
        dataset_id = path.name.removesuffix(".npz")
        if DATASET_ID.fullmatch(dataset_id) and not _stored(store, dataset_id):
            path.unlink(missing_ok=True)
            gone.append(dataset_id)
    return gone


def _stored(store: ObjectStore, dataset_id: str) -> bool:
    try:
        store.stat(dataset_key(dataset_id))
    except ObjectMissing:
        return False
    return True
