"""Every Prometheus metric the gateway exports, declared in one place on an injectable registry.

Names are stable once released and documented in docs/metrics.md; the dashboard and alert rules under
monitoring/ query them (a test keeps the four in step). Label values come only from closed sets: route
*templates*, methods, status classes, policy, check and reason names, and the small enumerations below —
never raw paths, client ids, tokens or key ids.

Several worker processes: prometheus-client's multiprocess mode. Set `PROMETHEUS_MULTIPROC_DIR` in the
environment of every worker (or call `configure_multiprocess` in the parent before any `Metrics()` and
before forking); each process then writes its values to mmap files there, and `Metrics.render()` on the
admin endpoint merges the files of all processes. Gauges declare how they merge (`multiprocess_mode`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead

from .. import __version__

PREFIX: Final = "dcr_gateway"
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# No `<name>_created` series: they would double the series count for a timestamp nothing here uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Closed label sets. Each series is created at zero up front, so `rate()` and `increase()` see the first
# event and dashboards show a flat zero instead of "no data".
UPSTREAM_ERROR_KINDS: Final = ("connect", "timeout", "protocol", "body_too_large")
JWKS_FETCH_RESULTS: Final = ("ok", "error", "timeout", "too_large", "refused")
JWKS_ORIGINS: Final = ("configured", "software")
"""Whose key set a fetch was for (`UrlPolicy.origin`): the operator's config (token issuers, directories), or a
TPP's named by its SSA."""
JWKS_CACHE_RESULTS: Final = ("hit", "miss")
JWKS_UNKNOWN_KID_RESULTS: Final = ("refetch", "rate_limited")
RELOAD_RESULTS: Final = ("success", "failure")
REVOCATION_CAUSES: Final = ("client_not_owned", "upstream_401", "client_deleted")
AUDIT_RESULTS: Final = ("written", "failed")
STATE_ERROR_KINDS: Final = ("timeout", "connection", "auth", "response", "circuit_open")
BREAKER_STATES: Final = ("open", "half_open", "closed")
CACHE_LINK_STATES: Final = ("up", "down")
CERT_REVOCATION_METHODS: Final = ("ocsp", "crl")
CERT_REVOCATION_OUTCOMES: Final = ("good", "revoked", "unknown", "error")
CERT_REVOCATION_FETCH_RESULTS: Final = JWKS_FETCH_RESULTS


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode when it is on in this process, else None."""
    if getattr(_values.ValueClass, "_multiprocess", False):
        return os.environ.get(MULTIPROC_ENV) or None
    return None


def configure_multiprocess(directory: str | os.PathLike[str], *, wipe: bool = False) -> Path:
    """Switch this process (and the workers it forks or spawns) to multiprocess metrics in `directory`.

    Call it once in the parent before creating any `Metrics` and before starting workers; `wipe=True`
    removes the files of a previous run (do it only there, never from a worker).
    """
    path = Path(directory).resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if wipe:
        for stale in path.glob("*.db"):
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by spawned workers
    if not getattr(_values.ValueClass, "_multiprocess", False):
        _values.ValueClass = _values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return path


def mark_process_dead(pid: int) -> None:
    """Drop a worker's live gauges (in-flight requests, loaded policy set) once it has exited."""
    directory = multiprocess_dir()
    if directory is not None:
        _mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""Methods that get their own `method` label value; any other token a client sends is counted as `other`."""


def method_label(method: str) -> str:
    """The `method` label for a request: bounded, whatever method token the client invents."""
    return method if method in METHODS else "other"


Add = Callable[[float], None]
"""An add to one series' value."""


def _loop_add(value: Any) -> Add:
    """The add of a prometheus-client value object (a series' `_value`, a histogram's `_sum` or bucket) that only
    the event loop's thread changes: every per-request series here (the handler, the forwarder and the decision
    record all run on it). In one process the value is a float that thread alone adds to, so the add needs none of
    the library's per-add lock: a scrape reads the float whole (one attribute, under the GIL), and the additions
    are the library's own (`_value += amount`, same order, same floats), so the exposition is the same to the bit.
    In multiprocess mode the value is an entry of this process's mmap file: its own `inc`, under the library's lock,
    as before. Relies on prometheus-client's value objects (tests/observability/test_metrics.py pins the result
    against the public API). Never for a series another thread adds to (the audit writer's)."""
    if value._multiprocess:
        return cast(Add, value.inc)

    def add(amount: float) -> None:
        value._value += amount

    return add


def _add(child: Any) -> Add:
    """A counter or gauge series' `inc` (see `_loop_add`), without `Counter.inc`'s per-call checks: a labelled
    child is always observable, and every amount here is 1 or -1."""
    return _loop_add(child._value)


def _observer(child: Any) -> Add:
    """A histogram series' `observe`, resolved the same way: the sum's add, then the first bucket whose bound
    holds the amount (prometheus-client's own order, and its non-cumulative buckets)."""
    add_sum = _loop_add(child._sum)
    buckets: tuple[tuple[float, Add], ...] = tuple(
        zip(child._upper_bounds, [_loop_add(bucket) for bucket in child._buckets], strict=True))

    def observe(amount: float) -> None:
        add_sum(amount)
        for bound, add in buckets:
            if amount <= bound:
                add(1)
                break

    return observe


class _Series:
    """A labelled metric's series, resolved once per label set to its add (or observe): the per-request path skips
    `labels()` (its validation, string conversion and lock) and the metric's own checks after the first request of
    each series. The label sets cached here are bounded (route templates, policy names, fixed enums), as every
    label value must be."""

    __slots__ = ("_metric", "_resolve", "_series")

    def __init__(self, metric: Any, resolve: Callable[[Any], Add] = _add) -> None:
        self._metric = metric
        self._resolve = resolve
        self._series: dict[tuple[str, ...], Add] = {}

    def get(self, *values: str) -> Add:
        add = self._series.get(values)
        if add is None:
            add = self._series[values] = self._resolve(self._metric.labels(*values))
        return add


class _InFlight:
    """`Metrics.in_flight`: the gauge's inc/dec through its value object (see `_add`)."""

    __slots__ = ("_add",)

    def __init__(self, gauge: Any) -> None:
        self._add = _add(gauge)

    def inc(self) -> None:
        self._add(1)

    def dec(self) -> None:
        self._add(-1)


_Done = tuple[Add, Add, Add | None]
"""One kind of answered request: its requests_total add, its duration observe, its upstream_responses add."""


class Metrics:
    """The gateway's metrics; one instance per process (tests make their own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        directory = multiprocess_dir()
        if directory is not None and not Path(directory).is_dir():
            raise FileNotFoundError(errno.ENOENT, f"{MULTIPROC_ENV} is not a directory", directory)
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._policy_version: str | None = None
        r = self.registry
        # -- the public listener --------------------------------------------------------------------
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "Requests answered on the public listener, by route template, method, status class and decision.",
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
        self.in_flight_gauge = Gauge(
            f"{PREFIX}_requests_in_flight", "Requests being handled on the public listener.",
            registry=r, multiprocess_mode="livesum",
        )
        self.in_flight = _InFlight(self.in_flight_gauge)
        """Per request: `in_flight.inc()` when it arrives, `in_flight.dec()` when it is answered."""
        # -- policy decisions ------------------------------------------------------------------------
        self.decisions = Counter(
            f"{PREFIX}_decisions_total",
            "Policy decisions: allow, deny, or audit_deny (a would-be denial forwarded in audit mode); "
            "check and reason are empty for allow.",
            ["policy", "mode", "decision", "check", "reason"],
            registry=r,
        )
        self.revocations = Counter(
            f"{PREFIX}_revocations_total",
            "Revocations by the gateway, by cause: client_not_owned and upstream_401 revoke one token, "
            "client_deleted every token of the client.",
            ["cause"],
            registry=r,
        )
        self.replay_rejections = Counter(
            f"{PREFIX}_replay_rejections_total",
            "Registration requests whose jti was already used (the replay check), audit mode included.",
            registry=r,
        )
        # -- upstream ------------------------------------------------------------------------------
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_duration_seconds",
            "Time from forwarding a request to receiving the upstream's response headers.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_responses = Counter(
            f"{PREFIX}_upstream_responses_total",
            "Responses received from the upstream, by route template and status class.",
            ["route", "status_class"],
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors_total",
            "Upstream failures without a usable response, by kind (connect, timeout, protocol, body_too_large).",
            ["kind"],
            registry=r,
        )
        # -- JWKS ----------------------------------------------------------------------------------
        self.jwks_fetches = Counter(
            f"{PREFIX}_jwks_fetches_total",
            "JWKS fetches by key-set origin (configured, software) and result (ok, error, timeout, too_large, "
            "refused).",
            ["origin", "result"],
            registry=r,
        )
        self.jwks_cache_lookups = Counter(
            f"{PREFIX}_jwks_cache_lookups_total",
            "Key-set lookups in the JWKS cache: hit (fresh keys) or miss (fetch needed).",
            ["result"],
            registry=r,
        )
        self.jwks_stale_served = Counter(
            f"{PREFIX}_jwks_stale_served_total",
            "Lookups answered with stale keys because the key server could not be fetched.",
            registry=r,
        )
        self.jwks_unknown_kid = Counter(
            f"{PREFIX}_jwks_unknown_kid_total",
            "Key ids not in the cached key set: refetch (the set is fetched again) or rate_limited "
            "(too soon after the last fetch; the token is refused).",
            ["result"],
            registry=r,
        )
        # -- certificate revocation (OCSP, CRL) --------------------------------------------------------
        self.cert_revocation_checks = Counter(
            f"{PREFIX}_certificate_revocation_checks_total",
            "Certificate revocation answers by source (ocsp, crl) and result (good, revoked, unknown: the "
            "responder does not know it or nowhere to ask; error: no usable answer).",
            ["source", "result"],
            registry=r,
        )
        self.cert_revocation_fetches = Counter(
            f"{PREFIX}_certificate_revocation_fetches_total",
            "OCSP and CRL fetches by source (ocsp, crl) and result (ok, error, timeout, too_large, refused).",
            ["source", "result"],
            registry=r,
        )
        self.cert_revocation_cache_hits = Counter(
            f"{PREFIX}_certificate_revocation_cache_hits_total",
            "Revocation answers taken from the cache (a CRL before its nextUpdate, an OCSP answer before its own).",
            ["source"],
            registry=r,
        )
        self.cert_revocation_soft_fail = Counter(
            f"{PREFIX}_certificate_revocation_soft_fail_total",
            "Certificates let through with an unknown revocation status because the policy says soft_fail.",
            registry=r,
        )
        # -- policies ------------------------------------------------------------------------------
        self.policy_reloads = Counter(
            f"{PREFIX}_policy_reloads_total", "Policy set reloads by result (success, failure).", ["result"],
            registry=r,
        )
        self.policy_set = Gauge(
            f"{PREFIX}_policy_set_info", "The loaded policy set: 1 for its version, labelled.", ["version"],
            registry=r, multiprocess_mode="livemax",
        )
        self.policies_loaded = Gauge(
            f"{PREFIX}_policies_loaded", "Policies in the loaded set.", registry=r, multiprocess_mode="livemax",
        )
        # -- shared state store (Redis) --------------------------------------------------------------
        self.state_errors = Counter(
            f"{PREFIX}_state_store_errors_total",
            "Failed calls to the shared state store by kind (timeout, connection, auth, response, circuit_open).",
            ["kind"],
            registry=r,
        )
        self.state_breaker = Counter(
            f"{PREFIX}_state_store_breaker_transitions_total",
            "State store circuit breaker transitions, by the state entered (open, half_open, closed).",
            ["state"],
            registry=r,
        )
        self.state_breaker_state = Gauge(
            f"{PREFIX}_state_store_breaker_state",
            "State store circuit breaker state: 1 for the state it is in (open, half_open, closed), per process; "
            "summed over live worker processes. Only with a store that has a breaker (Redis).",
            ["state"],
            registry=r, multiprocess_mode="livesum",
        )
        self.state_fail_open = Counter(
            f"{PREFIX}_state_fail_open_total",
            "Checks passed without a decision because the state store was unavailable and the policy says "
            "on_store_error: fail_open.",
            ["policy", "check"],
            registry=r,
        )
        self.state_cache_link = Counter(
            f"{PREFIX}_state_cache_link_transitions_total",
            "The revocation cache's invalidation link to Redis going up or down (state: up, down); while down the "
            "cache is bypassed and every revocation lookup goes to Redis.",
            ["state"],
            registry=r,
        )
        # -- audit trail and build -----------------------------------------------------------------
        self.audit_events = Counter(
            f"{PREFIX}_audit_events_total",
            "Audit events by result: written to the sink, or failed (lost: the sink refused the write).",
            ["result"],
            registry=r,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Version of the running gateway (always 1).", ["version"],
            registry=r, multiprocess_mode="livemax",
        )
        self.build_info.labels(__version__).set(1)
        for counter, closed in (
            (self.upstream_errors, UPSTREAM_ERROR_KINDS),
            (self.jwks_cache_lookups, JWKS_CACHE_RESULTS),
            (self.jwks_unknown_kid, JWKS_UNKNOWN_KID_RESULTS),
            (self.policy_reloads, RELOAD_RESULTS),
            (self.revocations, REVOCATION_CAUSES),
            (self.audit_events, AUDIT_RESULTS),
            (self.state_errors, STATE_ERROR_KINDS),
            (self.state_breaker, BREAKER_STATES),
            (self.state_cache_link, CACHE_LINK_STATES),
        ):
            for value in closed:
                counter.labels(value)
        for method in CERT_REVOCATION_METHODS:
            self.cert_revocation_cache_hits.labels(method)
            for outcome in CERT_REVOCATION_OUTCOMES:
                self.cert_revocation_checks.labels(method, outcome)
            for result in CERT_REVOCATION_FETCH_RESULTS:
                self.cert_revocation_fetches.labels(method, result)

        self._requests = _Series(self.requests)
        self._request_duration = _Series(self.request_duration, _observer)
        self._upstream_responses = _Series(self.upstream_responses)
        self._upstream_duration = _Series(self.upstream_duration, _observer)
        self._decisions = _Series(self.decisions)
        self._done: dict[tuple[str, str, int, str, int | None], _Done] = {}
        """request_done's series by (route, method label, status class, decision, upstream status class): one
        lookup per request, bounded as the labels are."""
        # From the audit writer's thread: the public, locked inc.
        self._audit_events = {result: self.audit_events.labels(result).inc for result in AUDIT_RESULTS}
        # The JWKS cache reports a closed set of events (one per GET with a token, three per verified POST), all from
        # the event loop's thread (lookups and fetches run on it): each resolves to its series' add once, here, so a
        # hit costs one dict lookup and a float add (`_add`, without the library's lock).
        # Only fetches are told apart by origin; the other series count both origins together.
        either: dict[tuple[str, str], Add] = {("cache", r): _add(self.jwks_cache_lookups.labels(r))
                                              for r in JWKS_CACHE_RESULTS}
        either[("cache", "stale")] = _add(self.jwks_stale_served)
        either[("refetch", "unknown_kid")] = _add(self.jwks_unknown_kid.labels("refetch"))
        either[("refetch", "rate_limited")] = _add(self.jwks_unknown_kid.labels("rate_limited"))
        jwks = {(kind, result, origin): add for (kind, result), add in either.items() for origin in JWKS_ORIGINS}
        jwks.update({("fetch", r, origin): _add(self.jwks_fetches.labels(origin, r))
                     for origin in JWKS_ORIGINS for r in JWKS_FETCH_RESULTS})
        self._jwks_events = jwks

    # -- per-request recording (cached children) ---------------------------------------------------
    def request_done(self, route: str, method: str, status: int, decision: str, elapsed: float,
                     upstream_status: int | None) -> None:
        """One answered request on the public listener."""
        key = (route, method_label(method), status // 100, decision,
               upstream_status // 100 if upstream_status is not None else None)
        done = self._done.get(key)
        if done is None:
            done = self._done[key] = self._resolve_done(*key)
        requests, observe, upstream = done
        requests(1)
        observe(elapsed)
        if upstream is not None:
            upstream(1)

    def _resolve_done(self, route: str, method: str, status_class: int, decision: str,
                      upstream_class: int | None) -> _Done:
        upstream = self._upstream_responses.get(route, f"{upstream_class}xx") if upstream_class is not None else None
        return (self._requests.get(route, method, f"{status_class}xx", decision),
                self._request_duration.get(route, method), upstream)

    def upstream_answered(self, route: str, method: str, seconds: float) -> None:
        """Time until the upstream's response headers."""
        self._upstream_duration.get(route, method_label(method))(seconds)

    def decided(self, policy: str, mode: str, decision: str, check: str = "", reason: str = "") -> None:
        """One policy decision (check and reason empty for allow)."""
        self._decisions.get(policy, mode, decision, check, reason)(1)

    # -- recording helpers: the callbacks other components are given -------------------------------
    def set_policy_version(self, version: str, count: int) -> None:
        """Expose the loaded policy set's version (one series at 1; a replaced version drops to 0 or away)."""
        old = self._policy_version
        if old is not None and old != version:
            self.policy_set.labels(old).set(0)  # multiprocess mode cannot remove a series: 0 marks it old
            if multiprocess_dir() is None:
                self.policy_set.remove(old)
        self._policy_version = version
        self.policy_set.labels(version).set(1)
        self.policies_loaded.set(count)

    def jwks_event(self, kind: str, result: str, origin: str) -> None:
        """The JWKS cache's `on_event(kind, result, origin)` hook (see gateway.jose.jwks_cache)."""
        add = self._jwks_events.get((kind, result, origin))
        if add is None:  # bounded labels: an unforeseen event is a bug, reported by the cache's hook guard
            raise ValueError(f"unknown JWKS cache event {kind}:{result} ({origin})")
        add(1)

    def revoked(self, cause: str) -> None:
        """Count one revocation (`Revocations(on_revoke=...)`); `cause` is one of REVOCATION_CAUSES."""
        if cause not in REVOCATION_CAUSES:
            raise ValueError(f"unknown revocation cause {cause!r}")
        self.revocations.labels(cause).inc()

    def cert_revocation_checked(self, method: str, outcome: str) -> None:
        """One revocation answer (`RevocationEvents.on_check`): method in CERT_REVOCATION_METHODS, outcome in
        CERT_REVOCATION_OUTCOMES."""
        if method not in CERT_REVOCATION_METHODS or outcome not in CERT_REVOCATION_OUTCOMES:
            raise ValueError(f"unknown revocation answer {method}:{outcome}")
        self.cert_revocation_checks.labels(method, outcome).inc()

    def cert_revocation_fetched(self, method: str, result: str) -> None:
        """One OCSP or CRL fetch (`RevocationEvents.on_fetch`)."""
        if method not in CERT_REVOCATION_METHODS or result not in CERT_REVOCATION_FETCH_RESULTS:
            raise ValueError(f"unknown revocation fetch {method}:{result}")
        self.cert_revocation_fetches.labels(method, result).inc()

    def cert_revocation_cache_hit(self, method: str) -> None:
        """One revocation answer from the cache (`RevocationEvents.on_cache_hit`)."""
        if method not in CERT_REVOCATION_METHODS:
            raise ValueError(f"unknown revocation method {method!r}")
        self.cert_revocation_cache_hits.labels(method).inc()

    def cert_revocation_soft_failed(self) -> None:
        """One certificate let through with an unknown status (`RevocationEvents.on_soft_fail`)."""
        self.cert_revocation_soft_fail.inc()

    def state_cache_link_changed(self, up: bool) -> None:
        """The local cache's invalidation link went up or down (`StoreEvents.on_cache_link`)."""
        self.state_cache_link.labels("up" if up else "down").inc()

    def state_breaker_entered(self, state: str, *, transition: bool = True) -> None:
        """The state store's circuit breaker is now in `state` (one of BREAKER_STATES): the transition is
        counted (unless `transition=False`, the initial closed state of a new store) and the state gauge is
        1 for `state`, 0 for the others."""
        if state not in BREAKER_STATES:
            raise ValueError(f"unknown breaker state {state!r}")
        if transition:
            self.state_breaker.labels(state).inc()
        for value in BREAKER_STATES:
            self.state_breaker_state.labels(value).set(1 if value == state else 0)

    def replay_rejected(self) -> None:
        """Count one replayed registration request jti (`Services.on_replay`)."""
        self.replay_rejections.inc()

    def audit_written(self, result: str, events: int) -> None:
        """The audit writer's `on_write(result, events)` hook: written or failed (lost) events."""
        add = self._audit_events.get(result)
        if add is None:
            raise ValueError(f"unknown audit write result {result!r}")
        add(events)

    def render(self) -> bytes:
        """The Prometheus text exposition: this registry, or every process's files in multiprocess mode."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
