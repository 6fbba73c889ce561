"""`required_headers`: named headers must be present (once) and non-empty."""

from __future__ import annotations

from pydantic import Field

from ..config.schema import StrictModel
from ..reasons import Answer, Reason, Reasons
from .base import Check, Denial, RequestView
from .services import Services


class RequiredHeadersParams(StrictModel):
    """Parameters of `required_headers`."""

    names: tuple[str, ...] = Field(min_length=1)
    """Header names that must be present exactly once with a non-empty value."""
    status: int = 400
    """Status of the denial."""
    error: str = "invalid_request"
    """Error code of the denial."""


class RequiredHeadersReasons(Reasons):
    """Why `required_headers` refuses: answered with the check's `status` and `error` (default 400
    invalid_request)."""

    header_missing = Reason(400, "invalid_request", configurable="status, error")


R = RequiredHeadersReasons


class RequiredHeaders(Check[RequiredHeadersParams]):
    """Refuse a request missing one of the named headers."""

    name = "required_headers"
    Params = RequiredHeadersParams
    reasons = RequiredHeadersReasons
    __slots__ = ("_answer",)

    def __init__(self, params: RequiredHeadersParams, services: Services) -> None:
        super().__init__(params, services)
        self._answer = Answer(params.status, params.error)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when every named header is present once and not blank."""
        for header in self.params.names:
            values = request.headers.getall(header, [])
            if len(values) != 1 or not values[0].strip():
                what = "must be sent once" if len(values) > 1 else "is required"
                return self.deny(R.header_missing, f"header {header} {what}", answer=self._answer)
        return None
