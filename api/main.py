"""The FastAPI application: `uvicorn api.main:app`. Never imports torch."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlmodel import Session

from api import errors
from api.limits import BodySizeLimit, JsonDepthLimit
from api.metrics import LatencyMiddleware, make_registry
from api import ui
from api.routes import catalog, datasets, docs, health, jobs, keys, sweeps
from shared.db import get_engine, init_db
from shared.jobs import requeue_stale, resend_waiting
from shared.settings import Settings, get_settings
from shared.errors import StoreUnavailable
from shared.store import get_store

log = logging.getLogger(__name__)

ROUTERS = [health.router, docs.router, keys.router, catalog.router, jobs.router, sweeps.router, datasets.router]


def current_settings(app: FastAPI) -> Settings:
    """The settings the app runs with: get_settings(), unless a test overrides it."""
    return app.dependency_overrides.get(get_settings, get_settings)()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings = current_settings(app)
    init_db(get_engine(settings.database_url))
    try:
        get_store(settings).ensure_bucket()
    except StoreUnavailable:
        log.warning("the object store does not answer; artifacts are unavailable until it does (see /readyz)")
    reaper = asyncio.create_task(_reap(settings)) if settings.reaper_interval_s > 0 else None
    yield
    if reaper is not None:
        reaper.cancel()
        with suppress(asyncio.CancelledError):
            await reaper


async def _reap(settings: Settings) -> None:
    """Requeue running jobs whose worker died (their lease lapsed), and re-send queued jobs whose
    message may be lost; safe with many API replicas."""
    def once() -> None:
        with Session(get_engine(settings.database_url)) as session:
            requeued = requeue_stale(session, settings)
            resent = resend_waiting(session, settings)
        if requeued:
            log.info("requeued %d jobs whose lease lapsed: %s", len(requeued), requeued)
        if resent:
            log.info("re-sent %d queued jobs that no worker took in %gs: %s", len(resent), settings.resend_after_s,
                     resent)

    while True:
        await asyncio.sleep(settings.reaper_interval_s)
        try:
            await run_in_threadpool(once)
        except Exception:
            log.exception("requeueing stale jobs or re-sending waiting ones failed; trying again later")


def operation_id(route: APIRoute) -> str:
    """The route function's name (`create_job`), not FastAPI's default with the path and method in it."""
    return route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="noisyfit", version="1.0",
        description="Training as a service for learning with noisy labels (Ma et al., ICML 2020).",
        lifespan=lifespan, docs_url=None, redoc_url=None, generate_unique_id_function=operation_id,
    )
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    errors.install(app)
    app.state.registry, latency = make_registry(lambda: app.state.settings)
    app.add_middleware(JsonDepthLimit)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(LatencyMiddleware, histogram=latency)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(ui.router, prefix="/ui")
    app.mount(docs.STATIC_URL, docs.static_files(), name="static")
    return app


app = create_app()
