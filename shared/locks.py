"""One writer at a time per user, for the rules that read before they write: the limit on
active jobs, the storage quota, and that no job trains on a deleted data set.

`lock_user` rewrites the user's row unchanged. PostgreSQL then holds a row lock and SQLite
its database write lock until the session commits or rolls back, so two requests of one user
that check and then write run one after the other: the second reads what the first committed.
Call it first in the transaction (on SQLite, before any read of that transaction).
"""

from sqlalchemy import update
from sqlmodel import Session

from shared.models import User


def lock_user(session: Session, user_id: int) -> None:
    session.execute(update(User).where(User.id == user_id).values(name=User.name))
