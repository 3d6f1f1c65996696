"""/ui/sweeps: the sweeps list and a sweep's page: its progress; the mean ± std table as a grid
(a line per loss, a column per value of the swept field, as shared.sweeps.table_markdown lays
it out), each cell coloured by its accuracy and linking to its jobs, the best cell marked; the
choice by noisy validation; a chart of accuracy against the swept value (api/static/ui/sweep.js
reads it from the grid). The table downloads as CSV or Markdown."""

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import SessionDep, SettingsDep
from api.routes.sweeps import TABLE_TYPES
from api.ui.jobs import show
from api.ui.render import page_router, redirect, render
from api.ui.session import CsrfChecked, SignedIn
from shared import sweep_service
from shared.models import FINISHED
from shared.sweeps import (
    Layout, Row, describe_recommendation, layout, mean_std, swept_field, table_csv, table_markdown,
)

router = page_router()
LIVE_MS = 3000
LISTED = 100  # the newest sweeps the list shows
HEAT_STEPS = 10  # colour classes heat-0 … heat-9 in app.css, from the lowest mean of the grid to the highest
SweepId = Annotated[str, Path(max_length=64)]


@dataclass(frozen=True)
class GridCell:
    row: Row | None  # None: the grid has no such cell
    heat: int | None  # HEAT_STEPS classes; None without a mean
    best: bool  # the sweep's best (shared.sweeps.best: by noisy validation, else by test)
    column_best: bool  # the highest mean of its column
    link: str | None  # its one job, or a compare of its runs


def _progress(counts: dict[str, int]) -> tuple[int, int]:
    return sum(counts[status] for status in FINISHED), sum(counts.values())


def _grid_text(grid: dict[str, Any]) -> str:
    return " × ".join(f"{len(values)} {name}" for name, values in grid.items())


@router.get("/sweeps", response_class=HTMLResponse)
def sweeps_page(request: Request, visitor: SignedIn, session: SessionDep) -> Response:
    views = sweep_service.list_sweeps(session, visitor.user.id, limit=LISTED)
    return render(request, "sweeps.html", visitor, nav="sweeps", views=views, progress=_progress,
                  grid_text=_grid_text, listed=LISTED, live=any(v.status in ("queued", "running") for v in views),
                  live_ms=LIVE_MS)


def _heat(mean: float | None, low: float, high: float) -> int | None:
    if mean is None:
        return None
    if high <= low:
        return HEAT_STEPS - 1
    return min(HEAT_STEPS - 1, int((mean - low) / (high - low) * HEAT_STEPS))


def _link(row: Row) -> str | None:
    ids = [run["id"] for run in row["runs"]]
    if len(ids) == 1:
        return f"/ui/jobs/{ids[0]}"
    return "/ui/compare?" + urlencode({"ids": ",".join(ids)}) if len(ids) >= 2 else None


def grid_cells(grid: Layout, best_cell: dict[str, Any] | None) -> list[tuple[str, list[GridCell]]]:
    """Each line of the layout: its label, and its cells coloured, marked and linked."""
    means = [row["mean"] for _, line in grid.lines for row in line if row is not None and row["mean"] is not None]
    low, high = (min(means), max(means)) if means else (0.0, 0.0)
    lines = []
    for label, line in grid.lines:
        cells = [GridCell(row, _heat(row["mean"], low, high) if row else None,
                          row is not None and best_cell is not None and row["cell"] == best_cell,
                          row is not None and row["mean"] is not None and row["mean"] == best and len(grid.lines) > 1,
                          _link(row) if row else None)
                 for row, best in zip(line, grid.best)]
        lines.append((", ".join("preset" if value is None else show(value) for value in label) or _loss_of(line),
                      cells))
    return lines


def _loss_of(line: list[Row | None]) -> str:
    """A line without label fields: the loss its runs resolved to."""
    resolved = next((row["resolved"] for row in line if row is not None and row.get("resolved")), None)
    return str(resolved["loss"]) if resolved else "all runs"


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(request: Request, sweep_id: SweepId, visitor: SignedIn, session: SessionDep) -> Response:
    view = sweep_service.view(session, sweep_service.get_sweep(session, visitor.user.id, sweep_id))
    rows = view.table or []
    summary = view.summary or {}
    grid = layout(rows, swept_field(view.sweep.grid))
    recommendation = summary.get("recommendation")
    return render(
        request, "sweep.html", visitor, nav="sweeps", view=view, grid=grid,
        lines=grid_cells(grid, (summary.get("best") or {}).get("cell")),
        constant=[(name, show(rows[0]["cell"].get(name))) for name in grid.constant] if rows else [],
        best=summary.get("best"), recommendation=describe_recommendation(recommendation) if recommendation else None,
        tau=summary.get("validation_test_kendall_tau"), show=show, mean_std=mean_std, progress=_progress(view.counts),
        validation=any(row.get("val_mean") is not None for row in rows),
        active=view.status in ("queued", "running"), live_ms=LIVE_MS,
    )


@router.post("/sweeps/{sweep_id}/cancel")
def cancel_sweep(request: Request, sweep_id: SweepId, visitor: CsrfChecked, session: SessionDep,
                 settings: SettingsDep) -> Response:
    sweep_service.cancel_sweep(session, visitor.user.id, sweep_id, settings)
    return redirect(request, f"/ui/sweeps/{sweep_id}")


@router.get("/sweeps/{sweep_id}/table")
def sweep_table(sweep_id: SweepId, visitor: SignedIn, session: SessionDep,
                format: Literal["csv", "markdown"] = "csv") -> Response:
    """GET /v1/sweeps/{id}/table?format=csv|markdown, as a download."""
    rows = sweep_service.view(session, sweep_service.get_sweep(session, visitor.user.id, sweep_id)).table or []
    text = table_csv(rows) if format == "csv" else table_markdown(rows)
    name = f"{sweep_id}.{'csv' if format == 'csv' else 'md'}"
    return Response(text, media_type=TABLE_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})

