"""What the API answers: the public shapes of its resources."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from shared.catalog import DATASETS
from shared.models import ApiKey, DatasetRow, Job, JobStatus
from shared.sweep_service import SweepView
from shared.uploads import MAX_NAME, unprintable
from shared.versions import MAX_CHANGES, Node
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
    parent_id: str | None = Field(None, description="a version's parent: a built-in data set, an upload or a version; "
                                                    "null for an upload")
    root: str | None = Field(None, description="a version's root: the built-in data set or upload whose samples "
                                               "it holds")
    source_job: str | None = Field(None, description="the job whose samples and labels a version started from")
    relabelled: int | None = Field(None, description="samples a version relabelled (GET /v1/datasets/{id}/changes)")
    dropped: int | None = Field(None, description="samples a version dropped")
    changes: int | None = Field(None, description="relabelled + dropped; null for an upload")

    @classmethod
    def of(cls, dataset: DatasetRow) -> "DatasetOut":
        out = cls.model_validate(dataset, from_attributes=True)
        if dataset.parent_id is not None:
            out.changes = (dataset.relabelled or 0) + (dataset.dropped or 0)
        return out


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class VersionCreate(BaseModel):
    """A new version of a data set: from a job's suspects, or from a reviewer's decisions
    (with `from_job` too: on the samples and labels that job trained on)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    from_job: str | None = Field(
        None, min_length=1, max_length=64,
        description="a succeeded job of this data set: the version holds the samples it trained and validated on with "
                    "its labels, and fixes its suspects (unless changes or drop are given)")
    action: Literal["relabel", "drop"] | None = Field(
        None, description="what to do with the job's suspects: relabel to the predicted class (default) or drop")
    min_score: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, validation_alias=AliasChoices("min_score", "threshold"),
        description="a suspect is a sample whose predicted class differs from its label with at least this confidence "
                    "(also accepted as `threshold`); without it, the job's `flagged` suspects, or confidence >= 0.5 "
                    "for a job without that column")
    changes: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        [], max_length=MAX_CHANGES,
        description="[index, label] pairs: set these samples' labels (indices into the parent's training set)")
    drop: list[int] = Field([], max_length=MAX_CHANGES, description="indices of samples to remove")
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME, description="the version's name")
    retrain: bool | dict[str, Any] = Field(
        False, description="true, or spec fields to override: also submit a job on the new version, with the source "
                           "job's spec (no added noise, all samples); the answer's `job`")

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str | None) -> str | None:
        bad = unprintable(name) if name is not None else None
        if bad is not None:
            raise ValueError(f"the name holds the control character {bad!r}; use printable characters")
        return name


class VersionOut(DatasetOut):
    job: JobOut | None = Field(None, description="the job submitted on the version, with retrain")


class ChangesOut(BaseModel):
    """A data set's changes relative to its parent; indices into the parent's training set."""

    parent_id: str | None
    source_job: str | None
    by: Literal["decisions", "flagged", "min_score"] | None = Field(
        description="a reviewer's decisions, the job's flagged suspects, or its suspects by min_score; null for an "
                    "upload")
    action: Literal["relabel", "drop"] | None = None
    min_score: float | None = None
    relabel: list[tuple[int, int]] = Field(description="[index, new label] pairs")
    drop: list[int]


class LineageJob(BaseModel):
    id: str
    status: str
    created_at: datetime
    final_test_accuracy: float | None
    noise_rate_realised: float | None

    @classmethod
    def of(cls, job: Job) -> "LineageJob":
        result = job.result or {}
        return cls(id=job.id, status=job.status, created_at=job.created_at,
                   final_test_accuracy=result.get("final_test_accuracy"),
                   noise_rate_realised=result.get("noise_rate_realised"))


class LineageNode(BaseModel):
    id: str
    name: str
    kind: Literal["builtin", "upload", "version"]
    parent_id: str | None
    source_job: str | None
    relabelled: int | None
    dropped: int | None
    train_samples: int | None
    created_at: datetime | None
    jobs: list[LineageJob] = Field(description="your jobs on this data set, newest first (at most 100)")
    jobs_total: int

    @classmethod
    def of(cls, node: Node) -> "LineageNode":
        row = node.row
        jobs = [LineageJob.of(job) for job in node.jobs]
        if row is None:
            return cls(id=node.id, name=node.id, kind="builtin", parent_id=None, source_job=None, relabelled=None,
                       dropped=None, train_samples=DATASETS[node.id].train_samples, created_at=None, jobs=jobs,
                       jobs_total=node.jobs_total)
        return cls(id=row.id, name=row.name, kind="upload" if row.parent_id is None else "version",
                   parent_id=row.parent_id, source_job=row.source_job, relabelled=row.relabelled, dropped=row.dropped,
                   train_samples=row.train_samples, created_at=row.created_at, jobs=jobs, jobs_total=node.jobs_total)


class LineageOut(BaseModel):
    dataset_id: str
    chain: list[LineageNode] = Field(description="the root first, this data set last")


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(description="a job spec; every cell starts from it")
    grid: dict[str, list[Any]] | None = Field(
        None, description='field → values; dotted names reach into the spec: {"noise.rate": [0.2, 0.4], "seed": [0, 1]}')
    preset: str | None = Field(None, description="a paper grid: table2, table3, alpha-beta, or select (candidate "
                                                 "losses and α/β on a noisy validation split); GET /v1/catalog")
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
        description="one row per grid cell without the seed: cell, mean, std (sample) and n (succeeded runs) of the "
                    "final test accuracy, val_mean and val_std of the final accuracy on the noisy validation split "
                    "(null without one), resolved (the loss, alpha, beta, loss_params its runs ran with), runs")
    best: dict[str, Any] | None = Field(
        None, description="the row of the highest val_mean, or of the highest mean when no run held out a validation "
                          "split: by (validation or test), cell, val_mean, val_std, mean, std, n")
    recommendation: dict[str, Any] | None = Field(
        None, description="chosen by val_mean alone, never by a test figure, when the cells differ only in loss, alpha, "
                          "beta or loss_params: cell, loss, alpha, beta (null: a single term), loss_params, val_mean, "
                          "val_std, mean, std (the test figures, shown, not used), n")
    validation_test_kendall_tau: float | None = Field(
        None, description="Kendall's τ-b between the rows' order by val_mean and by mean (clean test accuracy), over "
                          "the rows that have both, when at least 3 do: 1 the same order, -1 reversed")

    @classmethod
    def of(cls, view: SweepView) -> "SweepOut":
        return cls(**cls.fields_of(view), base=view.sweep.base, table=view.table or [], **(view.summary or {}))


class SweepList(BaseModel):
    sweeps: list[SweepSummary]
