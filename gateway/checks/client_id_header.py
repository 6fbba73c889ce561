"""`client_id_header`: the `client_id` header is present and names the client the token was issued to."""

from __future__ import annotations

from ..config.schema import StrictModel
from ..reasons import Answer, Challenge, Reason, Reasons
from .base import Check, Denial, RequestView
from .services import Services
from .token import token_of


class ClientIdHeaderParams(StrictModel):
    """Parameters of `client_id_header`."""

    header: str = "client_id"
    """Header carrying the client id (the bank's API calls it `client_id`)."""
    status: int = 401
    """Status when the header is missing or does not match the token (401 with WWW-Authenticate, or 403)."""


_BY_STATUS = (401, "invalid_token", Challenge.BEARER_ERROR)


class ClientIdHeaderReasons(Reasons):
    """Why `client_id_header` refuses: answered 401 invalid_token with a Bearer challenge, or, with `status`
    403, 403 insufficient_scope (any other `status`: invalid_request)."""

    client_id_missing = Reason(*_BY_STATUS, configurable="status")
    client_id_repeated = Reason(*_BY_STATUS, configurable="status")
    client_id_mismatch = Reason(*_BY_STATUS, configurable="status")
    token_missing = Reason(*_BY_STATUS, configurable="status")
    """No verified access token (the policy lacks `bearer_token` before it, or it is in audit mode)."""


R = ClientIdHeaderReasons


def _answer(status: int) -> Answer:
    if status == 401:
        return Answer(401, "invalid_token", Challenge.BEARER_ERROR)
    return Answer(status, "insufficient_scope" if status == 403 else "invalid_request")


class ClientIdHeader(Check[ClientIdHeaderParams]):
    """Refuse when the header is missing, repeated, or differs from the verified token's client id.

    Never revokes: a mismatched header says nothing about whether the token is genuine.
    Must come after `bearer_token` in the policy.
    """

    name = "client_id_header"
    Params = ClientIdHeaderParams
    reasons = ClientIdHeaderReasons
    __slots__ = ("_answer",)

    def __init__(self, params: ClientIdHeaderParams, services: Services) -> None:
        super().__init__(params, services)
        self._answer = _answer(params.status)

    def _deny(self, reason: Reason, description: str) -> Denial:
        return self.deny(reason, description, answer=self._answer)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the header equals the token's client id."""
        values = request.headers.getall(self.params.header, [])
        if not values:
            return self._deny(R.client_id_missing, f"{self.params.header} header is required")
        if len(values) > 1:
            return self._deny(R.client_id_repeated, f"{self.params.header} header must be sent once")
        token = token_of(request.facts)
        if token is None:
            return self._deny(R.token_missing, "no verified access token to compare the client_id header with")
        if values[0] != token.client_id:
            return self._deny(R.client_id_mismatch, f"{self.params.header} header does not match the access token")
        return None
