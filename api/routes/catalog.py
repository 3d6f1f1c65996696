"""/v1/catalog: what can be asked for."""

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser
from api.schemas import ErrorOut
from shared.catalog import catalog

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], responses={401: {"model": ErrorOut}})


@router.get("")
def get_catalog(_user: CurrentUser) -> dict[str, Any]:
    """Every data set, loss (with its formula and parameters), model, noise kind and preset."""
    return catalog()
