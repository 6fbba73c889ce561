"""`content_type`: requests that carry a body must declare one of the allowed media types."""

from __future__ import annotations

from pydantic import Field

from ..config.schema import StrictModel
from ..reasons import Answer, Reason, Reasons
from .base import Check, Denial, RequestView


class ContentTypeParams(StrictModel):
    """Parameters of `content_type`."""

    allowed: tuple[str, ...] = Field(min_length=1)
    """Media types accepted (parameters such as `charset` are ignored), e.g. `application/jose`."""
    status: int = 400
    """Status of the denial (415 is the HTTP answer; 400 with `invalid_client_metadata` matches RFC 7591)."""
    error: str = "invalid_client_metadata"
    """Error code of the denial."""


class ContentTypeReasons(Reasons):
    """Why `content_type` refuses: answered with the check's `status` and `error` (default 400
    invalid_client_metadata)."""

    content_type_missing = Reason(400, "invalid_client_metadata", configurable="status, error")
    content_type_not_allowed = Reason(400, "invalid_client_metadata", configurable="status, error")


R = ContentTypeReasons


class ContentType(Check[ContentTypeParams]):
    """Refuse a body whose Content-Type is missing or not allowed."""

    name = "content_type"
    Params = ContentTypeParams
    reasons = ContentTypeReasons
    __slots__ = ("_allowed", "_answer")

    def __init__(self, params: ContentTypeParams, services: object) -> None:
        super().__init__(params, services)  # type: ignore[arg-type]
        self._allowed = frozenset(t.lower() for t in params.allowed)
        self._answer = Answer(params.status, params.error)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the media type (before any `;`) is allowed."""
        raw = request.headers.get("Content-Type")
        if raw is None:
            return self.deny(R.content_type_missing, "Content-Type header is required", answer=self._answer)
        media = raw.split(";", 1)[0].strip().lower()
        if media not in self._allowed:
            return self.deny(R.content_type_not_allowed,
                             f"Content-Type must be one of: {', '.join(sorted(self._allowed))}", answer=self._answer)
        return None
