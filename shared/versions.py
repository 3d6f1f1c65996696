"""Data-set versions: fix a data set's labels and train again; the original never changes.

A version is a subset of its ROOT data set's training samples (a built-in data set, or an
upload) with labels of its own. It is a DatasetRow like an upload (jobs name its id, GET
/v1/datasets lists it) that names its `parent_id` (a built-in name, an upload or another
version), its `root`, the `source_job` it was made from, and how many samples it
`relabelled` and `dropped`. Two objects under `datasets/{id}/` hold the rest:

- data.npz (VersionArrays): `root`, `indices` (into the root's training set, in the
  version's order) and `labels` (ROOT_LABEL where the label is the root's own: the API holds
  no built-in data set's labels). Clean labels are never stored: they are the root's (a
  built-in's labels, an upload's y_train_clean) at `indices`, and a worker reads them there.
- changes.json: the change list relative to the parent: {"relabel": [[index, label], ...],
  "drop": [index, ...]}, indices into the parent's training set as its jobs see it (a
  version's index i is its i-th sample), plus how it was made.

A version starts from its parent's samples and labels, or with `from_job` from exactly the
samples that job trained and validated on, with the job's (noisy) labels. Then it applies a
reviewer's `changes` and `drop`, or, without them, fixes the job's suspects: rows of its
suspected_mislabels.csv with `flagged` = 1 when the file has that column and no `min_score`
is given; otherwise rows whose predicted class differs from their label with confidence ≥
`min_score` (DEFAULT_MIN_SCORE when not given). `relabel` gives a suspect its predicted
class, `drop` removes it. With `retrain`, the same request submits a job on the new version
(shared.jobs.create_job): the source job's spec with the data set replaced, no added noise
and all samples, plus the overrides given.
"""

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlmodel import Session, col, select

from shared import dataset_service, jobs
from shared.catalog import DATASETS
from shared.errors import ObjectMissing, QueueUnavailable, SpecError, VersionError
from shared.locks import lock_user
from shared.models import DatasetRow, Job, JobStatus, new_id
from shared.settings import Settings
from shared.spec import JobSpec
from shared.store import JOB_ID, ObjectStore, artifact_key
from shared.uploads import MAX_NAME
from shared.version_arrays import ROOT_LABEL, VersionArrays  # noqa: F401 (where they were; the engine reads them there)

# A disagreeing label is fixed when the model gives its predicted class at least this share: from
# half, the given label is the less likely one. On Fashion-MNIST (NCE+RCE, 5000 samples, 8
# epochs) 0.5 left less noise than 0.7 or 0.9 at symmetric rates 0.2, 0.4 and 0.6.
DEFAULT_MIN_SCORE = 0.5
MAX_CHANGES = 100_000  # entries of `changes`, and of `drop`, in one request
MAX_CHAIN = 1000  # versions of versions
MAX_LINEAGE_JOBS = 100  # per data set in a lineage, newest first
CHANGES_FILE = "changes.json"
LOSS_FIELDS = ("alpha", "beta", "loss_params", "l1")  # a loss's own settings, which another loss does not take
Action = Literal["relabel", "drop"]

# What a version copies from its parent's row; a built-in parent's come from the catalog.
SHAPE = ("num_classes", "channels", "size", "test_samples", "has_clean_labels", "classes")


@dataclass(frozen=True)
class Parent:
    """The data set a version is made from, as a version of its root."""

    id: str
    name: str
    arrays: VersionArrays
    shape: dict[str, Any]  # the SHAPE fields

    @property
    def samples(self) -> int:
        return len(self.arrays.indices)

    @property
    def num_classes(self) -> int:
        return self.shape["num_classes"]


def get_parent(session: Session, store: ObjectStore, user_id: int, dataset_id: str) -> Parent:
    """A built-in data set, or one of the user's (NotFound otherwise)."""
    if dataset_id in DATASETS:
        info = DATASETS[dataset_id]
        shape = {"num_classes": info.num_classes, "channels": info.channels, "size": info.size,
                 "test_samples": info.test_samples, "has_clean_labels": True, "classes": None}
        return Parent(dataset_id, dataset_id, VersionArrays.whole(dataset_id, info.train_samples), shape)
    row = dataset_service.get_dataset(session, user_id, dataset_id)
    arrays = VersionArrays.whole(row.id, row.train_samples) if row.root is None else \
        VersionArrays.read(store.get_bytes(row.object_key))
    if arrays is None:
        raise ValueError(f"data set {row.id} is a version whose file holds no version")
    return Parent(row.id, row.name, arrays, {name: getattr(row, name) for name in SHAPE})


@dataclass
class Edit:
    """A version in the making, in the parent's order: which samples it keeps, their labels,
    and the change list."""

    keep: np.ndarray  # bool [parent samples]
    labels: np.ndarray  # int64 [parent samples]
    relabel: list[tuple[int, int]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    made_by: dict[str, Any] = field(default_factory=dict)

    def arrays(self, parent: Parent) -> VersionArrays:
        return VersionArrays(parent.arrays.root, parent.arrays.indices[self.keep], self.labels[self.keep])

    def changes(self, parent: Parent, source_job: str | None) -> dict[str, Any]:
        return {"parent_id": parent.id, "source_job": source_job, **self.made_by,
                "relabel": [list(pair) for pair in self.relabel], "drop": self.drop}


def create_version(
    session: Session, user_id: int, parent_id: str, store: ObjectStore, settings: Settings, *,
    name: str | None = None, from_job: str | None = None, action: Action | None = None,
    min_score: float | None = None, changes: list[tuple[int, int]] | None = None, drop: list[int] | None = None,
    retrain: bool | dict[str, Any] = False,
) -> tuple[DatasetRow, Job | None]:
    """Make a version of `parent_id` (module docstring) and, with `retrain`, a job on it; both
    or neither. VersionError (or SpecError for the retrain spec) says what to change."""
    parent = get_parent(session, store, user_id, parent_id)
    source = _source_job(session, user_id, parent, from_job) if from_job is not None else None
    edit = _base(store, parent, source)
    if changes or drop:
        if action is not None or min_score is not None:
            raise VersionError("action and min_score choose which of the job's suspects to fix; with changes or "
                               "drop you decide yourself: leave them out", "action" if action else "min_score")
        _apply_decisions(edit, parent, changes or [], drop or [], from_job)
    elif source is not None:
        _fix_suspects(edit, store, parent, source, action or "relabel", min_score)
    else:
        raise VersionError("say what to change: {\"from_job\": JOB_ID} fixes that job's suspects, or "
                           "{\"changes\": [[index, label], ...], \"drop\": [index, ...]} applies your decisions",
                           "changes")
    arrays = edit.arrays(parent)
    minimum = 10 * parent.num_classes
    if len(arrays.indices) < minimum:
        raise VersionError(f"the version would keep {len(arrays.indices)} samples; a data set needs at least "
                           f"{minimum} (10 per class): drop fewer", "drop")
    row = DatasetRow(
        id=new_id("ds"), user_id=user_id, name=name or _default_name(parent, from_job),
        train_samples=len(arrays.indices), object_key="", parent_id=parent.id, root=arrays.root,
        source_job=from_job, relabelled=len(edit.relabel), dropped=len(edit.drop), **parent.shape,
    )
    row.object_key = dataset_service.dataset_key(row.id)
    spec = retrain_spec(row.id, retrain, source) if retrain is not False else None
    return _store(session, user_id, row, arrays, edit.changes(parent, from_job), spec, store, settings)


def _store(session: Session, user_id: int, row: DatasetRow, arrays: VersionArrays, changes: dict[str, Any],
           spec: dict[str, Any] | None, store: ObjectStore, settings: Settings) -> tuple[DatasetRow, Job | None]:
    """Objects first, then the row (and the job) in one transaction; a failure before the commit
    removes the objects. Under the user's lock, as a delete: a parent deleted meanwhile is a 404."""
    prefix = dataset_service.dataset_prefix(row.id)
    committed = False
    try:
        lock_user(session, user_id)
        if row.parent_id not in DATASETS:
            dataset_service.get_dataset(session, user_id, row.parent_id)
        dataset_service.check_quota(session, user_id, settings.storage_quota_bytes, dataset_service.row_bytes(row))
        store.put_bytes(row.object_key, arrays.npz())
        store.put_bytes(prefix + CHANGES_FILE, json.dumps(changes).encode(), "application/json")
        session.add(row)
        if spec is None:
            session.commit()
            committed = True
            job = None
        else:
            session.flush()
            try:
                job, _ = jobs.create_job(session, user_id, spec, settings)
            except QueueUnavailable as exc:  # raised after the commit: the version stands, the job does not
                committed = True
                raise QueueUnavailable(f"the version {row.id} was made, but no job was started: {exc.message}; submit "
                                       f"one on it later (POST /v1/jobs with \"dataset\": \"{row.id}\")") from exc
            except SpecError as exc:
                raise SpecError(exc.message, f"retrain.{exc.field}") from exc
            committed = True
    except BaseException:
        if not committed:
            session.rollback()
            store.delete_prefix(prefix)
        raise
    session.refresh(row)
    return row, job


def _default_name(parent: Parent, from_job: str | None) -> str:
    how = f"fixed by {from_job}" if from_job else "reviewed"
    return f"{parent.name[:MAX_NAME - len(how) - 3]} ({how})"


# ---------------------------------------------------------------- what a version starts from


def _source_job(session: Session, user_id: int, parent: Parent, job_id: str) -> Job:
    job = session.get(Job, job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None or job.user_id != user_id:
        raise VersionError(f"no job {job_id!r} of yours; GET /v1/jobs lists them", "from_job")
    if job.status != JobStatus.succeeded:
        raise VersionError(f"job {job_id} is {job.status}; a version is made from a succeeded job's labels and "
                           "suspects: wait for it to succeed, or name another job", "from_job")
    trained_on = job.spec.get("dataset")
    if trained_on != parent.id:
        raise VersionError(f"job {job_id} trained on {trained_on}, not on {parent.id}; make the version of "
                           f"{trained_on} (POST /v1/datasets/{trained_on}/versions)", "from_job")
    return job


def _base(store: ObjectStore, parent: Parent, source: Job | None) -> Edit:
    """The parent's samples and labels, or the samples the source job trained and validated on with its labels."""
    if source is None:
        return Edit(np.ones(parent.samples, dtype=bool), parent.arrays.labels.copy())
    with np.load(io.BytesIO(_artifact(store, source, "noisy_labels.npz")), allow_pickle=False) as stored:
        noisy = stored["noisy"].astype(np.int64)
        used = np.concatenate([stored["train_indices"], stored["val_indices"]]).astype(np.int64)
    if len(noisy) != parent.samples:
        raise VersionError(f"job {source.id}'s labels cover {len(noisy)} samples, but {parent.id} has "
                           f"{parent.samples}; name a job of this data set", "from_job")
    keep = np.zeros(parent.samples, dtype=bool)
    keep[used] = True
    return Edit(keep, noisy)


def _artifact(store: ObjectStore, job: Job, name: str) -> bytes:
    try:
        return store.get_bytes(artifact_key(job.id, name))
    except ObjectMissing as exc:
        raise VersionError(f"job {job.id} has no {name} (GET /v1/jobs/{job.id}/artifacts lists what it has); "
                           "name a job that finished with it", "from_job") from exc


# ---------------------------------------------------------------- what a version changes


def _apply_decisions(edit: Edit, parent: Parent, changes: list[tuple[int, int]], drop: list[int],
                     from_job: str | None) -> None:
    """A reviewer's decisions, every entry checked: an index of the parent (and of the job's
    samples, with from_job), a label of its classes, each index once."""
    seen: dict[int, str] = {}

    def check(index: int, where: str) -> None:
        if not 0 <= index < parent.samples:
            raise VersionError(f"{where}: index {index} is not a training sample of {parent.id}: use 0 to "
                               f"{parent.samples - 1}", where)
        if not edit.keep[index]:
            raise VersionError(f"{where}: sample {index} is not among those job {from_job} trained and validated "
                               "on (the indices of its suspected_mislabels.csv are)", where)
        if index in seen:
            raise VersionError(f"{where}: sample {index} is also in {seen[index]}; decide once per sample", where)
        seen[index] = where

    for position, (index, label) in enumerate(changes):
        where = f"changes[{position}]"
        check(index, where)
        if not 0 <= label < parent.num_classes:
            raise VersionError(f"{where}: label {label} is not a class of {parent.id}: use 0 to "
                               f"{parent.num_classes - 1}, or put the index in drop to remove the sample", where)
        edit.labels[index] = label
        edit.relabel.append((index, label))
    for position, index in enumerate(drop):
        check(index, f"drop[{position}]")
        edit.keep[index] = False
        edit.drop.append(index)
    edit.made_by = {"by": "decisions"}


def _fix_suspects(edit: Edit, store: ObjectStore, parent: Parent, source: Job, action: Action,
                  min_score: float | None) -> None:
    rows, columns = _read_suspects(_artifact(store, source, "suspected_mislabels.csv"), source.id)
    by_flag = min_score is None and "flagged" in columns
    threshold = DEFAULT_MIN_SCORE if min_score is None else min_score
    for row in rows:
        try:
            index, predicted = int(row["index"]), int(row["predicted"])
            suspect = row["flagged"] == "1" if by_flag else \
                (predicted != int(row["noisy_label"]) and float(row["confidence"]) >= threshold)
        except (KeyError, TypeError, ValueError) as exc:
            raise VersionError(f"job {source.id}'s suspected_mislabels.csv has a malformed row ({exc}); name "
                               "another job", "from_job") from exc
        if not suspect:
            continue
        if not (0 <= index < parent.samples and edit.keep[index] and 0 <= predicted < parent.num_classes):
            raise VersionError(f"job {source.id}'s suspected_mislabels.csv names sample {index} as class "
                               f"{predicted}, which {parent.id} does not have; name another job", "from_job")
        if action == "drop":
            edit.keep[index] = False
            edit.drop.append(index)
        elif predicted != edit.labels[index]:
            edit.labels[index] = predicted
            edit.relabel.append((index, predicted))
    edit.relabel.sort()
    edit.drop.sort()
    edit.made_by = {"by": "flagged" if by_flag else "min_score", "action": action,
                    "min_score": None if by_flag else threshold}


def _read_suspects(data: bytes, job_id: str) -> tuple[list[dict[str, str]], list[str]]:
    reader = csv.DictReader(io.StringIO(data.decode()))
    columns = list(reader.fieldnames or [])
    missing = {"index", "noisy_label", "predicted", "confidence"} - set(columns)
    if missing:
        raise VersionError(f"job {job_id}'s suspected_mislabels.csv lacks the columns {sorted(missing)}; "
                           "name a job of this version of noisyfit", "from_job")
    return list(reader), columns


# ---------------------------------------------------------------- training on it


def retrain_spec(dataset_id: str, retrain: bool | dict[str, Any], source: Job | None) -> dict[str, Any]:
    """The spec of the job on the new version `dataset_id`: the source job's (if any) with no
    added noise and all samples, then the overrides of `retrain` (a dict; another `loss` brings
    its own preset α, β and parameters). SpecError names `retrain.<field>`."""
    spec: dict[str, Any] = {}
    if source is not None:
        spec = {name: value for name, value in source.spec.items() if name in JobSpec.model_fields}
        spec.update(noise={"type": "none", "rate": 0.0}, train_size=None, time_limit_s=spec.get("time_limit_s") or None)
        if not spec.get("beta"):
            spec["beta"] = None  # a single-term loss: resolved as 0, which a spec does not take
    overrides = retrain if isinstance(retrain, dict) else {}
    if "loss" in overrides:  # another loss: its own preset weights and parameters, unless given
        spec = {name: value for name, value in spec.items() if name not in LOSS_FIELDS}
    if "dataset" in overrides:
        raise SpecError("the job trains on the new version; leave dataset out of retrain", "retrain.dataset")
    spec = {**spec, **overrides, "dataset": dataset_id}
    try:
        JobSpec.parse(spec)
    except SpecError as exc:
        raise SpecError(exc.message, f"retrain.{exc.field}") from exc
    return spec


# ---------------------------------------------------------------- reading them


def read_changes(session: Session, user_id: int, dataset_id: str, store: ObjectStore) -> dict[str, Any]:
    """A data set's change list relative to its parent; empty for an upload."""
    row = dataset_service.get_dataset(session, user_id, dataset_id)
    if row.parent_id is None:
        return {"parent_id": None, "source_job": None, "by": None, "relabel": [], "drop": []}
    return json.loads(store.get_bytes(dataset_service.dataset_prefix(row.id) + CHANGES_FILE))


@dataclass(frozen=True)
class Node:
    """One data set of a lineage and the user's jobs on it, newest first (at most MAX_LINEAGE_JOBS)."""

    id: str
    row: DatasetRow | None  # None for a built-in data set
    jobs: list[Job]
    jobs_total: int


def lineage(session: Session, user_id: int, dataset_id: str) -> list[Node]:
    """The chain root → … → `dataset_id`, each data set with the user's jobs trained on it."""
    chain: list[tuple[str, DatasetRow | None]] = []
    current: str | None = dataset_id
    while current is not None and len(chain) <= MAX_CHAIN:
        if current in DATASETS:
            chain.append((current, None))
            break
        row = dataset_service.get_dataset(session, user_id, current)
        chain.append((row.id, row))
        current = row.parent_id
    chain.reverse()
    dataset_of = col(Job.spec)["dataset"].as_string()
    trained = session.exec(select(Job, dataset_of).where(Job.user_id == user_id, dataset_of.in_([i for i, _ in chain]))
                           .order_by(col(Job.created_at).desc(), col(Job.id).desc())).all()
    by_dataset: dict[str, list[Job]] = {}
    for job, name in trained:
        by_dataset.setdefault(name, []).append(job)
    return [Node(i, row, by_dataset.get(i, [])[:MAX_LINEAGE_JOBS], len(by_dataset.get(i, []))) for i, row in chain]
