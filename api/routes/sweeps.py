"""/v1/sweeps: grids of jobs, their status, their table (mean ± std over seeds) and plot."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.schemas import ErrorOut
from shared import plots, sweep_service
from shared.sweep_service import SweepView
from shared.sweeps import table_csv, table_markdown

router = APIRouter(
    prefix="/v1/sweeps", tags=["sweeps"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
SweepId = Annotated[str, Path(max_length=64)]
TABLE_TYPES = {"csv": "text/csv; charset=utf-8", "markdown": "text/markdown; charset=utf-8"}


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(description="a job spec; every cell starts from it")
    grid: dict[str, list[Any]] | None = Field(
        None, description='field → values; dotted names reach into the spec: {"noise.rate": [0.2, 0.4], "seed": [0, 1]}')
    preset: str | None = Field(None, description="a paper grid: table2, table3 or alpha-beta (GET /v1/catalog)")
    seeds: list[int] | None = Field(None, min_length=1, max_length=100, description="the preset's seeds (default 0, 1, 2)")


class SweepSummary(BaseModel):
    id: str
    status: str
    grid: dict[str, Any]
    jobs: list[str]
    counts: dict[str, int] = Field(description="the sweep's jobs by status")
    total: int
    created_at: datetime

    @classmethod
    def fields_of(cls, view: SweepView) -> dict[str, Any]:
        sweep = view.sweep
        return {"id": sweep.id, "status": view.status, "grid": sweep.grid, "jobs": view.job_ids,
                "counts": view.counts, "total": len(view.job_ids), "created_at": sweep.created_at}

    @classmethod
    def of(cls, view: SweepView) -> "SweepSummary":
        return cls(**cls.fields_of(view))


class SweepOut(SweepSummary):
    base: dict[str, Any]
    table: list[dict[str, Any]] = Field(
        description="one row per grid cell without the seed: cell, mean, std (sample), n (succeeded runs), runs")

    @classmethod
    def of(cls, view: SweepView) -> "SweepOut":
        return cls(**cls.fields_of(view), base=view.sweep.base, table=view.table or [])


class SweepList(BaseModel):
    sweeps: list[SweepSummary]


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
    rows = _view(session, user.id, sweep_id).table or []
    return Response(plots.sweep_plot(rows), media_type="image/png")


def _view(session: Session, user_id: int, sweep_id: str) -> SweepView:
    return sweep_service.view(session, sweep_service.get_sweep(session, user_id, sweep_id))
