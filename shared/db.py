"""The database: one engine per URL, and the schema, which Alembic migrates (shared/migrations/).

`init_db(engine)` upgrades a database to the newest revision; every API process calls it on
start. Operators run the same from a shell, and developers add a revision after changing
shared/models.py:

    python -m shared.db upgrade                 # to the newest revision (NOISYFIT_DATABASE_URL)
    python -m shared.db current                 # the revision the database is at
    python -m shared.db revision -m "add x"     # autogenerates versions/NNNN_add_x.py; read it
"""

import argparse
import logging
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlmodel import create_engine

from shared.settings import get_settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
# What `SQLModel.metadata.create_all` made before migrations: such a database is stamped at
# FIRST_REVISION, whose schema it holds, and upgraded from there.
FIRST_REVISION_TABLES = frozenset({"user", "api_key", "job", "sweep", "dataset"})
# pg_advisory_xact_lock key: API processes starting at once upgrade one after another.
MIGRATION_LOCK = 0x6E6F697379666974  # "noisyfit"
# PostgreSQL URLs without a driver, or with the alias `postgres`, use psycopg 3.
_PSYCOPG = "postgresql+psycopg"
_DRIVERLESS = {"postgres", "postgresql"}


class SchemaError(RuntimeError):
    """The database holds some of noisyfit's tables but no Alembic revision: it cannot be upgraded."""


def database_url(raw: str) -> URL:
    """`raw` as SQLAlchemy reads it; `postgres://` and `postgresql://` name the psycopg 3 driver."""
    url = make_url(raw)
    return url.set(drivername=_PSYCOPG) if url.drivername in _DRIVERLESS else url


@lru_cache
def get_engine(raw_url: str | None = None) -> Engine:
    """One engine per URL (default: settings.database_url); SQLite folders are created."""
    url = database_url(raw_url or get_settings().database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args={"connect_timeout": 5}
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(connection: Connection) -> Config:
    """Alembic's settings, in code (no alembic.ini): the migrations run on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def init_db(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to `revision`, in one transaction that holds the migration lock.

    A database that `create_all` made (noisyfit's tables, no alembic_version) is stamped at
    FIRST_REVISION first instead of created again."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = alembic_config(connection)
        if _made_by_create_all(connection):
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, revision)


def _made_by_create_all(connection: Connection) -> bool:
    tables = set(inspect(connection).get_table_names())
    ours = tables & FIRST_REVISION_TABLES
    if "alembic_version" in tables or not ours:
        return False
    if missing := FIRST_REVISION_TABLES - ours:
        raise SchemaError(
            f"the database has the tables {sorted(ours)} but not {sorted(missing)}, and no alembic_version: "
            "point NOISYFIT_DATABASE_URL at noisyfit's database, or at an empty one"
        )
    return True


def current(engine: Engine) -> None:
    """Print the revision the database is at (nothing for an empty database)."""
    with engine.connect() as connection:
        command.current(alembic_config(connection))


def revision(engine: Engine, message: str) -> None:
    """Upgrade the database, then write the next numbered revision from what the models add to it."""
    init_db(engine)
    with engine.begin() as connection:
        config = alembic_config(connection)
        head = ScriptDirectory.from_config(config).get_current_head()
        command.revision(config, message, autogenerate=True, rev_id=f"{int(head) + 1:04d}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.db", description="noisyfit's database schema")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="upgrade the database of NOISYFIT_DATABASE_URL to the newest revision")
    commands.add_parser("current", help="print the revision the database is at")
    new = commands.add_parser("revision", help="autogenerate the next revision from shared/models.py")
    new.add_argument("-m", "--message", required=True, help="what the revision changes, e.g. 'add job priority'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engine = get_engine()
    if args.command == "upgrade":
        init_db(engine)
    elif args.command == "current":
        current(engine)
    else:
        revision(engine, args.message)


if __name__ == "__main__":
    main()
