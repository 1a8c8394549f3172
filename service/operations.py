"""Operations endpoints: `/healthz` (the database answers) and `/metrics` (Prometheus text)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.models import Scope as TokenScope
from service.deps import ANONYMOUS, SessionDep, SettingsDep, current_principal, require_scope
from service.predictors.features import cache_stats
from service.problems import UnauthorizedError, UnavailableError, problem_responses

router = APIRouter(tags=["operations"])


class RequestMetrics:
    """Per-app Prometheus collectors (a registry of its own, so several apps in one process don't clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "latfarm_http_requests_total",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "latfarm_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.predict_turns = Histogram(
            "latfarm_predict_requests_per_turn",
            "POST /v1/predict requests answered together in one event-loop turn (fast path, coalesce.py)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.registry.register(FeatureCacheCollector())


class FeatureCacheCollector(Collector):
    """The predictor feature caches of this process: lookups (hit / miss), hit ratio, entries and bound.

    Read at scrape time from the caches themselves (`features.cache_stats`), so nothing is counted twice;
    with several server processes each reports its own caches.
    """

    def collect(self) -> list[Metric]:
        labels = ["layout", "keyed_by"]
        lookups = CounterMetricFamily(
            "latfarm_feature_cache_lookups", "Feature-cache lookups by result", labels=[*labels, "result"]
        )
        ratio = GaugeMetricFamily(
            "latfarm_feature_cache_hit_ratio", "Hits / lookups since the process started", labels=labels
        )
        entries = GaugeMetricFamily("latfarm_feature_cache_entries", "Feature rows held", labels=labels)
        limit = GaugeMetricFamily(
            "latfarm_feature_cache_limit_entries",
            "Bound on rows held (LATFARM_FEATURE_CACHE_ENTRIES)",
            labels=labels,
        )
        for stats in cache_stats():
            names = [stats.layout, stats.keyed_by]
            lookups.add_metric([*names, "hit"], stats.hits)
            lookups.add_metric([*names, "miss"], stats.misses)
            total = stats.hits + stats.misses
            ratio.add_metric(names, stats.hits / total if total else 0.0)
            entries.add_metric(names, stats.entries)
            limit.add_metric(names, stats.limit)
        return [lookups, ratio, entries, limit]


class MetricsMiddleware:
    """ASGI middleware timing each request under its route template (`/v1/devices/{device_id}`)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    # The router records the matched route in the scope; unmatched paths share one label.
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


@router.get("/healthz", responses=problem_responses(503))
def healthz(session: SessionDep) -> dict[str, str]:
    """200 when the database answers a query, 503 otherwise."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise UnavailableError(f"the database does not answer: {type(exc).__name__}") from None
    return {"status": "ok", "database": session.get_bind().dialect.name}


def metrics_access(request: Request, session: SessionDep, settings: SettingsDep) -> None:
    """With `metrics_require_token`, `/metrics` needs a token with the `read` scope (public read or not)."""
    if settings.metrics_require_token:
        principal = current_principal(request, session)
        if principal is ANONYMOUS:
            raise UnauthorizedError("/metrics needs a token with the 'read' scope (metrics_require_token)")
        require_scope(TokenScope.read)(principal, settings)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_access)])
def metrics(request: Request) -> Response:
    """Prometheus exposition of request counts and latency histograms."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
