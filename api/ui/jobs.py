"""/ui/jobs: the jobs list and a job's page, with what their scripts read (metrics, the event
stream, artifacts) under the same paths as the API's, authenticated by the session cookie."""

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Header, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from api.deps import FleetDep, SessionDep, SettingsDep, StoreDep, StreamDep
from api.routes.jobs import JobId, MetricsCursor, artifact_response
from api.schemas import MetricsPage
from api.sse import event_response
from api.ui.render import page_router, redirect, render
from api.ui.session import CsrfChecked, SignedIn
from shared import jobs
from shared.catalog import DATASETS, LOSS_PRESETS, LOSSES
from shared.dataset_service import list_datasets
from shared.errors import SpecError, StoreUnavailable
from shared.models import ACTIVE, FINISHED, Job, JobStatus
from shared.spec import flat_spec

router = page_router()
PAGE_SIZE = 50
LIVE_MS = 3000  # how often the jobs list asks again while a listed job is queued or running
Filter = Annotated[str | None, Query(max_length=64)]
# What the loss filter suggests: every single loss, and every combination a preset names.
LOSS_NAMES = sorted(set(LOSSES) | {name for presets in LOSS_PRESETS.values() for name in presets})


@dataclass(frozen=True)
class SpecRow:
    name: str  # dotted, as a sweep grid names it
    value: str
    preset: str | None  # the paper preset's value where it differs; None where it is the same or unknown

    @property
    def differs(self) -> bool:
        return self.preset is not None


def show(value: Any) -> str:
    """A spec value as the page shows it: JSON's spelling, numbers short."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value)


def noise_label(spec: dict[str, Any]) -> str:
    noise = spec.get("noise") or {}
    kind = noise.get("type", "none")
    return kind if kind in ("none", "transition") else f"{kind} {100 * noise.get('rate', 0):g} %"


def spec_rows(spec: dict[str, Any], preset: dict[str, Any] | None) -> list[SpecRow]:
    """The spec's fields (an empty one, such as the matrix of non-transition noise, left out),
    each with the preset's value where that differs."""
    ours, theirs = flat_spec(spec), flat_spec(preset) if preset is not None else None
    return [SpecRow(name, show(value),
                    show(theirs.get(name)) if theirs is not None and theirs.get(name) != value else None)
            for name, value in ours.items() if value != []]


def _list_url(filters: dict[str, str], cursor: str | None = None) -> str:
    query = urlencode({name: value for name, value in {**filters, "cursor": cursor}.items() if value})
    return "/ui/jobs" + (f"?{query}" if query else "")


def _status(value: str | None) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise SpecError(f"unknown status {value!r}; choose one of: {', '.join(JobStatus)}", "status") from None


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, visitor: SignedIn, session: SessionDep,
    status: Filter = None, dataset: Filter = None, loss: Filter = None,
    cursor: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    """The visitor's jobs, newest first, PAGE_SIZE a page (the API's keyset cursor), filtered."""
    filters = {"status": status or "", "dataset": dataset or "", "loss": loss or ""}
    page, next_cursor = jobs.list_jobs(session, visitor.user.id, status=_status(status), dataset=dataset or None,
                                       loss=loss or None, cursor=cursor or None, limit=PAGE_SIZE)
    datasets = [(name, name) for name in DATASETS] + [
        (row.id, f"{row.name} ({row.id})") for row in list_datasets(session, visitor.user.id)]
    return render(
        request, "jobs.html", visitor, nav="jobs", jobs=page, filters=filters, noise_label=noise_label,
        newest_url=_list_url(filters) if cursor else None,
        older_url=_list_url(filters, next_cursor) if next_cursor else None,
        statuses=list(JobStatus), datasets=datasets, losses=LOSS_NAMES,
        live=any(job.status in ACTIVE for job in page), live_ms=LIVE_MS,
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: JobId, visitor: SignedIn, session: SessionDep, store: StoreDep,
             fleet: FleetDep) -> Response:
    job = jobs.get_job(session, visitor.user.id, job_id)
    try:
        artifacts = store.list_artifacts(job.id)
    except StoreUnavailable:
        artifacts = None
    waiting_for = fleet.waiting_for(job.spec["dataset"]) if fleet is not None and job.status == "queued" else None
    return render(
        request, "job.html", visitor, nav="jobs", job=job, finished=job.status in FINISHED,
        active=job.status in ACTIVE, waiting_for=waiting_for, noise_label=noise_label,
        spec_rows=spec_rows(job.spec, jobs.preset_spec(session, job)), artifacts=artifacts,
        spec_json=json.dumps(_resubmittable(job), indent=2),
    )


def _resubmittable(job: Job) -> dict[str, Any]:
    """The stored spec as POST /v1/jobs takes it again (without what resolution derives)."""
    spec = {k: v for k, v in job.spec.items() if k not in ("num_classes", "loss_terms")}
    spec["noise"] = {k: v for k, v in spec["noise"].items() if k != "matrix" or v}
    return spec


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: JobId, visitor: CsrfChecked, session: SessionDep,
               settings: SettingsDep) -> Response:
    jobs.request_cancel(session, visitor.user.id, job_id, settings)
    return redirect(request, f"/ui/jobs/{job_id}")


@router.get("/jobs/{job_id}/metrics", response_model=MetricsPage)
def job_metrics(job_id: JobId, visitor: SignedIn, session: SessionDep, stream: StreamDep, store: StoreDep,
                after: MetricsCursor = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> MetricsPage:
    """GET /v1/jobs/{id}/metrics for the page's charts."""
    jobs.get_job(session, visitor.user.id, job_id)
    events, next_cursor = jobs.read_metrics(job_id, after, limit, stream=stream, store=store)
    return MetricsPage(events=events, next=next_cursor)


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
def job_events(
    job_id: JobId, visitor: SignedIn, session: SessionDep, stream: StreamDep, store: StoreDep,
    settings: SettingsDep, after: MetricsCursor = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """GET /v1/jobs/{id}/events for the page's charts; it ends once the session's key is revoked."""
    job = jobs.get_job(session, visitor.user.id, job_id)
    return event_response(job, after, last_event_id, visitor.key.hash, stream=stream, store=store, settings=settings)


@router.get("/jobs/{job_id}/artifacts/{name}")
def download_artifact(job_id: JobId, name: Annotated[str, Path(max_length=128)], visitor: SignedIn,
                      session: SessionDep, store: StoreDep) -> Response:
    return artifact_response(store, jobs.get_job(session, visitor.user.id, job_id).id, name)
