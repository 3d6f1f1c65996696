"""/v1/catalog: what can be asked for."""

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser
from shared.catalog import catalog

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


@router.get("")
def get_catalog(_user: CurrentUser) -> dict[str, Any]:
    """Every data set, loss (with its formula and parameters), model, noise kind and preset."""
    return catalog()
