"""What routes depend on: settings, a database session, the caller, the stream and the store."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.auth import is_admin_token, user_for_digest, user_for_key
from shared.errors import Forbidden, Unauthorized
from shared.db import get_engine
from shared.models import User
from shared.settings import Settings, get_settings
from shared.store import ObjectStore, get_store
from shared.stream import MetricsStream, StreamUnavailable, get_stream
from shared.workers import Fleet, read_fleet

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with Session(get_engine(settings.database_url)) as session:
        yield session


# Requests holding a session at once; the others wait for a slot without holding a thread.
# Fewer than the engine's pool (shared/db.py: pool_size 10 + max_overflow 20): otherwise a
# burst of requests parks every pool thread waiting for a connection while the requests that
# hold the connections wait for a thread to finish on, until the pool's 30 s timeout (500s).
# The rest of the pool serves event-stream rechecks, the reaper and /readyz.
DATABASE_SESSIONS = 20

# Closed once the route returns, before the response is sent: a streamed response (events,
# artifact downloads) holds no database connection while it streams.
SessionDep = Annotated[Session, Depends(get_session, scope="function", max_concurrency=DATABASE_SESSIONS)]

_bearer = HTTPBearer(auto_error=False, description="an API key (POST /v1/api-keys), or the admin token")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def get_current_user(session: SessionDep, credentials: BearerDep) -> User:
    return authenticate(session, credentials)


UNKNOWN_KEY = "this API key is unknown or revoked; ask an admin for a new one"


def authenticate(session: Session, credentials: HTTPAuthorizationCredentials | None) -> User:
    """The caller of a request."""
    if credentials is None:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    user = user_for_key(session, credentials.credentials)
    if user is None:
        raise Unauthorized(UNKNOWN_KEY)
    return user


def authenticate_digest(session: Session, key_digest: str) -> User:
    """The caller of an open event stream, which checks its key (by its hash) again."""
    user = user_for_digest(session, key_digest)
    if user is None:
        raise Unauthorized(UNKNOWN_KEY)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    if credentials is None:
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")
    if not is_admin_token(credentials.credentials, settings.admin_token):
        raise Forbidden("this route needs the admin token (NOISYFIT_ADMIN_TOKEN)")


def stream_dep(settings: SettingsDep) -> MetricsStream:
    return get_stream(settings)


def store_dep(settings: SettingsDep) -> ObjectStore:
    return get_store(settings)


StreamDep = Annotated[MetricsStream, Depends(stream_dep)]
StoreDep = Annotated[ObjectStore, Depends(store_dep)]


def fleet_dep(settings: SettingsDep) -> Fleet | None:
    """The live workers; None when Redis cannot be read (the answer then leaves them out)."""
    try:
        return read_fleet(settings)
    except StreamUnavailable:
        return None


FleetDep = Annotated[Fleet | None, Depends(fleet_dep)]
