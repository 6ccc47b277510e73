"""Prometheus metrics of the service, and the ASGI middleware that counts and times requests.

Each app has its own registry (tests build many apps in one process). Requests are labelled
by route template (``/v1/users/{user_id}/explanation``), never by raw path, so the number of
series stays bounded whatever callers send.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST"]

# no "_created" series beside every counter and histogram: they double the output for nothing
disable_created_metrics()

#: Latency buckets (seconds): fine below 10 ms, where the enrich targets are.
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's metrics in one registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("socialrisk_http_requests", "HTTP requests, by method, route template and status code.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("socialrisk_http_request_duration_seconds", "Time from request to the end of the response, by route.",
                                 ["method", "route"], buckets=BUCKETS, registry=r)
        self.store_errors = Counter("socialrisk_store_errors", "Store calls that failed or timed out, by operation.", ["operation"], registry=r)
        self.store_up = Gauge("socialrisk_store_up", "1 when the store answered its last probe, else 0.", registry=r)
        self.stale = Gauge("socialrisk_scores_stale", "1 while scores are served from the cache without the store.", registry=r)
        self.users = Gauge("socialrisk_scores_users", "Users with a served score.", registry=r)
        self.flags_pending = Gauge("socialrisk_flags_pending", "Accepted flags not yet written to the store.", registry=r)
        self.flags = Counter("socialrisk_flags", "Flags accepted, by canonical label.", ["label"], registry=r)
        self.flag_apply = Histogram("socialrisk_flag_apply_seconds", "Time to apply a flag to the served scores (push and update).",
                                    buckets=BUCKETS, registry=r)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status[0], time.perf_counter() - start)
