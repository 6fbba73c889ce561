"""`content_type`: requests that carry a body must declare one of the allowed media types."""

from __future__ import annotations

from pydantic import Field

from ..config.schema import StrictModel
from .base import Check, Denial, RequestView


class ContentTypeParams(StrictModel):
    """Parameters of `content_type`."""

    allowed: tuple[str, ...] = Field(min_length=1)
    """Media types accepted (parameters such as `charset` are ignored), e.g. `application/jose`."""
    status: int = 400
    """Status of the denial (415 is the HTTP answer; 400 with `invalid_client_metadata` matches RFC 7591)."""
    error: str = "invalid_client_metadata"
    """Error code of the denial."""


class ContentType(Check[ContentTypeParams]):
    """Refuse a body whose Content-Type is missing or not allowed."""

    name = "content_type"
    Params = ContentTypeParams
    __slots__ = ("_allowed",)

    def __init__(self, params: ContentTypeParams, services: object) -> None:
        super().__init__(params, services)  # type: ignore[arg-type]
        self._allowed = frozenset(t.lower() for t in params.allowed)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the media type (before any `;`) is allowed."""
        raw = request.headers.get("Content-Type")
        if raw is None:
            return self.deny(self.params.status, self.params.error, "Content-Type header is required",
                             "content_type_missing")
        media = raw.split(";", 1)[0].strip().lower()
        if media not in self._allowed:
            return self.deny(self.params.status, self.params.error,
                             f"Content-Type must be one of: {', '.join(sorted(self._allowed))}",
                             "content_type_not_allowed")
        return None
