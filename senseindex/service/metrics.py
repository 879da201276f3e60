"""The service's ``/metrics``: requests, latencies, writes and model runs in Prometheus's text format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from senseindex.extras import import_extra

# seconds: a query takes milliseconds, a write of many documents minutes
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ServiceMetrics:
    """The metrics of one service, in a registry of their own.

    Args:
        query_batching: gives the index's ``{"calls", "runs", ...}`` (see `SenseIndex.query_batching`).
        writes_running: gives the number of writes under way.

    Raises:
        MissingExtra: prometheus-client is not installed (the ``serve`` extra).
    """

    def __init__(
        self, query_batching: Callable[[], dict[str, int]], writes_running: Callable[[], int]
    ) -> None:
        prometheus = import_extra("prometheus_client", "serve")
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter(
            "senseindex_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = prometheus.Histogram(
            "senseindex_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        writes = prometheus.Gauge(
            "senseindex_writes_running", "Writes (adds, deletes) under way.", registry=self.registry
        )
        writes.set_function(writes_running)
        calls = prometheus.Gauge(
            "senseindex_query_embeddings",
            "Query texts embedded by the model since the start (concurrent ones share model runs).",
            registry=self.registry,
        )
        calls.set_function(lambda: query_batching()["calls"])
        runs = prometheus.Gauge(
            "senseindex_model_runs", "Model runs for queries since the start.", registry=self.registry
        )
        runs.set_function(lambda: query_batching()["runs"])

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus's text format, and its content type."""
        prometheus: Any = self._prometheus
        return prometheus.generate_latest(self.registry), prometheus.CONTENT_TYPE_LATEST
