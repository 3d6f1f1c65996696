"""/ui/jobs/{id}/mislabels: a succeeded job's suspected mislabels as a grid (image, given label
→ predicted label, confidence), filtered by class and paged. The visitor marks each "label is
wrong" or "label is right" (kept in the browser: api/static/ui/mislabels.js), exports the
decisions as CSV (`index,label`, as `noisyfit datasets version ID --changes` reads it), or
makes a new version of the job's data set from them in one click (shared.versions, from the
job: the samples it trained and validated on, with its labels, and the decisions applied).
"""

import json
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import SessionDep, SettingsDep, StoreDep
from api.routes.jobs import JobId
from api.ui.datasets import DatasetFacts, class_names, facts_of, samples_of
from api.ui.render import page_router, redirect, render
from api.ui.session import CsrfChecked, SignedIn, Visitor
from shared import jobs, mislabels, versions
from shared.errors import NoisyfitError, NotFound, ObjectMissing, SpecError
from shared.models import Job, JobStatus
from shared.settings import Settings
from shared.store import ObjectStore
from shared.versions import MAX_CHANGES

router = page_router()
PAGE = 48
Show = Literal["suspects", "all"]


def _dataset(session: SessionDep, visitor: Visitor, job: Job) -> DatasetFacts | None:
    try:
        return facts_of(session, visitor.user.id, job.spec["dataset"])
    except NotFound:  # deleted since the job trained on it
        return None


def _page(request: Request, visitor: Visitor, session: SessionDep, store: ObjectStore, settings: Settings, job: Job,
          label: int | None, show: Show, page: int, *, error: str | None = None, status_code: int = 200) -> Response:
    dataset = _dataset(session, visitor, job)
    samples, missing = None, None
    if job.status != JobStatus.succeeded:
        missing = f"The job is {job.status}: its suspects are scored when it succeeds."
    else:
        try:
            samples = mislabels.read_samples(store, job.id)
        except ObjectMissing:
            missing = "The job has no suspected_mislabels.csv (it finished before noisyfit wrote one)."
    chosen = mislabels.choose(samples or [], label=label, suspects_only=show == "suspects")
    pages = max(1, -(-len(chosen) // PAGE))
    pictures = samples_of(dataset, store, settings) if dataset is not None else None
    num_classes = job.spec["num_classes"]
    names = class_names(pictures, num_classes)
    suspects = [s for s in samples or [] if s.suspect]
    per_class = [sum(s.label == k for s in suspects) for k in range(num_classes)]
    return render(
        request, "mislabels.html", visitor, nav="jobs", status_code=status_code, job=job, dataset=dataset,
        images=pictures is not None, names=names, shown=chosen[(page - 1) * PAGE: page * PAGE], total=len(chosen),
        suspects=len(suspects), per_class=per_class, label=label, show=show, page=page, pages=pages,
        missing=missing, error=error, flagged=bool(samples) and samples[0].flagged is not None,
        page_url=lambda number: f"/ui/jobs/{job.id}/mislabels?" + urlencode(
            {name: value for name, value in {"label": label, "show": show, "page": number}.items() if value is not None}),
    )


@router.get("/jobs/{job_id}/mislabels", response_class=HTMLResponse)
def mislabels_page(request: Request, job_id: JobId, visitor: SignedIn, session: SessionDep, store: StoreDep,
                   settings: SettingsDep, label: Annotated[int | None, Query(ge=0)] = None, show: Show = "suspects",
                   page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    job = jobs.get_job(session, visitor.user.id, job_id)
    return _page(request, visitor, session, store, settings, job, label, show, page)


def parse_decisions(text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """The form's decisions, {"changes": [[index, label], ...], "drop": [index, ...]} as JSON."""
    try:
        data = json.loads(text or "{}")
        changes = [(int(i), int(y)) for i, y in data.get("changes", [])]
        drop = [int(i) for i in data.get("drop", [])]
    except (ValueError, TypeError, AttributeError) as exc:
        raise SpecError(f"the decisions are not {{\"changes\": [[index, label], ...], \"drop\": [index, ...]}} ({exc}); "
                        "reload the page and mark the samples again", "decisions") from exc
    if not changes and not drop:
        raise SpecError("mark at least one sample \"label is wrong\" first", "decisions")
    if len(changes) > MAX_CHANGES or len(drop) > MAX_CHANGES:
        raise SpecError(f"at most {MAX_CHANGES} decisions of each kind at once", "decisions")
    return changes, drop


@router.post("/jobs/{job_id}/mislabels/version")
def make_version(request: Request, job_id: JobId, visitor: CsrfChecked, session: SessionDep, store: StoreDep,
                 settings: SettingsDep, decisions: Annotated[str, Form(max_length=2_000_000)] = "",
                 name: Annotated[str, Form(max_length=200)] = "") -> Response:
    """A new version of the job's data set with the decisions applied; its page follows."""
    job = jobs.get_job(session, visitor.user.id, job_id)
    try:
        changes, drop = parse_decisions(decisions)
        row, _ = versions.create_version(session, visitor.user.id, job.spec["dataset"], store, settings,
                                         name=name.strip() or None, from_job=job.id, changes=changes, drop=drop)
    except NoisyfitError as exc:
        return _page(request, visitor, session, store, settings, job, None, "suspects", 1,
                     error=exc.message, status_code=exc.status)
    return redirect(request, f"/ui/datasets/{row.id}")
