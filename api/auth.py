"""API keys: created once in plaintext, stored as their sha256, looked up by it."""

import hashlib
import hmac
import secrets

from sqlalchemy import ColumnElement, and_
from sqlmodel import Session, col, select

from shared.errors import NotFound
from shared.models import ApiKey, User, utcnow

KEY_PREFIX = "nf_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, user_id: int | None = None, name: str | None = None) -> tuple[ApiKey, str]:
    """A new key for an existing user, or for a new user called `name`; returns (record, plaintext)."""
    if user_id is None:
        user = User(name=name or "user")
        session.add(user)
        session.flush()
    else:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}; omit user_id to create one", field="user_id")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user_id=user.id, prefix=plaintext[:10], hash=hash_key(plaintext))
    session.add(key)
    session.commit()
    session.refresh(key)
    return key, plaintext


def revoke_key(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}", field="id")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.commit()
        session.refresh(key)
    return key


def live_key(digest: str) -> ColumnElement[bool]:
    """The condition on ApiKey that holds for the live (unrevoked) key with this hash."""
    return and_(ApiKey.hash == digest, col(ApiKey.revoked_at).is_(None))


def find_live_key(session: Session, plaintext: str) -> ApiKey | None:
    """The live key `plaintext` is; None for an unknown or revoked one."""
    digest = hash_key(plaintext)
    key = session.exec(select(ApiKey).where(live_key(digest))).first()
    if key is None or not hmac.compare_digest(key.hash, digest):
        return None
    return key


def user_for_key(session: Session, plaintext: str) -> User | None:
    """The owner of a live key; None for an unknown or revoked one."""
    key = find_live_key(session, plaintext)
    return session.get(User, key.user_id) if key is not None else None


def user_for_digest(session: Session, digest: str) -> User | None:
    """The owner of the live key with this hash (an open event stream's caller); None once it is revoked."""
    key = session.exec(select(ApiKey).where(live_key(digest))).first()
    return session.get(User, key.user_id) if key is not None else None


def is_admin_token(token: str, admin_token: str) -> bool:
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())
