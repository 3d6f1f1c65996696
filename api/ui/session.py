"""The dashboard's sign-in: a signed session cookie, and the CSRF token tied to it.

The cookie (`noisyfit_session`, HttpOnly, SameSite=Strict, path /ui) never holds the key. It
holds `{"n": nonce, "k": key id, "t": signed-in at}` as base64url JSON, then a dot and its
HMAC-SHA256 under the server's secret (settings.session_secret; else one derived from the admin
token; else a random one per process). A visitor who has not signed in has a nonce only: the
sign-in form's CSRF token needs one. Each request looks the key up again, so a revoked key's
session ends at once; a session also ends settings.session_ttl_s after signing in.

Every form that changes state posts `csrf_token`: an HMAC of the session's nonce, so it is
good for that session only; signing in starts a new nonce.
"""

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Form, Request, Response

from api.deps import SessionDep, SettingsDep
from shared.errors import CsrfRejected, SignInRequired
from shared.models import ApiKey, User
from shared.settings import Settings

log = logging.getLogger(__name__)

COOKIE = "noisyfit_session"
COOKIE_PATH = "/ui"
CLOCK_SKEW_S = 60  # a session signed this far in the future (another replica's clock) still counts


@dataclass(frozen=True)
class UiSession:
    nonce: str
    key_id: int | None = None  # None until the visitor signs in
    issued: int = 0  # unix seconds of signing in

    @classmethod
    def fresh(cls) -> "UiSession":
        return cls(secrets.token_hex(16))

    def signed_in_as(self, key_id: int) -> "UiSession":
        """A new session (new nonce, so old forms' tokens stop working) for this key."""
        return UiSession(secrets.token_hex(16), key_id, int(time.time()))


@lru_cache
def _process_secret() -> bytes:
    log.warning("neither NOISYFIT_SESSION_SECRET nor NOISYFIT_ADMIN_TOKEN is set: dashboard sessions are "
                "signed with a random secret and end when this process stops")
    return secrets.token_bytes(32)


def signing_key(settings: Settings) -> bytes:
    secret = settings.session_secret or settings.admin_token
    if not secret:
        return _process_secret()
    return hmac.new(secret.encode(), b"noisyfit dashboard sessions", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: bytes) -> str:
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def encode(session: UiSession, key: bytes) -> str:
    fields: dict[str, object] = {"n": session.nonce}
    if session.key_id is not None:
        fields |= {"k": session.key_id, "t": session.issued}
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    return f"{payload}.{_mac(key, payload.encode())}"


def decode(value: str | None, key: bytes, ttl_s: int, now: float | None = None) -> UiSession | None:
    """The session a cookie carries; None for a missing, tampered, malformed or expired one."""
    if not value or len(value) > 512 or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    if not hmac.compare_digest(mac, _mac(key, payload.encode())):
        return None
    try:
        fields = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        return None
    nonce, key_id, issued = fields.get("n"), fields.get("k"), fields.get("t", 0)
    if not isinstance(nonce, str) or not isinstance(issued, int):
        return None
    if key_id is None:
        return UiSession(nonce)
    now = time.time() if now is None else now
    if not isinstance(key_id, int) or not now - ttl_s <= issued <= now + CLOCK_SKEW_S:
        return None
    return UiSession(nonce, key_id, issued)


def csrf_token(session: UiSession, key: bytes) -> str:
    return _mac(key, b"csrf " + session.nonce.encode())


def check_csrf(session: UiSession | None, token: str, key: bytes) -> None:
    if session is None or not token or not hmac.compare_digest(token, csrf_token(session, key)):
        raise CsrfRejected("this form's security token is missing or stale; reload the page and send it again")


def read_session(request: Request, settings: Settings) -> UiSession | None:
    return decode(request.cookies.get(COOKIE), signing_key(settings), settings.session_ttl_s)


def set_session_cookie(response: Response, request: Request, session: UiSession, settings: Settings) -> None:
    signed_in = session.key_id is not None
    response.set_cookie(
        COOKIE, encode(session, signing_key(settings)), path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", max_age=settings.session_ttl_s if signed_in else None,
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


@dataclass(frozen=True)
class Visitor:
    """A signed-in visitor of the dashboard: who, with which key, and their forms' CSRF token."""

    user: User
    key: ApiKey
    session: UiSession
    csrf: str


def signed_in(request: Request, session: SessionDep, settings: SettingsDep) -> Visitor:
    ui = read_session(request, settings)
    if ui is None or ui.key_id is None:
        raise SignInRequired("sign in with your API key at /ui/login")
    key = session.get(ApiKey, ui.key_id)
    if key is None or key.revoked_at is not None:
        raise SignInRequired("the API key of this session was revoked; sign in with a live key")
    user = session.get(User, key.user_id)
    if user is None:
        raise SignInRequired("the user of this session is gone; sign in again")
    return Visitor(user, key, ui, csrf_token(ui, signing_key(settings)))


SignedIn = Annotated[Visitor, Depends(signed_in)]


def csrf_checked(visitor: SignedIn, settings: SettingsDep,
                 csrf_token: Annotated[str, Form(max_length=128)] = "") -> Visitor:
    """The visitor of a form post whose CSRF token belongs to their session."""
    check_csrf(visitor.session, csrf_token, signing_key(settings))
    return visitor


CsrfChecked = Annotated[Visitor, Depends(csrf_checked)]
