"""/ui/compare: 2 to 200 jobs' curves overlaid, and the spec fields that differ between them.

Jobs are chosen by `ids` (repeated, or comma-separated: the jobs list's checkboxes send them)
or by `sweep` (its first 200 jobs). The page's script reads the curves of all the jobs at once
from /ui/compare/metrics (shared.compare: one bounded answer).
"""

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import SessionDep, StoreDep, StreamDep
from api.ui.jobs import noise_label, show
from api.ui.render import page_router, render
from api.ui.session import SignedIn
from shared import compare, sweep_service
from shared.errors import SpecError
from shared.models import ACTIVE, FINISHED, Job
from shared.spec import flat_spec

router = page_router()
LIVE_MS = 5000  # how often the charts ask again while a compared job is queued or running
LABEL_FIELDS = 3  # differing fields named in a line's label
DERIVED = {"loss_terms", "num_classes"}  # follow from other fields: never the reason two jobs differ
Ids = Annotated[list[str], Query(max_length=compare.MAX_JOBS)]
SweepRef = Annotated[str | None, Query(max_length=64)]


@dataclass(frozen=True)
class Compared:
    job: Job
    label: str  # the line's name: its values of the first differing fields
    values: list[str]  # its value of each differing field


def _chosen(session: SessionDep, user_id: int, ids: list[str], sweep: str | None) -> tuple[list[str], str | None]:
    """The ids to compare, and a note when a sweep had more jobs than a compare shows."""
    if sweep:
        if ids:
            raise SpecError("compare either the jobs of `ids` or those of `sweep`, not both", "sweep")
        chosen, total = compare.sweep_jobs(session, sweep_service.get_sweep(session, user_id, sweep).id)
        note = f"The sweep has {total} jobs; the first {len(chosen)} are compared." if total > len(chosen) else None
        return compare.parse_ids(chosen), note
    return compare.parse_ids(ids), None


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, visitor: SignedIn, session: SessionDep, ids: Ids = [],
                 sweep: SweepRef = None) -> Response:
    if not ids and not sweep:
        return render(request, "compare.html", visitor, nav="jobs", rows=[])
    chosen, note = _chosen(session, visitor.user.id, ids, sweep)
    jobs = compare.load_jobs(session, visitor.user.id, chosen)
    specs = [job.spec for job in jobs]
    fields = [name for name in compare.differing_fields(specs) if name not in DERIVED]
    flats = [flat_spec(spec) for spec in specs]
    rows = [Compared(job, _label(flat, fields, job.id), [show(flat.get(name, "–")) for name in fields])
            for job, flat in zip(jobs, flats)]
    shared = [(name, show(value)) for name, value in flats[0].items()
              if name not in fields and name not in DERIVED and value != []]
    return render(
        request, "compare.html", visitor, nav="jobs", rows=rows, fields=fields, shared=shared, note=note,
        noise_label=noise_label, metrics_url="/ui/compare/metrics?" + urlencode({"ids": ",".join(chosen)}),
        active=any(job.status in ACTIVE for job in jobs), live_ms=LIVE_MS, max_points=compare.MAX_POINTS,
    )


def _label(flat: dict[str, Any], fields: list[str], job_id: str) -> str:
    parts = [f"{name} {show(flat.get(name, '–'))}" for name in fields[:LABEL_FIELDS]]
    return ", ".join(parts) if parts else job_id


@router.get("/compare/metrics")
def compare_metrics(visitor: SignedIn, session: SessionDep, stream: StreamDep, store: StoreDep,
                    ids: Ids = []) -> dict[str, Any]:
    """The compared jobs' curves on shared epochs (shared.compare.align), and whether any job is
    still queued or running (the page then asks again); nothing for no ids."""
    if not ids:
        return {"epochs": [], "jobs": [], "active": False}
    jobs = compare.load_jobs(session, visitor.user.id, compare.parse_ids(ids))
    curves = compare.read_curves([(job.id, job.status in FINISHED) for job in jobs], stream=stream, store=store)
    return {**compare.align(curves), "active": any(job.status in ACTIVE for job in jobs)}
