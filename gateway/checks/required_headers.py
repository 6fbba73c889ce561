"""`required_headers`: named headers must be present (once) and non-empty."""

from __future__ import annotations

from pydantic import Field

from ..config.schema import StrictModel
from .base import Check, Denial, RequestView


class RequiredHeadersParams(StrictModel):
    """Parameters of `required_headers`."""

    names: tuple[str, ...] = Field(min_length=1)
    """Header names that must be present exactly once with a non-empty value."""
    status: int = 400
    """Status of the denial."""
    error: str = "invalid_request"
    """Error code of the denial."""


class RequiredHeaders(Check[RequiredHeadersParams]):
    """Refuse a request missing one of the named headers."""

    name = "required_headers"
    Params = RequiredHeadersParams

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when every named header is present once and not blank."""
        for header in self.params.names:
            values = request.headers.getall(header, [])
            if len(values) != 1 or not values[0].strip():
                what = "must be sent once" if len(values) > 1 else "is required"
                return self.deny(self.params.status, self.params.error, f"header {header} {what}",
                                 "header_missing")
        return None
