"""The dashboard, served by the API under /ui: pages rendered on the server (Jinja2, templates in
api/ui/templates) with a small script layer for the live parts (api/static/ui; uPlot vendored in
api/static/vendor). No page loads anything from another host.

    session.py   the signed session cookie, CSRF tokens, `SignedIn` / `CsrfChecked` dependencies
    render.py    templates, `render`, `redirect`, `page_router` (errors of a navigation as pages)
    login.py     /ui/login, /ui/logout
    jobs.py      /ui/jobs, /ui/jobs/{id} (+ its metrics, events, artifacts and cancel)

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

from api.ui import jobs, login
from api.ui.render import page_router
from shared.errors import NotFound

PAGES = [login.router, jobs.router]

router = page_router()
for pages in PAGES:
    router.include_router(pages)


@router.get("/{path:path}")
def unknown_page(request: Request, path: str) -> None:
    raise NotFound(f"no dashboard page /ui/{path}; the jobs are at /ui/jobs")
