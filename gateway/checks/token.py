"""The verified access token, as `bearer_token` establishes it for the checks after it (facts `TOKEN`, `CLIENT_ID`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .facts import Fact, Facts, claim_named, header_text


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


TOKEN: Fact[VerifiedToken] = Fact(
    "token", VerifiedToken,
    audit={"client_id": lambda t: t.client_id, "token_jti": lambda t: t.jti, "token_kid": lambda t: t.kid},
)
"""Fact: the verified access token (never forwarded; the decision event names its client, jti and kid)."""
CLIENT_ID: Fact[str] = Fact("client_id", str, header=header_text, claim=claim_named("client_id"))
"""Fact: the verified token's client id (config `policies.fact_headers`: `X-DCR-Client-Id`)."""


def token_of(facts: Facts) -> VerifiedToken | None:
    """The verified token of a request, if a bearer_token check passed."""
    return facts.get(TOKEN)
