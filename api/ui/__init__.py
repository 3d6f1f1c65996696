"""The dashboard, served by the API under /ui: pages rendered on the server (Jinja2, templates in
api/ui/templates) with a small script layer for the live parts (api/static/ui; uPlot vendored in
api/static/vendor). No page loads anything from another host.

    session.py   the signed session cookie, CSRF tokens, `SignedIn` / `CsrfChecked` dependencies
    render.py    templates, `render`, `redirect`, `page_router` (errors of a navigation as pages)
    login.py     /ui/login, /ui/logout
    jobs.py      /ui/jobs, /ui/jobs/{id} (+ its metrics, events, artifacts and cancel)
    compare.py   /ui/compare (2 to 200 jobs' curves, the spec fields that differ) and its metrics
    sweeps.py    /ui/sweeps, /ui/sweeps/{id} (+ its cancel and table downloads)
    submit.py    /ui/submit (a job's form, from the catalog) and the presets it shows
    datasets.py  /ui/datasets, /ui/datasets/{id} (class counts, lineage) and its images as PNGs
    mislabels.py /ui/jobs/{id}/mislabels (a job's suspects, marked; a new version from the marks)

To add a page: in a module of this package, `router = page_router()`; a route takes `visitor:
SignedIn` (or `CsrfChecked` for a form post), reads through the service functions of shared/
with `visitor.user.id` (another user's id answers 404), and returns `render(request,
"NAME.html", visitor, nav=KEY, ...)` of a template that extends base.html. Add its router to
PAGES below, and an entry to render.NAV to show it in the top bar. A region of the page with an
id and `data-live="MS"` is refreshed from the page's own URL every MS milliseconds for as long
as the fresh copy still carries `data-live` (api/static/ui/app.js); charts use
api/static/ui/charts.js.
"""

from fastapi import Request

from api.ui import compare, datasets, jobs, login, mislabels, submit, sweeps
from api.ui.render import page_router
from shared.errors import NotFound

PAGES = [login.router, jobs.router, compare.router, sweeps.router, submit.router, datasets.router,
         mislabels.router]

router = page_router()
for pages in PAGES:
    router.include_router(pages)


@router.get("/{path:path}")
def unknown_page(request: Request, path: str) -> None:
    raise NotFound(f"no dashboard page /ui/{path}; the jobs are at /ui/jobs")
