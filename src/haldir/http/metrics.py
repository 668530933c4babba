"""Operator metrics for Prometheus at `GET /metrics` (off unless HALDIR_METRICS=true): requests by route
and status with latency histograms, commit batch sizes, governed calls by decision, and, read from the
store at each scrape, the ledger's size and the webhook backlog. Deployment-wide figures only: no label
carries a tenant, key, session, agent or tool.

With several worker processes (`haldir serve` sets PROMETHEUS_MULTIPROC_DIR for them before they start),
each process writes its counters to files in that directory and a scrape of any worker sums them all."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from haldir.store.sql import SqlStore

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_UNMATCHED = "unmatched"  # requests no route matched: their paths are not labels (unbounded)


def prepare_multiprocess(data_dir: Path) -> None:
    """Before worker processes start: an empty directory for their metric files, named in the environment
    they inherit (files of an earlier run would add its counts to this one's)."""
    directory = data_dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_DIR] = str(directory)


class Metrics:
    """This process's instruments, registered in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "haldir_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "haldir_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batches = Histogram(
            "haldir_store_commit_batch_size",
            "Writes that shared one durable commit (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.calls = Counter(
            "haldir_gateway_calls",
            "Governed tool calls by decision: allowed, or the refusal's error code.",
            ["decision"],
            registry=self.registry,
        )

    def decided(self, decision: str) -> None:
        self.calls.labels(decision).inc()

    def batch_committed(self, size: int) -> None:
        self.batches.observe(size)

    def instruments(self) -> bytes:
        """Every worker process's counts summed (multiprocess mode), else this process's."""
        if MULTIPROCESS_DIR in os.environ:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

    async def exposition(self, store: SqlStore) -> bytes:
        """The text a scrape gets: the instruments, then what the store holds now."""
        current = CollectorRegistry()
        current.register(_Fixed(await _store_gauges(store)))
        return self.instruments() + generate_latest(current)


class MetricsMiddleware:
    """Counts and times each HTTP request under its route's template (`/v1/sessions/{session_id}`)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", _UNMATCHED)
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def scrape(request: Request) -> Response:
        body = await metrics.exposition(request.app.state.store)
        return Response(body, media_type=CONTENT_TYPE)

    return scrape


class _Fixed(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families


async def _store_gauges(store: SqlStore) -> list[GaugeMetricFamily]:
    totals = await store.usage.deployment()
    return [
        GaugeMetricFamily("haldir_ledger_entries", "Ledger entries of every tenant.", value=totals.entries),
        GaugeMetricFamily("haldir_tenants", "Tenants with a ledger.", value=totals.tenants),
        GaugeMetricFamily(
            "haldir_webhook_backlog",
            "Webhook deliveries not yet delivered or given up.",
            value=totals.backlog,
        ),
        GaugeMetricFamily(
            "haldir_approvals_pending", "Approval requests waiting for a decision.", value=totals.pending
        ),
    ]
