"""The bench's token issuer: one signing key per run, its JWKS (served by the bench upstream) and tokens."""

from __future__ import annotations

import json
import time
import uuid
from functools import cache
from typing import Any

from gateway.jose import SigningKey, generate_signing_key, sign_jwt

ISSUER = "https://as.bench.invalid"
CLIENT_ID = "bench-client"


@cache
def signing_key() -> SigningKey:
    """The run's PS256 key (RSA 2048): what the shipped token policy verifies on every request."""
    return generate_signing_key("RSA", kid="bench-1")


def jwks_json() -> str:
    """The public JWKS the upstream serves at /jwks."""
    return json.dumps({"keys": [signing_key().public_jwk(alg="PS256")]})


def access_token(client_id: str = CLIENT_ID, lifetime: int = 3600) -> str:
    """A valid RFC 9068 access token for `client_id`, long enough for a whole run."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "sub": client_id, "client_id": client_id, "aud": "dcr",
                              "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4()), "scope": "openid"}
    return sign_jwt(claims, signing_key(), "PS256", typ="at+jwt")
