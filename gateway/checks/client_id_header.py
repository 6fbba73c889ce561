"""`client_id_header`: the `client_id` header is present and names the client the token was issued to."""

from __future__ import annotations

from ..config.schema import StrictModel
from .base import Check, Denial, RequestView
from .bearer_token import bearer_challenge
from .token import token_of


class ClientIdHeaderParams(StrictModel):
    """Parameters of `client_id_header`."""

    header: str = "client_id"
    """Header carrying the client id (the bank's API calls it `client_id`)."""
    status: int = 401
    """Status when the header is missing or does not match the token (401 with WWW-Authenticate, or 403)."""


class ClientIdHeader(Check[ClientIdHeaderParams]):
    """Refuse when the header is missing, repeated, or differs from the verified token's client id.

    Never revokes: a mismatched header says nothing about whether the token is genuine.
    Must come after `bearer_token` in the policy.
    """

    name = "client_id_header"
    Params = ClientIdHeaderParams

    def _deny(self, description: str, reason: str) -> Denial:
        if self.params.status == 401:
            return self.deny(401, "invalid_token", description, reason,
                             (("WWW-Authenticate", bearer_challenge("invalid_token", description)),))
        return self.deny(self.params.status, "insufficient_scope" if self.params.status == 403 else "invalid_request",
                         description, reason)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the header equals the token's client id."""
        values = request.headers.getall(self.params.header, [])
        if not values:
            return self._deny(f"{self.params.header} header is required", "client_id_missing")
        if len(values) > 1:
            return self._deny(f"{self.params.header} header must be sent once", "client_id_repeated")
        token = token_of(request.facts)
        if token is None:
            return self._deny("no verified access token to compare the client_id header with", "token_missing")
        if values[0] != token.client_id:
            return self._deny(f"{self.params.header} header does not match the access token", "client_id_mismatch")
        return None
