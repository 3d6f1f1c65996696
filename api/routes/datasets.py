"""/v1/datasets: upload, list, inspect and delete your own data sets."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Path, Response, UploadFile
from pydantic import AfterValidator, BaseModel

from api.deps import CurrentUser, SessionDep, SettingsDep, StoreDep
from api.schemas import ErrorOut
from shared import dataset_service
from shared.models import DatasetRow
from shared.upload_sandbox import Sandbox
from shared.errors import RequestTooLarge, UploadTooLarge
from shared.uploads import MAX_NAME, UploadLimits, unprintable

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
DatasetId = Annotated[str, Path(max_length=64)]


class DatasetOut(BaseModel):
    id: str
    name: str
    num_classes: int
    channels: int
    size: int
    train_samples: int
    test_samples: int
    has_clean_labels: bool
    classes: list[str] | None
    created_at: datetime

    @classmethod
    def of(cls, dataset: DatasetRow) -> "DatasetOut":
        return cls.model_validate(dataset, from_attributes=True)


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


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
    """Delete the data set and its stored file; refused (409) while a queued or running job uses it."""
    dataset_service.delete_dataset(session, user.id, dataset_id, store)
    return Response(status_code=204)
