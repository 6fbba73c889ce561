"""`client_ownership`: `{ClientId}` in the path is the token's own client; the bank's revocation rules."""

from __future__ import annotations

from typing import Literal

from ..config.schema import StrictModel
from ..observability.logging import get_logger
from ..reasons import Answer, Challenge, Reason, Reasons
from .base import Check, Denial, Recording, RequestView
from .services import Services
from .token import token_of

log = get_logger("client_ownership")


class ClientOwnershipParams(StrictModel):
    """Parameters of `client_ownership`."""

    path_param: str = "ClientId"
    """Name of the path-template parameter holding the client id."""
    status: Literal[401, 403] = 401
    """Status when the ClientId is not the token's client: 401 as the bank's page says for an unknown ClientId
    (RFC 7592 §2), or 403 for deployments that prefer it."""
    revoke_on_mismatch: bool = True
    """Revoke the (verified) token at once when it names another ClientId — the bank's rule for unknown ids."""
    revoke_on_upstream_401: bool = True
    """Revoke the token when the upstream answers 401 for this ClientId (unknown or deleted client)."""
    revoke_client_on_delete: bool = True
    """When the upstream confirms a DELETE (204), revoke every token issued to the client up to that moment."""


class ClientOwnershipReasons(Reasons):
    """Why `client_ownership` refuses: 401 invalid_token, or with `status` 403, 403 insufficient_scope, both with
    a Bearer challenge."""

    client_not_owned = Reason(401, "invalid_token", Challenge.BEARER_ERROR, configurable="status")
    token_missing = Reason(401, "invalid_token", Challenge.BEARER_ERROR, configurable="status")
    client_id_missing = Reason(404, "not_found")
    """The route's template has no `path_param` value (a policy mistake: never forwarded)."""


R = ClientOwnershipReasons


class ClientOwnership(Check[ClientOwnershipParams]):
    """Refuse access to another client's registration; apply the revocation rules of the bank's page.

    Only a token that `bearer_token` verified is ever revoked: a forged or malformed token names a jti
    that may belong to someone else, and revoking it would let anyone revoke anyone's token. With
    `revoke_on_mismatch` the check runs after every verifying check of its policy (`records_state`), so a
    token is only revoked for a request that proved everything else, e.g. possession of the certificate a
    certificate-bound token is bound to: a thief holding the token alone cannot get it revoked.
    """

    name = "client_ownership"
    Params = ClientOwnershipParams
    reasons = ClientOwnershipReasons
    __slots__ = ("_answer",)

    def __init__(self, params: ClientOwnershipParams, services: Services) -> None:
        super().__init__(params, services)
        self._answer = (Answer(401, "invalid_token", Challenge.BEARER_ERROR) if params.status == 401
                        else Answer(403, "insufficient_scope", Challenge.BEARER_ERROR))

    @property
    def records_state(self) -> Recording:
        """ON_REFUSAL when a mismatch revokes the token, else NONE."""
        return Recording.ON_REFUSAL if self.params.revoke_on_mismatch else Recording.NONE

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass when the path's client id equals the verified token's client id."""
        token = token_of(request.facts)
        client_id = request.params.get(self.params.path_param)
        if client_id is None:
            return self.deny(R.client_id_missing, "no client id in the path")
        if token is None:
            return self.deny(R.token_missing, "no verified access token", answer=self._answer)
        if client_id == token.client_id:
            return None
        if self.params.revoke_on_mismatch and not request.dry_run:
            # SECURITY: token verified above (signature, issuer, expiry); safe to revoke.
            await self.services.revocations.revoke_token(token, request.now, cause="client_not_owned")
            log.info("token_revoked", cause="client_not_owned", token_jti=token.jti, client_id=token.client_id)
        return self.deny(R.client_not_owned, "the access token was not issued to this client", answer=self._answer)

    async def after_response(self, request: RequestView, status: int) -> None:
        """Upstream 401 → revoke the token; DELETE confirmed (204) → revoke all of the client's tokens."""
        token = token_of(request.facts)
        if token is None:
            return
        revocations = self.services.revocations
        if status == 401 and self.params.revoke_on_upstream_401:
            await revocations.revoke_token(token, request.now, cause="upstream_401")
            log.info("token_revoked", cause="upstream_401", token_jti=token.jti, client_id=token.client_id)
        elif status == 204 and request.method == "DELETE" and self.params.revoke_client_on_delete:
            await revocations.revoke_client(token.iss, token.client_id, self.services.clock(), cause="client_deleted")
            log.info("client_tokens_revoked", cause="client_deleted", client_id=token.client_id)
