"""What the API answers: the public shapes of its resources."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models import ApiKey, DatasetRow, Job, JobStatus
from shared.sweep_service import SweepView
from shared.workers import Fleet, WaitingFor


MAX_ROW_ID = 2**31 - 1  # integer primary keys (PostgreSQL's integer); a larger id cannot exist


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    id: str
    status: str
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    cancel_requested: bool
    sweep_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    waiting_for: WaitingFor | None = Field(
        None, description="a queued job's wait: `worker` (no worker is live; it starts once one is), `dataset` "
                          "(live workers hold not its data set), `slot` (the live workers holding its data set "
                          "run as many jobs as they can), `queue` (one of them has a free slot: its turn); null "
                          "otherwise, or when the workers cannot be read")

    @classmethod
    def of(cls, job: Job, fleet: Fleet | None) -> "JobOut":
        out = cls.model_validate(job, from_attributes=True)
        if job.status == JobStatus.queued and fleet is not None:
            out.waiting_for = fleet.waiting_for(job.spec["dataset"])
        return out


class JobList(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class MetricsPage(BaseModel):
    events: list[dict[str, Any]]
    next: str | None = Field(description="pass as ?after= to read on; unchanged when nothing new arrived")


class ArtifactOut(BaseModel):
    name: str
    size: int
    last_modified: datetime | None


class ArtifactList(BaseModel):
    artifacts: list[ArtifactOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$",
                             description="the new user's name")
    user_id: int | None = Field(None, ge=1, le=MAX_ROW_ID, description="give an existing user another key instead")


class KeyOut(BaseModel):
    id: int
    user_id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> "KeyOut":
        return cls.model_validate(key, from_attributes=True)


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


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


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(description="a job spec; every cell starts from it")
    grid: dict[str, list[Any]] | None = Field(
        None, description='field → values; dotted names reach into the spec: {"noise.rate": [0.2, 0.4], "seed": [0, 1]}')
    preset: str | None = Field(None, description="a paper grid: table2, table3 or alpha-beta (GET /v1/catalog)")
    seeds: list[int] | None = Field(None, min_length=1, max_length=100, description="the preset's seeds (default 0, 1, 2)")


class SweepSummary(BaseModel):
    id: str
    status: str
    grid: dict[str, Any]
    jobs: list[str]
    counts: dict[str, int] = Field(description="the sweep's jobs by status")
    total: int
    created_at: datetime

    @classmethod
    def fields_of(cls, view: SweepView) -> dict[str, Any]:
        sweep = view.sweep
        return {"id": sweep.id, "status": view.status, "grid": sweep.grid, "jobs": view.job_ids,
                "counts": view.counts, "total": len(view.job_ids), "created_at": sweep.created_at}

    @classmethod
    def of(cls, view: SweepView) -> "SweepSummary":
        return cls(**cls.fields_of(view))


class SweepOut(SweepSummary):
    base: dict[str, Any]
    table: list[dict[str, Any]] = Field(
        description="one row per grid cell without the seed: cell, mean, std (sample), n (succeeded runs), runs")

    @classmethod
    def of(cls, view: SweepView) -> "SweepOut":
        return cls(**cls.fields_of(view), base=view.sweep.base, table=view.table or [])


class SweepList(BaseModel):
    sweeps: list[SweepSummary]
