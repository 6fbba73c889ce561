"""Every Prometheus metric the gateway exports, declared in one place on an injectable registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .. import __version__

PREFIX = "dcr_gateway"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The gateway's metrics; one instance per process (tests make their own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "Requests answered on the public listener.",
            ["route", "method", "status_class", "decision"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request received to response complete.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Time from forwarding a request to receiving the upstream's response headers.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors_total",
            "Upstream failures by kind (connect, timeout, protocol, body_too_large).",
            ["kind"],
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being handled on the public listener.", registry=r
        )
        self.build_info = Info(f"{PREFIX}_build", "Version of the running gateway.", registry=r)
        self.build_info.info({"version": __version__})
