"""The per-request context: ids, the matched route, the decision, the verified facts and the upstream's answer."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..policy import Denial, Facts


@dataclass(slots=True)
class RequestContext:
    """Everything the gateway learns about one request, read by metrics, logs and the audit event; written by
    the handler only (`handler.py`)."""

    interaction_id: str
    request_id: str
    route: str = "unmatched"
    policy: str = ""
    policy_mode: str = ""
    policy_version: str = ""
    decision: str = "allow"
    denials: tuple[Denial, ...] = ()
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    error_reason: str | None = None
    """The registered reason of a failure after the decision (`body_too_large`, `upstream_timeout`…)."""
    facts: Facts = field(default_factory=Facts)
    """The checks' verified facts, shared with the engine's `RequestView`: a request that fails after some checks
    (its body too large, say) still has its decision event name what they verified."""

