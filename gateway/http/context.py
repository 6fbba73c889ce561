"""The per-request context: ids, the matched route, the decision and the verified facts checks add."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from ..checks.base import Denial


@dataclass(slots=True)
class RequestContext:
    """Everything the gateway learns about one request, read by metrics, logs and the audit event."""

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
    facts: dict[str, Any] = field(default_factory=dict)


CTX = web.RequestKey("dcr_gateway_ctx", RequestContext)
