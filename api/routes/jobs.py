"""/v1/jobs: submit, list, inspect and cancel training jobs; read their metrics and artifacts."""

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from api.deps import BearerDep, CurrentUser, FleetDep, SessionDep, SettingsDep, StoreDep, StreamDep
from api.schemas import ArtifactList, ArtifactOut, ErrorOut, JobList, JobOut, MetricsPage
from api.auth import hash_key
from api.sse import event_response
from shared import jobs
from shared.models import JobStatus
from shared.spec import JobSpec
from shared.store import ObjectStore, artifact_key
from shared.stream import CURSOR_FORM

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
JobId = Annotated[str, Path(max_length=64)]
MetricsCursor = Annotated[str | None, Query(description=f"read events after this one: {CURSOR_FORM}")]


@router.post("", status_code=201, response_model=JobOut,
             responses={200: {"model": JobOut, "description": "replay of an Idempotency-Key"},
                        **{code: {"model": ErrorOut} for code in (400, 409, 429, 503)}})
def create_job(
    spec: JobSpec, user: CurrentUser, session: SessionDep, settings: SettingsDep, response: Response, fleet: FleetDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JobOut:
    """Validate, store and enqueue a job (201). Sending the same `Idempotency-Key` and spec
    again returns the same job with 200 and `Idempotent-Replayed: true`; another spec, 409."""
    job, created = jobs.create_job(session, user.id, spec, settings, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return JobOut.of(job, fleet)


@router.get("", response_model=JobList)
def list_jobs(
    user: CurrentUser, session: SessionDep, fleet: FleetDep,
    status: JobStatus | None = None,
    dataset: Annotated[str | None, Query(max_length=64, description="jobs on this data set")] = None,
    loss: Annotated[str | None, Query(max_length=64, description="jobs with this loss (nce+rce)")] = None,
    cursor: Annotated[str | None, Query(description="the `next` value of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    """Your jobs, newest first; pass `next` back as `cursor` for the following page (with the same filters)."""
    page, next_cursor = jobs.list_jobs(session, user.id, status=status, dataset=dataset, loss=loss, cursor=cursor,
                                       limit=limit)
    return JobList(jobs=[JobOut.of(job, fleet) for job in page], next=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, user: CurrentUser, session: SessionDep, fleet: FleetDep) -> JobOut:
    return JobOut.of(jobs.get_job(session, user.id, job_id), fleet)


@router.delete("/{job_id}", status_code=204, response_class=Response,
               responses={409: {"model": ErrorOut}, 503: {"model": ErrorOut}})
def delete_job(job_id: JobId, user: CurrentUser, session: SessionDep, store: StoreDep, stream: StreamDep) -> Response:
    """Delete a finished job with its artifacts and metrics (409 while it is queued or running)."""
    jobs.delete_job(session, user.id, job_id, store=store, stream=stream)
    return Response(status_code=204)


@router.post("/{job_id}/cancel", response_model=JobOut, responses={409: {"model": ErrorOut}})
def cancel_job(job_id: JobId, user: CurrentUser, session: SessionDep, settings: SettingsDep,
               fleet: FleetDep) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its worker's next check
    (`cancel_requested` is true until then)."""
    return JobOut.of(jobs.request_cancel(session, user.id, job_id, settings), fleet)


@router.get("/{job_id}/metrics", response_model=MetricsPage, responses={503: {"model": ErrorOut}})
def get_job_metrics(
    job_id: JobId, user: CurrentUser, session: SessionDep, stream: StreamDep, store: StoreDep,
    after: MetricsCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MetricsPage:
    """Metric events after the cursor `after` (an event's `id`), oldest first."""
    jobs.get_job(session, user.id, job_id)
    events, next_cursor = jobs.read_metrics(job_id, after, limit, stream=stream, store=store)
    return MetricsPage(events=events, next=next_cursor)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 503: {"model": ErrorOut}})
def stream_job_events(
    job_id: JobId, user: CurrentUser, session: SessionDep, stream: StreamDep, store: StoreDep,
    settings: SettingsDep, credentials: BearerDep,
    after: MetricsCursor = None,
    last_event_id: Annotated[str | None, Header(description="resume after this event's `id`")] = None,
) -> StreamingResponse:
    """The metric events as Server-Sent Events, live; resume with `Last-Event-ID`. Ends after `done`,
    or with an `event: refused` carrying the error once your key is revoked."""
    job = jobs.get_job(session, user.id, job_id)
    assert credentials is not None  # CurrentUser checked them
    return event_response(job, after, last_event_id, hash_key(credentials.credentials),
                          stream=stream, store=store, settings=settings)


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses={503: {"model": ErrorOut}})
def list_artifacts(job_id: JobId, user: CurrentUser, session: SessionDep, store: StoreDep) -> ArtifactList:
    job = jobs.get_job(session, user.id, job_id)
    return ArtifactList(artifacts=[
        ArtifactOut(name=o.name, size=o.size, last_modified=o.last_modified) for o in store.list_artifacts(job.id)
    ])


@router.get("/{job_id}/artifacts/{name}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 307: {"description": "presigned URL"},
                       503: {"model": ErrorOut}})
def download_artifact(
    job_id: JobId, name: Annotated[str, Path(max_length=128)], user: CurrentUser, session: SessionDep,
    store: StoreDep, redirect: bool = False,
) -> Response:
    """The artifact's bytes, streamed; with `?redirect=true`, a 307 to a short-lived presigned URL."""
    return artifact_response(store, jobs.get_job(session, user.id, job_id).id, name, redirect=redirect)


def artifact_response(store: ObjectStore, job_id: str, name: str, *, redirect: bool = False) -> Response:
    """An artifact of a job the caller may read (the API's download, the dashboard's links)."""
    key = artifact_key(job_id, name)
    info = store.stat(key)
    if redirect:
        return RedirectResponse(store.presigned_get(key), status_code=307)
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return StreamingResponse(store.iter_bytes(key), media_type=media_type, headers={
        "Content-Length": str(info.size), "Content-Disposition": f'attachment; filename="{name}"',
    })
