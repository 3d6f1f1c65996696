"""/v1/api-keys: the admin creates and revokes users' keys."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api import auth
from api.deps import SessionDep, require_admin
from api.schemas import MAX_ROW_ID, ErrorOut, KeyCreate, KeyCreated, KeyOut

router = APIRouter(
    prefix="/v1/api-keys", tags=["admin"], dependencies=[Depends(require_admin)],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


@router.post("", status_code=201, response_model=KeyCreated, responses={400: {"model": ErrorOut}})
def create_key(body: KeyCreate, session: SessionDep) -> KeyCreated:
    """A key for a new user called `name`, or for the existing `user_id`. The key is shown once."""
    key, plaintext = auth.create_key(session, user_id=body.user_id, name=body.name)
    return KeyCreated(**KeyOut.of(key).model_dump(), key=plaintext)


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(key_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], session: SessionDep) -> KeyOut:
    """Revoke a key: it is refused from now on. Revoking twice is fine."""
    return KeyOut.of(auth.revoke_key(session, key_id))
