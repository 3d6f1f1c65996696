"""Liveness, readiness (database, Redis, object store) and Prometheus metrics; no auth."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import SettingsDep
from api.errors import error_body
from shared.db import get_engine
from shared.settings import Settings
from shared.store import get_store
from shared.stream import redis_client

router = APIRouter(tags=["health"])


def _database(settings: Settings) -> None:
    with get_engine(settings.database_url).connect() as connection:
        connection.execute(text("SELECT 1"))


def _redis(settings: Settings) -> None:
    redis_client(settings.redis_url).ping()


def _object_store(settings: Settings) -> None:
    get_store(settings).ping()


CHECKS: dict[str, Callable[[Settings], None]] = {
    "database": _database, "redis": _redis, "object_store": _object_store,
}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
def readyz(settings: SettingsDep) -> Any:
    """200 when the database, Redis and the object store answer; else 503 naming the failing ones."""
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check(settings)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        body = error_body("not_ready", f"not ready: {', '.join(failed)} did not answer", failed[0])
        return JSONResponse({**body, "checks": checks}, status_code=503)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", response_class=Response)
def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
