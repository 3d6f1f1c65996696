"""Rendering the dashboard: the Jinja2 templates, the page router, and errors as pages.

`page_router()` makes an APIRouter whose routes answer a browser's navigation (`Accept:
text/html`) with an HTML page when they fail: a 401 leads to the sign-in page (and back), any
other error is a page with its message. Requests that are not navigations (the fetches and
event streams of the page scripts) get the API's JSON error instead.
"""

import hashlib
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.exceptions import HTTPException

from api.errors import error_parts
from api.ui.session import Visitor
from shared.errors import NoisyfitError, Unauthorized

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parents[1] / "static"

# The pages named in the top bar: (key, path, label); a page passes its key as `nav`.
NAV = [("jobs", "/ui/jobs", "Jobs"), ("sweeps", "/ui/sweeps", "Sweeps"), ("submit", "/ui/submit", "Submit"),
       ("datasets", "/ui/datasets", "Data sets")]

# Every asset comes from this host; the scripts reach only this host; no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@lru_cache
def _fingerprint(path: str) -> str:
    return hashlib.sha256((STATIC / path).read_bytes()).hexdigest()[:12]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "–"


def _percent(value: Any, digits: int = 1) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    return f"{100 * value:.{digits}f} %"


def _short(value: Any) -> str:
    """A number as the dashboard's scripts write it (10.0 as 10, 0.00010 as 0.0001); other values as they are."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return "–" if value is None else str(value)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, percent=_percent, short=_short)
    env.globals.update(NAV=NAV)
    return env


ENVIRONMENT = _environment()


def root_path(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def render(request: Request, template: str, visitor: Visitor | None, *, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """A page: `template` with the visitor (None before signing in) and `context`."""
    root = root_path(request)

    def static(path: str) -> str:
        return f"{root}/static/{path}?v={_fingerprint(path)}"

    html = ENVIRONMENT.get_template(template).render(
        request=request, root=root, static=static, visitor=visitor, nav=context.pop("nav", None), **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 See Other to a dashboard path (after a form post, or to the sign-in page)."""
    return RedirectResponse(root_path(request) + path, status_code=303)


def wants_page(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Unauthorized):
        here = request.url.path.removeprefix(root_path(request))
        if request.url.query:
            here += "?" + request.url.query
        return redirect(request, f"/ui/login?next={quote(here, safe='')}")
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0]
        status, code = 422, "validation_error"
        message = f"{'.'.join(str(p) for p in first['loc'][1:])}: {first['msg']}"
    else:
        status, code, message, _field, _headers = error_parts(exc)
    return render(request, "error.html", None, status_code=status, status=status, code=code, message=message)


class PageRoute(APIRoute):
    """A dashboard route: errors of a browser's navigation become pages (see the module's docstring)."""

    def get_route_handler(self):  # type: ignore[no-untyped-def]
        handle = super().get_route_handler()

        async def handle_page(request: Request) -> Response:
            try:
                return await handle(request)
            except (NoisyfitError, HTTPException, RequestValidationError) as exc:
                if not wants_page(request):
                    raise
                return error_page(request, exc)

        return handle_page


def page_router() -> APIRouter:
    """The router of a group of dashboard pages (api/ui/__init__.py includes it under /ui)."""
    return APIRouter(route_class=PageRoute, include_in_schema=False)
