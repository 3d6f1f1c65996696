"""The database tables (SQLModel). JSON columns and UTC timestamps work on SQLite and PostgreSQL."""

import secrets
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out; SQLite stores naive UTC, PostgreSQL timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC (shared.models.utcnow)")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _time(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (JobStatus.queued, JobStatus.running)
FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    created_at: datetime = _time(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    prefix: str = Field(max_length=16)  # shown to tell keys apart; the key itself is never stored
    hash: str = Field(max_length=64, unique=True)  # sha256 hex of the key
    created_at: datetime = _time(default_factory=utcnow)
    revoked_at: datetime | None = _time(default=None)


class Job(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key"),)

    id: str = Field(default_factory=lambda: new_id("job"), primary_key=True, max_length=40)
    user_id: int = Field(foreign_key="user.id", index=True)
    status: str = Field(default=JobStatus.queued, index=True, max_length=16)  # a JobStatus
    spec: dict[str, Any] = _json(nullable=False)  # resolved
    progress: dict[str, Any] | None = _json()  # {"epoch", "epochs", "metrics"}
    result: dict[str, Any] | None = _json()  # summary of result.json
    error: dict[str, Any] | None = _json()  # {"code", "message"}
    attempts: int = 0
    created_at: datetime = _time(default_factory=utcnow, index=True)
    started_at: datetime | None = _time(default=None)
    finished_at: datetime | None = _time(default=None)
    updated_at: datetime = _time(default_factory=utcnow)
    idempotency_key: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)  # tells a replay from a reuse of the key
    sweep_id: str | None = Field(default=None, foreign_key="sweep.id", index=True, max_length=40)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _time(default=None)
    cancel_requested: bool = False


class Sweep(SQLModel, table=True):
    id: str = Field(default_factory=lambda: new_id("sw"), primary_key=True, max_length=40)
    user_id: int = Field(foreign_key="user.id", index=True)
    base: dict[str, Any] = _json(nullable=False)
    grid: dict[str, Any] = _json(nullable=False)
    created_at: datetime = _time(default_factory=utcnow, index=True)


class DatasetRow(SQLModel, table=True):
    __tablename__ = "dataset"

    id: str = Field(default_factory=lambda: new_id("ds"), primary_key=True, max_length=40)
    user_id: int = Field(foreign_key="user.id", index=True)
    name: str = Field(max_length=200)
    num_classes: int
    channels: int
    size: int
    train_samples: int
    test_samples: int
    has_clean_labels: bool = False
    classes: list[str] | None = _json()
    object_key: str = Field(max_length=500)
    created_at: datetime = _time(default_factory=utcnow, index=True)
    # A version (shared/versions.py) names its parent and root (a built-in name or a ds id);
    # all four are None for an upload.
    parent_id: str | None = Field(default=None, index=True, max_length=64)
    root: str | None = Field(default=None, max_length=64)
    source_job: str | None = Field(default=None, max_length=40)
    relabelled: int | None = None
    dropped: int | None = None
