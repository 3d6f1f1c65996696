"""What the API answers: the public shapes of its resources."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models import ApiKey, Job, JobStatus
from shared.workers import Fleet, WaitingFor


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
                          "(live workers hold not its data set), `queue` (its turn); null otherwise, or when "
                          "the workers cannot be read")

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
    user_id: int | None = Field(None, description="give an existing user another key instead")


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
