"""Compiled policies and their evaluation: decisions are values with reasons (allow | deny | audit_deny)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..checks.base import Check, Denial, RequestView, denial_for
from ..checks.facts import Fact, FactHeaders, Facts, response_headers
from ..config import CheckMode
from ..config.schema import StrictModel
from ..observability.logging import get_logger
from ..reasons import RouterRefusals, StoreRefusals
from ..state.store import StoreUnavailable
from .router import Match, Router

log = get_logger("policy")

Outcome = Literal["allow", "deny", "audit_deny"]
StoreErrorMode = Literal["fail_closed", "fail_open"]


class CommonCheckParams(StrictModel):
    """Parameters every check accepts, handled by the engine rather than by the check."""

    on_store_error: StoreErrorMode = "fail_closed"
    """When the shared state store (Redis) cannot answer: `fail_closed` refuses the request with 503
    `temporarily_unavailable` and `Retry-After`; `fail_open` passes over the check (logged and counted in
    `dcr_gateway_state_fail_open_total`). Only checks that allow it accept `fail_open` (e.g. `rate_limit`)."""
    mode: Literal["enforce", "audit"] | None = None
    """`audit`: this check's denials are reported (`audit_deny`, `audit_would_deny`) and the request goes on, as
    config `policies.check_modes` does for a check kind everywhere; `enforce` (the default): a denial refuses
    the request. Config `policies.check_modes` wins when it names the check kind (the operator's override),
    and a profile's authenticating check (`ob_standard`: `client_certificate`) is always enforced."""


COMMON_PARAMS = frozenset(CommonCheckParams.model_fields)
"""Names of the common parameters, split off a check's parameters before the check validates its own."""


def split_common(raw: Any) -> tuple[Any, dict[str, Any]]:
    """(the check's own parameters, the common ones) from a check entry's parameter mapping."""
    if not isinstance(raw, dict):
        return raw, {}
    own = {k: v for k, v in raw.items() if k not in COMMON_PARAMS}
    return own, {k: v for k, v in raw.items() if k in COMMON_PARAMS}


def store_unavailable(check: str, exc: StoreUnavailable) -> Denial:
    """503 for a check whose state store cannot answer (fail closed), with a `Retry-After` in whole seconds."""
    retry = max(1, math.ceil(exc.retry_after_seconds or 1))
    return denial_for(StoreRefusals.state_unavailable, "security state store unavailable, retry later", check,
                      (("Retry-After", str(retry)),))


_FAIL_OPEN_LOG_INTERVAL = 10.0
_fail_open_logged: dict[tuple[str, str], tuple[float, int]] = {}


def _log_fail_open(policy: str, check: str) -> None:
    """One warning per policy and check every 10 s at most (a dead Redis must not flood the logs)."""
    now = time.monotonic()
    last, suppressed = _fail_open_logged.get((policy, check), (-math.inf, 0))
    if now - last < _FAIL_OPEN_LOG_INTERVAL:
        _fail_open_logged[(policy, check)] = (last, suppressed + 1)
        return
    _fail_open_logged[(policy, check)] = (now, 0)
    log.warning("state_store_fail_open", policy=policy, check=check, suppressed=suppressed)


class BodyLimits:
    """How much of a request body the gateway reads, and how long it waits for it (the server's, or a policy's
    `stream_body`)."""

    __slots__ = ("idle", "max_bytes", "total")

    def __init__(self, max_bytes: int, idle: float, total: float) -> None:
        self.max_bytes = max_bytes
        self.idle = idle
        """Seconds the body may stall between two reads (`server.timeouts.body_idle_seconds`)."""
        self.total = total
        """Seconds the whole body may take (`server.timeouts.body_total_seconds`)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of evaluating a policy for one request, with the verified facts and their projections: what
    the gateway sends upstream, adds to the response and writes in the decision event."""

    outcome: Outcome
    policy: str | None
    mode: str
    denials: tuple[Denial, ...] = ()
    facts: Facts = field(default_factory=Facts)
    """What the checks verified (also when some refused: the decision event names it)."""
    forward_headers: Mapping[str, str] | None = None
    """The facts as the headers config `policies.fact_headers` names, for the upstream request; None when any
    check denied (SECURITY: facts only on allow — in audit mode a later failure can void an earlier fact)."""
    response_headers: Sequence[tuple[str, str]] | None = None
    """Fields the facts add to the forwarded response (RateLimit-Policy, RateLimit), None when none."""

    def audit_fields(self) -> dict[str, Any]:
        """The decision event's fact fields (verified identities, never a token or a body), None when absent."""
        return self.facts.audit_fields()

    @property
    def forward(self) -> bool:
        """True when the request goes upstream (allowed, or denied in audit mode)."""
        return self.outcome != "deny"

    @property
    def denial(self) -> Denial | None:
        """The first denial (the one a client sees in enforce mode)."""
        return self.denials[0] if self.denials else None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A policy ready to run: its checks are built once, with parsed parameters."""

    name: str
    description: str
    mode: Literal["enforce", "audit"]
    template: str
    methods: tuple[str, ...]
    checks: tuple[Check, ...]  # type: ignore[type-arg]
    source: str
    on_store_error: tuple[StoreErrorMode, ...] = ()
    """Per check (same order as `checks`); empty means every check fails closed."""
    modes: tuple[CheckMode, ...] = ()
    """Per check (same order as `checks`), the mode it runs in and where that comes from (`check.audit_only`
    is its `audit`); empty: each check's own `audit_only`."""
    declared: tuple[int, ...] = ()
    """Per check (same order as `checks`), its 0-based position in the policy file: the compiler moves checks
    that record state after the verifying ones (`Check.records_state`); empty means the file's order."""
    stream_body: BodyLimits | None = None
    """Body limits of a route that streams its body (policy `stream_body`); None: read in full first."""
    content_codings: frozenset[str] = frozenset()
    """Content codings a request body may carry here (policy `accept_content_encoding`, lower case)."""
    allow_body_on: frozenset[str] = frozenset()
    """Methods of GET, HEAD, DELETE, OPTIONS whose requests may carry a body here (policy `allow_body_on`)."""
    produces: tuple[Fact[Any], ...] = field(init=False, repr=False, compare=False)
    """Every fact the policy's checks declare (`Check.produces`), collected when the policy is compiled."""
    _responding: tuple[Fact[Any], ...] = field(init=False, repr=False, compare=False)
    """Those of `produces` that add fields to the forwarded response."""
    _hooked: tuple[Check, ...] = field(init=False, repr=False, compare=False)  # type: ignore[type-arg]
    """The checks with a response hook of their own (`Check.after_response` overridden), in policy order: only
    they are called once the upstream answered (the base hook does nothing)."""

    def __post_init__(self) -> None:
        produces = tuple(dict.fromkeys(f for c in self.checks for f in c.produces))
        object.__setattr__(self, "produces", produces)
        object.__setattr__(self, "_responding", tuple(f for f in produces if f.response_headers is not None))
        object.__setattr__(self, "_hooked", tuple(c for c in self.checks
                                                  if type(c).after_response is not Check.after_response))

    @property
    def needs_body(self) -> bool:
        """True when any check reads the body."""
        return any(c.needs_body for c in self.checks)

    async def evaluate(
        self,
        request: RequestView,
        load_body: Callable[[], Awaitable[bytes]] | None = None,
        fact_headers: FactHeaders | None = None,
    ) -> Decision:
        """Run the checks in order; enforce stops at the first denial, audit runs them all.

        The decision carries the request's facts and their projections: `fact_headers` (config
        `policies.fact_headers`, bound once) says which go upstream, and only when no check denied.

        The body is read (bounded) only when the first check that needs it is reached, so a request
        refused for its token never has its body read. Checks that record state come last (the compiler
        orders them); in audit mode one is skipped once an enforced check has refused, as enforcement would
        never have reached it: a request that fails its audit records nothing (no jti consumed).
        """
        denials: list[Denial] = []
        audit = self.mode == "audit"
        refused = False  # an enforced (not audit-only) check refused: enforcement would have stopped here
        request.policy = self.name
        for i, check in enumerate(self.checks):
            if refused and check.records_state:
                continue
            if check.needs_body and request.body is None:
                request.body = await load_body() if load_body is not None else b""
            try:
                denial = await check.evaluate(request)
            except StoreUnavailable as exc:
                if self.on_store_error and self.on_store_error[i] == "fail_open":
                    _log_fail_open(self.name, check.name)
                    if check.services.on_fail_open is not None:
                        check.services.on_fail_open(self.name, check.name)
                    continue
                # Fail closed: the state a check depends on is unreachable.
                denial = store_unavailable(check.name, exc)
            if denial is not None:
                denials.append(denial)
                if not check.audit_only:
                    if not audit:
                        return Decision("deny", self.name, self.mode, tuple(denials), request.facts)
                    refused = True
        facts = request.facts
        extra = response_headers(self._responding, facts) if self._responding else None
        if not denials:
            forward = fact_headers.project(facts) if fact_headers is not None else None
            return Decision("allow", self.name, self.mode, (), facts, forward, extra)
        return Decision("audit_deny", self.name, self.mode, tuple(denials), facts, None, extra)

    async def after_response(self, request: RequestView, status: int) -> None:
        """Response hooks of every check (enforce mode only: audit mode has no side effects)."""
        if self.mode != "enforce":
            return
        for check in self._hooked:
            try:
                await check.after_response(request, status)
            except StoreUnavailable:
                # The backend has answered and acted; its answer is relayed. What the hook meant to record
                # (e.g. a revocation) is lost: say so loudly (the store's own error counter counts it).
                log.error("state_store_write_lost", policy=self.name, check=check.name, status=status)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable, validated set of policies; a reload builds a new one and swaps the reference."""

    version: str
    policies: tuple[CompiledPolicy, ...]
    router: Router[CompiledPolicy]
    unmatched_status: int

    def match(self, method: str, raw_path: str) -> Match[CompiledPolicy] | None:
        """The policy for a request, or why none applies."""
        return self.router.match(method, raw_path)

    def jwks_uris(self) -> tuple[str, ...]:
        """Every key set the policies need, for prefetching."""
        return tuple(sorted({u for p in self.policies for c in p.checks for u in c.jwks_uris()}))

    def unmatched(self, method: str, match: Match[CompiledPolicy] | None) -> Denial:
        """The denial for a request no policy applies to; it is never forwarded."""
        if match is not None and match.allowed:
            return denial_for(RouterRefusals.method_not_allowed, f"{method} is not allowed here", RouterRefusals.check,
                              (("Allow", ", ".join(match.allowed)),))
        if self.unmatched_status == 403:
            return denial_for(RouterRefusals.no_policy, "no policy allows this request", RouterRefusals.check,
                              answer=RouterRefusals.FORBIDDEN)
        return denial_for(RouterRefusals.no_policy, "no such endpoint", RouterRefusals.check)
