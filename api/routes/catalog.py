"""/v1/catalog: what can be asked for."""

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentUser, FleetDep
from api.schemas import ErrorOut
from shared.catalog import catalog
from shared.workers import with_fleet

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], responses={401: {"model": ErrorOut}})


@router.get("")
def get_catalog(_user: CurrentUser, fleet: FleetDep) -> dict[str, Any]:
    """Every data set, loss (with its formula and parameters), model, noise kind and preset;
    `live_workers` and their `slots` (`total`, `busy`: jobs they run at once at most, and now), and
    per data set the live `workers` that hold it, their `free_slots`, and whether it is `available`
    (null when Redis cannot be read)."""
    return with_fleet(catalog(), fleet)
