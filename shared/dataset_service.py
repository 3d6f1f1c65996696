"""Users' own data sets: store an upload, list, describe and delete them, and fetch one for training.

An upload is validated and normalised (shared.uploads), stored as one .npz (uint8 NCHW) under
`datasets/{id}/data.npz`, and described by a Dataset row. The object is written first and the
row committed second; a failure in between removes the object, so nothing is left behind.
"""

import os
import re
import tempfile
from pathlib import Path
from typing import IO

import numpy as np
from sqlmodel import Session, col, select

from shared.jobs import Conflict, NotFound
from shared.models import ACTIVE, Dataset, Job, new_id
from shared.store import ObjectStore
from shared.uploads import UploadLimits, describe, read_upload

DATASET_ID = re.compile(r"ds_[0-9a-f]{1,64}")


def dataset_prefix(dataset_id: str) -> str:
    if not DATASET_ID.fullmatch(dataset_id):
        raise ValueError(f"not a data set id: {dataset_id!r}")
    return f"datasets/{dataset_id}/"


def dataset_key(dataset_id: str) -> str:
    return dataset_prefix(dataset_id) + "data.npz"


def create_dataset(session: Session, user_id: int, name: str, file: IO[bytes], store: ObjectStore,
                   limits: UploadLimits) -> Dataset:
    """Validate the upload (BadDataset, UploadTooLarge), store it normalised, and record it."""
    arrays = read_upload(file, limits)
    dataset_id = new_id("ds")
    dataset = Dataset(id=dataset_id, user_id=user_id, name=name, object_key=dataset_key(dataset_id), **describe(arrays))
    with tempfile.TemporaryDirectory(prefix="noisyfit-upload-") as folder:
        path = Path(folder) / "data.npz"
        np.savez(path, **arrays)
        del arrays
        store.put_file(dataset.object_key, path)
    try:
        session.add(dataset)
        session.commit()
    except BaseException:
        session.rollback()
        store.delete_prefix(dataset_prefix(dataset_id))
        raise
    session.refresh(dataset)
    return dataset


def list_datasets(session: Session, user_id: int) -> list[Dataset]:
    """The user's data sets, newest first."""
    query = select(Dataset).where(Dataset.user_id == user_id)
    return list(session.exec(query.order_by(col(Dataset.created_at).desc(), col(Dataset.id).desc())))


def get_dataset(session: Session, user_id: int, dataset_id: str) -> Dataset:
    """The caller's data set; NotFound for an unknown id and for another user's alike."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.user_id != user_id:
        raise NotFound(f"no data set {dataset_id!r} (GET /v1/datasets lists yours)", field="id")
    return dataset


def delete_dataset(session: Session, user_id: int, dataset_id: str, store: ObjectStore) -> None:
    """Delete the row and the stored file; Conflict while a queued or running job trains on it."""
    dataset = get_dataset(session, user_id, dataset_id)
    active = session.exec(select(Job.id, Job.spec).where(Job.user_id == user_id, col(Job.status).in_(ACTIVE))).all()
    using = [job_id for job_id, spec in active if spec.get("dataset") == dataset_id]
    if using:
        raise Conflict(f"jobs {', '.join(using[:5])} still train on {dataset_id}; wait for them or cancel them first")
    session.delete(dataset)
    session.commit()
    store.delete_prefix(dataset_prefix(dataset_id))


def fetch_dataset(store: ObjectStore, dataset_id: str, target: str | os.PathLike[str]) -> Path:
    """Download an uploaded data set to `target` (the worker's worker.datasets.uploaded_path), once.

    A data set never changes after upload, so a file already there is used as it is; the
    download goes to a private partial file first, so parallel workers never read half a file.
    """
    target = Path(target)
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
