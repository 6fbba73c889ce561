"""`body_size`: a per-policy maximum body size, below the server-wide limit."""

from __future__ import annotations

from ..config.schema import PositiveInt, StrictModel
from ..reasons import Reason, Reasons
from .base import Check, Denial, RequestView


class BodySizeParams(StrictModel):
    """Parameters of `body_size`."""

    max_bytes: PositiveInt
    """Largest body accepted on this route (the server-wide `server.max_body_bytes` still applies first)."""
    required: bool = False
    """Refuse an empty body."""


class BodySizeReasons(Reasons):
    """Why `body_size` refuses."""

    body_too_large = Reason(413, "request_too_large")
    body_missing = Reason(400, "invalid_request")


R = BodySizeReasons


class BodySize(Check[BodySizeParams]):
    """Refuse bodies over `max_bytes` (413), or empty ones when `required` (400)."""

    name = "body_size"
    Params = BodySizeParams
    reasons = BodySizeReasons
    needs_body = True

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the body is within bounds."""
        size = len(request.body or b"")
        if size > self.params.max_bytes:
            return self.deny(R.body_too_large, f"request body exceeds {self.params.max_bytes} bytes")
        if self.params.required and size == 0:
            return self.deny(R.body_missing, "request body is required")
        return None
