"""The verified access token, as checks share it through `request.facts["token"]`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOKEN_FACT = "token"  # noqa: S105 - a fact name, not a secret


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """An access token whose signature (or introspection) and claims have been verified."""

    issuer_name: str
    """Name of the trusted issuer in config (`trust.token_issuers`)."""
    iss: str
    client_id: str
    jti: str
    iat: float
    exp: float
    scopes: frozenset[str]
    kid: str | None
    claims: dict[str, Any]

    def audit_fields(self) -> dict[str, Any]:
        """What may be logged about the token: never the token itself."""
        return {"token_jti": self.jti, "token_kid": self.kid, "client_id": self.client_id, "token_iss": self.iss}


def token_of(facts: dict[str, Any]) -> VerifiedToken | None:
    """The verified token of a request, if a bearer_token check passed."""
    tok = facts.get(TOKEN_FACT)
    return tok if isinstance(tok, VerifiedToken) else None
