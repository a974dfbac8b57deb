"""Prometheus metrics (prometheus-client), one registry per app instance.

Metrics are per worker process: with `WORKERS > 1` each scrape reaches one
worker. `/metrics` is open (like the health endpoints): it carries counts,
latencies, batch sizes and model versions, never request data.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServiceMetrics:
    """The service's metrics and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "diffround_http_requests",
            "HTTP requests, by route template, method and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "diffround_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "diffround_batch_rows",
            "Rows per model call (after dynamic batching), by model and signature.",
            ("model", "signature"),
            buckets=_ROW_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "diffround_batch_requests",
            "Requests coalesced into one model call, by model and signature.",
            ("model", "signature"),
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.model_version = Gauge(
            "diffround_model_serving_version",
            "The version each model serves (0: none loaded).",
            ("model",),
            registry=self.registry,
        )
        self.model_loads = Counter(
            "diffround_model_loads",
            "Version load attempts, by model and outcome (loaded, refused).",
            ("model", "outcome"),
            registry=self.registry,
        )
        self.ready = Gauge(
            "diffround_ready", "1 when the service is ready to serve.", registry=self.registry
        )

    def observer(self, model: str, signature: str):
        """A `Batcher` observe callback recording rows and requests per model call."""
        rows = self.batch_rows.labels(model, signature)
        requests = self.batch_requests.labels(model, signature)

        def observe(n_rows: int, n_requests: int) -> None:
            rows.observe(n_rows)
            requests.observe(n_requests)

        return observe

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
