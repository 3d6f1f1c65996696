"""Alembic's entry point: runs the migrations on the connection that shared.db.alembic_config hands over."""

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import TypeDecorator
from sqlmodel import SQLModel

from shared import models  # noqa: F401  (registers the tables)


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | bool:
    """Column types as plain SQLAlchemy (`sa.String(length=200)`), so a revision never imports our models."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
