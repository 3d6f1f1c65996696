"""The schema's migrations (shared/migrations) on real PostgreSQL and SQLite databases, each fresh."""

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, inspect, text
from sqlmodel import Session, SQLModel, select

from shared.db import FIRST_REVISION, MIGRATIONS, SchemaError, get_engine, init_db
from shared.models import ApiKey, DatasetRow, Job, Sweep, User

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
T1 = datetime(2026, 1, 2, 4, 0, 0, tzinfo=timezone.utc)

# Rows in the shape of FIRST_REVISION's tables, in an order their foreign keys allow.
FIRST_REVISION_ROWS = {
    "user": [{"id": 1, "name": "alice", "created_at": T0}, {"id": 2, "name": "bob", "created_at": T1}],
    "api_key": [
        {"id": 1, "user_id": 1, "prefix": "nf_1a2b", "hash": "a" * 64, "created_at": T0, "revoked_at": None},
        {"id": 2, "user_id": 2, "prefix": "nf_3c4d", "hash": "b" * 64, "created_at": T0, "revoked_at": T1},
    ],
    "sweep": [{"id": "sw_1", "user_id": 1, "base": {"dataset": "mnist", "epochs": 3},
               "grid": {"loss": ["ce", "nce+rce"], "seed": [0, 1]}, "created_at": T0}],
    "job": [
        {"id": "job_1", "user_id": 1, "status": "succeeded", "spec": {"dataset": "mnist", "loss": "ce"},
         "progress": {"epoch": 3, "epochs": 3, "metrics": {"test_acc": 0.97}}, "result": {"test_acc": 0.97},
         "error": None, "attempts": 1, "created_at": T0, "started_at": T0, "finished_at": T1, "updated_at": T1,
         "idempotency_key": "key-1", "request_hash": "c" * 64, "sweep_id": "sw_1", "lease_owner": None,
         "lease_expires_at": None, "cancel_requested": False},
        {"id": "job_2", "user_id": 2, "status": "running", "spec": {"dataset": "cifar10", "loss": "nce+mae"},
         "progress": None, "result": None, "error": {"code": "x", "message": "retried"}, "attempts": 2,
         "created_at": T0, "started_at": T1, "finished_at": None, "updated_at": T1, "idempotency_key": None,
         "request_hash": None, "sweep_id": None, "lease_owner": "worker@host", "lease_expires_at": T1,
         "cancel_requested": True},
    ],
    "dataset": [{"id": "ds_1", "user_id": 1, "name": "mine", "num_classes": 3, "channels": 1, "size": 28,
                 "train_samples": 100, "test_samples": 20, "has_clean_labels": True, "classes": ["a", "b", "c"],
                 "object_key": "datasets/ds_1.npz", "created_at": T0}],
}
MODELS = {"user": User, "api_key": ApiKey, "sweep": Sweep, "job": Job, "dataset": DatasetRow}


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, make_postgres_database: Callable[[], str], tmp_path: Path) -> str:
    """The URL of an empty database."""
    return make_postgres_database() if request.param == "postgresql" else f"sqlite:///{tmp_path / 'fresh.db'}"


@pytest.fixture
def fresh(fresh_url: str) -> Engine:
    return get_engine(fresh_url)


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_an_upgrade_from_the_first_revision_keeps_every_row(fresh: Engine):
    init_db(fresh, FIRST_REVISION)
    with fresh.begin() as connection:
        tables = MetaData()
        tables.reflect(connection)
        for name, rows in FIRST_REVISION_ROWS.items():
            connection.execute(tables.tables[name].insert(), rows)
    init_db(fresh)
    assert revision_of(fresh) == head()
    with Session(fresh) as session:
        for name, rows in FIRST_REVISION_ROWS.items():
            assert session.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one() == len(rows), name
            for row in rows:
                stored = session.get(MODELS[name], row["id"])
                assert {column: getattr(stored, column) for column in row} == row, name


def test_the_migrations_build_what_the_models_describe(fresh: Engine):
    """Fails when a model changes without a revision (or a revision without its model): add one, see migrations/__init__.py."""
    init_db(fresh)
    with fresh.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []


def test_the_comparison_sees_a_column_that_no_revision_adds(fresh: Engine):
    init_db(fresh)
    models = MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(models)
    models.tables["job"].append_column(Column("not_in_any_revision", Integer, nullable=True))
    with fresh.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), models)
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "job", "not_in_any_revision")]


def test_a_database_that_create_all_made_is_stamped_and_keeps_its_rows(fresh: Engine):
    """Before migrations, create_all made FIRST_REVISION's schema (the same DDL) and no alembic_version."""
    init_db(fresh, FIRST_REVISION)
    with fresh.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
        tables = MetaData()
        tables.reflect(connection)
        connection.execute(tables.tables["user"].insert(), FIRST_REVISION_ROWS["user"])
    init_db(fresh)
    assert revision_of(fresh) == head()
    with Session(fresh) as session:
        assert [(user.id, user.name) for user in session.exec(select(User).order_by(User.id))] == [(1, "alice"), (2, "bob")]


def test_a_database_with_only_some_of_our_tables_is_refused(fresh: Engine):
    SQLModel.metadata.tables["user"].create(fresh)
    with pytest.raises(SchemaError, match=r"has the tables \['user'\] but not \['api_key', 'dataset', 'job', 'sweep'\]"):
        init_db(fresh)
    assert "alembic_version" not in inspect(fresh).get_table_names()


def _upgrade_when_all_are_ready(url: str, ready: Barrier) -> None:
    ready.wait(60)
    init_db(get_engine(url))


def test_api_processes_starting_at_once_upgrade_one_after_another(make_postgres_database: Callable[[], str]):
    """Eight processes upgrade one empty PostgreSQL database at the same moment: one creates, the others find it done."""
    url = make_postgres_database()
    fork = multiprocessing.get_context("fork")
    ready = fork.Barrier(8)
    processes = [fork.Process(target=_upgrade_when_all_are_ready, args=(url, ready)) for _ in range(8)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0] * 8
    with get_engine(url).connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgresql_urls_with_or_without_a_driver_connect(postgres_url: str, scheme: str):
    engine = get_engine(scheme + postgres_url.removeprefix("postgresql"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT current_database()")).scalar_one() == postgres_url.rsplit("/", 1)[1]
    assert engine.dialect.driver == "psycopg"


def test_the_admin_command_upgrades_and_tells_the_revision(fresh_url: str):
    env = {**os.environ, "NOISYFIT_DATABASE_URL": fresh_url, "PYTHONPATH": str(ROOT)}

    def admin(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "shared.db", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert admin("current").strip() == ""
    admin("upgrade")
    assert admin("current").split() == [head(), "(head)"]
    assert set(SQLModel.metadata.tables) <= set(inspect(get_engine(fresh_url)).get_table_names())
