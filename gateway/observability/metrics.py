"""Every Prometheus metric the gateway exports, declared in one place on an injectable registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .. import __version__
from .multiprocess import multiprocess_dir

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
            f"{PREFIX}_requests_in_flight", "Requests being handled on the public listener.", registry=r,
            multiprocess_mode="livesum",
        )
        self.decisions = Counter(
            f"{PREFIX}_decisions_total",
            "Policy decisions: allow, deny, or audit_deny (a would-be denial forwarded in audit mode); "
            "check and reason are empty for allow.",
            ["policy", "mode", "decision", "check", "reason"],
            registry=r,
        )
        self.policy_reloads = Counter(
            f"{PREFIX}_policy_reloads_total", "Policy set reloads by result (success, failure).", ["result"],
            registry=r,
        )
        self.policy_set = Gauge(
            f"{PREFIX}_policy_set_info", "The loaded policy set: 1 for its version, labelled.", ["version"],
            registry=r, multiprocess_mode="livemax",
        )
        self.policies_loaded = Gauge(f"{PREFIX}_policies_loaded", "Policies in the loaded set.", registry=r,
                                     multiprocess_mode="livemax")
        self.revocations = Counter(
            f"{PREFIX}_revocations_total", "Tokens or clients revoked by the gateway, by cause.", ["cause"],
            registry=r,
        )
        self.jwks_events = Counter(
            f"{PREFIX}_jwks_events_total",
            "JWKS cache events: kind=fetch (result ok, error, timeout, too_large, refused, invalid), "
            "kind=cache (hit, miss), kind=refetch (unknown_kid, rate_limited).",
            ["kind", "result"],
            registry=r,
        )
        self.state_errors = Counter(
            f"{PREFIX}_state_store_errors_total",
            "Failed calls to the shared state store by kind (timeout, connection, response, circuit_open).",
            ["kind"],
            registry=r,
        )
        self.state_breaker = Counter(
            f"{PREFIX}_state_store_breaker_transitions_total",
            "State store circuit breaker transitions, by the state entered (open, half_open, closed).",
            ["state"],
            registry=r,
        )
        self.state_fail_open = Counter(
            f"{PREFIX}_state_fail_open_total",
            "Checks passed without a decision because the state store was unavailable and the policy says "
            "on_store_error: fail_open.",
            ["policy", "check"],
            registry=r,
        )
        self._policy_version: str | None = None
        self.build_info = Info(f"{PREFIX}_build", "Version of the running gateway.", registry=r)
        self.build_info.info({"version": __version__})

    def set_policy_version(self, version: str, count: int) -> None:
        """Expose the loaded policy set's version (one labelled series at a time)."""
        if self._policy_version is not None and self._policy_version != version:
            # Multiprocess mode cannot remove a series from the shared files: zero it before forgetting it.
            self.policy_set.labels(self._policy_version).set(0)
            if not multiprocess_dir():
                self.policy_set.clear()
        self._policy_version = version
        self.policy_set.labels(version).set(1)
        self.policies_loaded.set(count)
