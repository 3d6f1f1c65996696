"""Prometheus metrics of the API: request latency, and at scrape time jobs by state, queue depth,
and the live workers with their slots (shared.workers)."""

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import get_engine
from shared.jobs import count_by_status
from shared.queue import queue_key
from shared.settings import Settings
from shared.stream import redis_client
from shared.workers import read_fleet

log = logging.getLogger(__name__)


class ServiceCollector(Collector):
    """Reads the database and Redis when scraped; a part that does not answer is left out."""

    def __init__(self, settings: Callable[[], Settings]):
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        settings = self.settings()
        try:
            with Session(get_engine(settings.database_url)) as session:
                counts = count_by_status(session)
            jobs = GaugeMetricFamily("noisyfit_jobs", "Jobs by state", labels=["status"])
            for status, n in sorted(counts.items()):
                jobs.add_metric([status], n)
            yield jobs
        except Exception:
            log.exception("metrics: the database did not answer")
        try:
            depth = redis_client(settings.redis_url).llen(queue_key(settings))
            yield GaugeMetricFamily("noisyfit_queue_depth", "Train tasks waiting in the queue", value=depth)
            fleet = read_fleet(settings)
            yield GaugeMetricFamily("noisyfit_workers", "Live workers", value=len(fleet.workers))
            slots = GaugeMetricFamily("noisyfit_worker_slots", "Jobs the live workers run at once at most (total) "
                                      "and now (busy)", labels=["state"])
            slots.add_metric(["total"], fleet.slots)
            slots.add_metric(["busy"], fleet.busy)
            yield slots
        except Exception:
            log.exception("metrics: Redis did not answer")


def make_registry(settings: Callable[[], Settings]) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    latency = Histogram(
        "noisyfit_http_request_duration_seconds", "HTTP request latency",
        ["method", "route", "status"], registry=registry,
    )
    registry.register(ServiceCollector(settings))
    return registry, latency


class LatencyMiddleware:
    """Observes every request's duration, labelled by route template (not the raw path)."""

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)
