"""What every check is: a name, a parameter model, `evaluate(request) -> Denial | None`, optional hooks."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy

from ..config.schema import StrictModel
from ..reasons import Answer, Challenge, Reason, Reasons, UnregisteredReason
from .facts import Fact, Facts

if TYPE_CHECKING:
    from .services import Services


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal: HTTP status, protocol error code, safe description, stable reason for metrics."""

    status: int
    error: str
    description: str
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    check: str = ""


@dataclass(slots=True)
class RequestView:
    """What checks see of a request; built from an aiohttp request or from a policy test case."""

    method: str
    path: str
    headers: CIMultiDictProxy[str] | CIMultiDict[str]
    params: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    peer: str | None = None
    """The connection's peer address (for a header only a trusted proxy may set, the proxy's own)."""
    client_address: str | None = None
    """The client's address behind `server.trusted_proxies` (X-Forwarded-For); None: the same as `peer`."""
    facts: Facts = field(default_factory=Facts)
    """What the checks verified so far (typed, declared by the checks: `facts.Fact`)."""
    dry_run: bool = False
    """True in audit mode: checks must not cause side effects (no revocation)."""
    now: float = field(default_factory=time.time)
    policy: str = ""
    """Name of the policy being evaluated (set by the engine), e.g. a rate limit's default bucket."""
    memo: dict[str, Any] = field(default_factory=dict)
    """Work derived from this request's own input that several checks need, done once (e.g. the parsed but
    UNVERIFIED registration JWS). Never facts: nothing here is verified, forwarded, logged or audited."""


P = TypeVar("P", bound=StrictModel)


class Recording(IntEnum):
    """Whether a check's `evaluate` writes to the shared state store, and when; the compiler runs checks in
    this order (stable: the policy's order within each group), so state is only written for a request that
    every verifying check of the policy has passed."""

    NONE = 0
    """Verifies only (or, like `rate_limit`, counts every attempt that reaches it, by design)."""
    ON_REFUSAL = 1
    """Writes when it refuses (`client_ownership` revokes the token it refuses)."""
    ON_PASS = 2
    """Consumes something when it passes (`replay` records the jti): runs last of all."""


class Check(ABC, Generic[P]):
    """One check kind. Subclasses set `name` and `Params`, and implement `evaluate`."""

    name: ClassVar[str]
    """Stable snake_case name used in policies, metrics and audit events."""
    Params: ClassVar[type[StrictModel]]
    """Parameter model: unknown keys are errors, every field described."""
    needs_body: ClassVar[bool] = False
    """True when the check reads the request body (the engine reads it once, bounded)."""
    store_fail_open: ClassVar[bool] = False
    """True when a policy may say `on_store_error: fail_open` for this check: its store use is its whole
    decision (a counter, a replay lookup), so passing over it when the store is down leaves nothing half
    done. False where a store failure would turn a refusal into a pass or drop facts later checks need."""
    produces: ClassVar[tuple[Fact[Any], ...]] = ()
    """The verified facts `evaluate` may set (`request.facts.set`); the policy compiler collects them."""

    __slots__ = ("audit_only", "params", "services")

    @property
    def records_state(self) -> Recording:
        """Does `evaluate` write state (not `after_response`, which runs once the upstream answered)?
        Anything but NONE makes the compiler move the check after every verifying check of its policy."""
        return Recording.NONE

    def __init__(self, params: P, services: Services) -> None:
        self.params = params
        self.services = services
        self.audit_only = services.check_mode(self.name).audit
        """Denials are reported (audit_deny) but not enforced: config `policies.check_modes`, or the check's
        `mode` in its policy (the policy compiler sets it from `Services.check_mode`, the one rule)."""

    @abstractmethod
    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass (None) or refuse (a Denial); may set the verified facts it `produces`."""

    async def after_response(self, request: RequestView, status: int) -> None:
        """Called once the upstream has answered an allowed request (enforce mode only)."""

    def jwks_uris(self) -> tuple[str, ...]:
        """Key sets this check will need; prefetched at start so readiness waits for warm keys."""
        return ()

    reasons: ClassVar[type[Reasons]]
    """Every reason this check can refuse with, with its status, error code and WWW-Authenticate behaviour."""

    def deny(self, reason: Reason, description: str, headers: tuple[tuple[str, str], ...] = (), *,
             answer: Answer | None = None, scope: str | None = None) -> Denial:
        """A denial attributed to this check, for a reason of its table `reasons`, answered as declared there
        (or as `answer` says, for a reason whose answer a parameter sets); `scope` goes in a Bearer challenge."""
        if self.reasons.by_name.get(reason.name) is not reason:
            raise UnregisteredReason(f"check {self.name!r} does not declare reason {reason.name!r}")
        if answer is None:
            answer = reason.answer
        elif not reason.configurable:
            raise UnregisteredReason(f"check {self.name!r}: reason {reason.name!r} has a fixed answer")
        if answer.challenge is not Challenge.NONE:
            headers = (*answer.challenge_headers(description, scope), *headers)
        return Denial(answer.status, answer.error, description, reason.name, headers, self.name)


def denial_for(reason: Reason, description: str, check: str, headers: tuple[tuple[str, str], ...] = (), *,
            answer: Answer | None = None) -> Denial:
    """A denial made outside a check (`gateway.reasons.REFUSALS`: the HTTP layer, the router, the engine),
    answered as its reason declares (or as `answer` says, for a reason whose answer a setting chooses)."""
    if answer is None:
        answer = reason.answer
    elif not reason.configurable:
        raise UnregisteredReason(f"reason {reason.name!r} has a fixed answer")
    return Denial(answer.status, answer.error, description, reason.name, headers, check)
