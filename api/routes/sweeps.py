"""/v1/sweeps: grids of jobs, their status, their table (mean ± std over seeds) and plot."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from sqlmodel import Session

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.schemas import ErrorOut, SweepCreate, SweepList, SweepOut, SweepSummary
from shared import plots, sweep_service
from shared.sweep_service import SweepView
from shared.sweeps import table_csv, table_markdown

router = APIRouter(
    prefix="/v1/sweeps", tags=["sweeps"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
SweepId = Annotated[str, Path(max_length=64)]
TABLE_TYPES = {"csv": "text/csv; charset=utf-8", "markdown": "text/markdown; charset=utf-8"}


@router.post("", status_code=201, response_model=SweepOut,
             responses={400: {"model": ErrorOut}, 429: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def create_sweep(body: SweepCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep,
                 response: Response) -> SweepOut:
    """Create one job per grid cell (201). Every cell is validated first: one that cannot run
    refuses the whole sweep (422, field `cells[i].<field>`); so does a sweep with more jobs
    than you may still queue (429)."""
    view = sweep_service.create_sweep(session, user.id, body.base, settings,
                                      grid=body.grid, preset=body.preset, seeds=body.seeds)
    response.headers["Location"] = f"/v1/sweeps/{view.sweep.id}"
    return SweepOut.of(view)


@router.get("", response_model=SweepList)
def list_sweeps(user: CurrentUser, session: SessionDep,
                limit: Annotated[int, Query(ge=1, le=200)] = 50) -> SweepList:
    """Your newest sweeps, with their jobs counted by status."""
    return SweepList(sweeps=[SweepSummary.of(v) for v in sweep_service.list_sweeps(session, user.id, limit)])


@router.get("/{sweep_id}", response_model=SweepOut)
def get_sweep(sweep_id: SweepId, user: CurrentUser, session: SessionDep) -> SweepOut:
    return SweepOut.of(_view(session, user.id, sweep_id))


@router.get("/{sweep_id}/table", responses={200: {"content": {"application/json": {}, **{t: {} for t in TABLE_TYPES.values()}}}})
def get_sweep_table(sweep_id: SweepId, user: CurrentUser, session: SessionDep,
                format: Literal["json", "csv", "markdown"] = "json") -> Response:
    """The table: JSON rows, CSV (fractions), or Markdown (the paper's layout, % with the best in bold)."""
    rows = _view(session, user.id, sweep_id).table or []
    if format == "json":
        return JSONResponse(rows)
    text = table_csv(rows) if format == "csv" else table_markdown(rows)
    return Response(text, media_type=TABLE_TYPES[format])


@router.post("/{sweep_id}/cancel", response_model=SweepOut)
def cancel_sweep(sweep_id: SweepId, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> SweepOut:
    """Cancel every queued job of the sweep and ask its running ones to stop; finished jobs stay."""
    return SweepOut.of(sweep_service.cancel_sweep(session, user.id, sweep_id, settings))


@router.get("/{sweep_id}/plot.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def get_sweep_plot(sweep_id: SweepId, user: CurrentUser, session: SessionDep) -> Response:
    """Mean test accuracy against the noise rate, one line per loss, error bars one std."""
    view = _view(session, user.id, sweep_id)
    title = plots.sweep_title(view.sweep.base, view.sweep.grid)
    return Response(plots.sweep_plot(view.table or [], title=title), media_type="image/png")


def _view(session: Session, user_id: int, sweep_id: str) -> SweepView:
    return sweep_service.view(session, sweep_service.get_sweep(session, user_id, sweep_id))
