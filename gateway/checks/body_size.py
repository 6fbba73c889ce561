"""`body_size`: a per-policy maximum body size, below the server-wide limit."""

from __future__ import annotations

from ..config.schema import PositiveInt, StrictModel
from .base import Check, Denial, RequestView


class BodySizeParams(StrictModel):
    """Parameters of `body_size`."""

    max_bytes: PositiveInt
    """Largest body accepted on this route (the server-wide `server.max_body_bytes` still applies first)."""
    required: bool = False
    """Refuse an empty body."""


class BodySize(Check[BodySizeParams]):
    """Refuse bodies over `max_bytes` (413), or empty ones when `required` (400)."""

    name = "body_size"
    Params = BodySizeParams
    needs_body = True

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the body is within bounds."""
        size = len(request.body or b"")
        if size > self.params.max_bytes:
            return self.deny(413, "request_too_large", f"request body exceeds {self.params.max_bytes} bytes",
                             "body_too_large")
        if self.params.required and size == 0:
            return self.deny(400, "invalid_request", "request body is required", "body_missing")
        return None
