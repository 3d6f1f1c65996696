"""/ui/login and /ui/logout: signing in with an API key, and out."""

from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from api.auth import find_live_key
from api.deps import SessionDep, SettingsDep
from api.ui.render import page_router, redirect, render
from api.ui.session import (
    CsrfChecked, UiSession, check_csrf, clear_session_cookie, csrf_token, read_session, set_session_cookie,
    signed_in, signing_key,
)
from shared.errors import CsrfRejected, SignInRequired

router = page_router()
HOME = "/ui/jobs"


def _next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


@router.get("/")
def home(request: Request) -> Response:
    return redirect(request, HOME)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, session: SessionDep, settings: SettingsDep, next: str | None = None) -> Response:
    try:
        signed_in(request, session, settings)
        return redirect(request, _next(next))
    except SignInRequired:
        pass
    ui = read_session(request, settings)
    return _form(request, settings, ui if ui is not None and ui.key_id is None else UiSession.fresh(), next)


def _form(request: Request, settings: SettingsDep, ui: UiSession, next: str | None, *,
          error: str | None = None, status_code: int = 200) -> Response:
    response = render(request, "login.html", None, status_code=status_code, error=error, next=_next(next),
                      csrf=csrf_token(ui, signing_key(settings)))
    set_session_cookie(response, request, ui, settings)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, session: SessionDep, settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Check the key; a good one starts a session (a new nonce) and leads on, a bad one shows the form again."""
    ui = read_session(request, settings)
    try:
        check_csrf(ui, csrf_token, signing_key(settings))
    except CsrfRejected as exc:
        return _form(request, settings, UiSession.fresh(), next, error=exc.message, status_code=exc.status)
    assert ui is not None
    key = find_live_key(session, api_key.strip()) if api_key.strip() else None
    if key is None:
        error = ("enter your API key" if not api_key.strip()
                 else "this API key is unknown or revoked; check it, or ask an admin for a new one")
        return _form(request, settings, ui, next, error=error, status_code=401)
    response = redirect(request, _next(next))
    set_session_cookie(response, request, ui.signed_in_as(key.id), settings)
    return response


@router.post("/logout")
def logout(request: Request, visitor: CsrfChecked) -> Response:
    response = redirect(request, "/ui/login")
    clear_session_cookie(response)
    return response
