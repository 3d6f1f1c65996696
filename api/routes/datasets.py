"""/v1/datasets: upload, list, inspect and delete your own data sets; make versions of them
(and of the built-in ones) with fixed labels, and follow their lineage."""

from typing import Annotated

from fastapi import APIRouter, Form, Path, Response, UploadFile
from pydantic import AfterValidator

from api.deps import CurrentUser, FleetDep, SessionDep, SettingsDep, StoreDep
from api.schemas import (
    ChangesOut, DatasetList, DatasetOut, ErrorOut, JobOut, LineageNode, LineageOut, VersionCreate, VersionOut,
)
from shared import dataset_service, versions
from shared.upload_sandbox import Sandbox
from shared.errors import RequestTooLarge, UploadTooLarge
from shared.uploads import MAX_NAME, UploadLimits, unprintable

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
DatasetId = Annotated[str, Path(max_length=64)]


def _printable(name: str) -> str:
    bad = unprintable(name)
    if bad is not None:
        raise ValueError(f"the name holds the control character {bad!r}; use printable characters")
    return name


DatasetName = Annotated[str, Form(min_length=1, max_length=MAX_NAME), AfterValidator(_printable)]


@router.post("", status_code=201, response_model=DatasetOut,
             responses={400: {"model": ErrorOut}, 413: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def upload_dataset(
    file: UploadFile, name: DatasetName,
    user: CurrentUser, session: SessionDep, settings: SettingsDep, store: StoreDep, response: Response,
) -> DatasetOut:
    """Upload a data set (multipart: `file`, `name`). The file is an `.npz` with arrays x_train,
    y_train, x_test, y_test (optional y_train_clean, classes), or a `.zip` of one folder of
    images per class (split 80/20, seeded) or of train/ and test/ folders of class folders.
    Train on it with `"dataset": "<id>"`. A file that cannot train answers 400 `bad_dataset`;
    one too large to check, 413; one beyond your storage quota, 413 `storage_quota_exceeded`."""
    try:
        dataset = dataset_service.create_dataset(session, user.id, name, file.file, store, UploadLimits.of(settings),
                                                 Sandbox.of(settings), settings.storage_quota_bytes)
    except UploadTooLarge as exc:
        raise RequestTooLarge(exc.message, field="file") from exc
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetOut.of(dataset)


@router.get("", response_model=DatasetList)
def list_datasets(user: CurrentUser, session: SessionDep) -> DatasetList:
    """Your data sets, newest first."""
    return DatasetList(datasets=[DatasetOut.of(d) for d in dataset_service.list_datasets(session, user.id)])


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: DatasetId, user: CurrentUser, session: SessionDep) -> DatasetOut:
    return DatasetOut.of(dataset_service.get_dataset(session, user.id, dataset_id))


@router.delete("/{dataset_id}", status_code=204, responses={409: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def delete_dataset(dataset_id: DatasetId, user: CurrentUser, session: SessionDep, store: StoreDep) -> Response:
    """Delete the data set and its stored files; refused (409) while versions of it exist or a
    queued or running job uses it."""
    dataset_service.delete_dataset(session, user.id, dataset_id, store)
    return Response(status_code=204)


@router.post("/{dataset_id}/versions", status_code=201, response_model=VersionOut,
             responses={code: {"model": ErrorOut} for code in (409, 413, 429, 503)})
def create_version(
    dataset_id: DatasetId, body: VersionCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep,
    store: StoreDep, fleet: FleetDep, response: Response,
) -> VersionOut:
    """A new data set from `dataset_id` (yours, or a built-in one) with labels fixed; the parent
    never changes. `{"from_job": ID}` keeps the samples that job trained and validated on, with its
    labels, and relabels (`action`: relabel) or drops (drop) its suspects: its `flagged` ones, or
    those predicted as another class with confidence >= `min_score`. `{"changes": [[index, label],
    ...], "drop": [index, ...]}` applies your decisions (on the job's samples, with from_job too).
    `retrain` also submits a job on the new version: the source job's spec, no added noise, all
    samples; the answer holds it as `job`. A bad entry answers 422 naming it."""
    row, job = versions.create_version(
        session, user.id, dataset_id, store, settings, name=body.name, from_job=body.from_job, action=body.action,
        min_score=body.min_score, changes=body.changes, drop=body.drop, retrain=body.retrain,
    )
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return VersionOut(**DatasetOut.of(row).model_dump(), job=JobOut.of(job, fleet) if job is not None else None)


@router.get("/{dataset_id}/changes", response_model=ChangesOut, responses={503: {"model": ErrorOut}})
def get_changes(dataset_id: DatasetId, user: CurrentUser, session: SessionDep, store: StoreDep) -> ChangesOut:
    """A version's changes relative to its parent, indices into the parent's training set (empty for an upload)."""
    return ChangesOut.model_validate(versions.read_changes(session, user.id, dataset_id, store))


@router.get("/{dataset_id}/lineage", response_model=LineageOut)
def get_lineage(dataset_id: DatasetId, user: CurrentUser, session: SessionDep) -> LineageOut:
    """The chain from the root data set to this one, each with your jobs trained on it."""
    chain = versions.lineage(session, user.id, dataset_id)
    return LineageOut(dataset_id=dataset_id, chain=[LineageNode.of(node) for node in chain])
