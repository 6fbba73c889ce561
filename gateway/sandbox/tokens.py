"""Access tokens: issued as RFC 9068 JWTs signed by the sandbox, and checked again when presented to it."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

from ..observability.logging import get_logger
from .crypto import CryptoError, KeySet, SigningKey, alg_for, sign
from .errors import invalid_token
from .store import Store, TokenState

log = get_logger("sandbox.tokens")

AT_JWT_TYPES: Final = ("at+jwt", "application/at+jwt")  # RFC 9068 §2.1
_B64TOKEN: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1


@dataclass(frozen=True, slots=True)
class AccessToken:
    """The verified facts of a presented access token."""

    client_id: str
    jti: str
    scope: str
    iat: int
    exp: int
    cert_thumbprint: str | None = None
    """`cnf.x5t#S256` of a certificate-bound token (RFC 8705 §3): usable only over that certificate."""


def _int_claim(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_token(f"access token has no numeric {name}")
    return int(value)


def _str_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_token(f"access token has no {name}")
    return value


class TokenService:
    """Issues access tokens and checks the ones presented back (signature, claims, revocation, watermark)."""

    def __init__(
        self, *, key: SigningKey, store: Store, issuer: str, audience: str, lifetime: int, leeway: float
    ) -> None:
        self._key = key
        self._keys = KeySet.of([key])
        self._store = store
        self._issuer = issuer
        self._audience = audience
        self.lifetime = lifetime
        self._leeway = leeway

    @property
    def kid(self) -> str:
        """The kid of the signing key."""
        return self._key.kid

    def issue(
        self, client_id: str, scope: str, now: float | None = None, *, cert_thumbprint: str | None = None
    ) -> tuple[str, AccessToken]:
        """A signed JWT access token (RFC 9068 §2: typ at+jwt; iss sub client_id aud scope iat exp jti), bound to
        the client's TLS certificate by `cnf.x5t#S256` when `cert_thumbprint` is given (RFC 8705 §3.1)."""
        iat = int(now if now is not None else time.time())
        token = AccessToken(
            client_id=client_id, jti=str(uuid.uuid4()), scope=scope, iat=iat, exp=iat + self.lifetime
        )
        claims = {
            "iss": self._issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": self._audience,
            "scope": scope,
            "iat": token.iat,
            "exp": token.exp,
            "jti": token.jti,
        }
        if cert_thumbprint is not None:
            claims["cnf"] = {"x5t#S256": cert_thumbprint}
        return sign(self._key, claims, typ="at+jwt"), token

    async def authenticate(self, authorization: str | None) -> AccessToken:
        """The access token in an `Authorization: Bearer` header (RFC 6750 §2.1), or a 401 GatewayError."""
        if not authorization:
            raise invalid_token("an access token is required (Authorization: Bearer …)", missing=True)
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(value):
            raise invalid_token("the Authorization header is not a Bearer token")
        try:
            _, claims = await self._keys.verify(value, algs=(alg_for(self._key),), typ=AT_JWT_TYPES)
        except CryptoError as exc:
            log.info("access_token_rejected", reason=exc.reason)
            if exc.reason == "typ_mismatch":
                raise invalid_token("the token is not an access token (typ must be at+jwt)") from None
            raise invalid_token("the access token was not issued by this sandbox or is malformed") from None
        token = self._check_claims(claims)
        state = await self._store.token_state(token.jti, token.client_id, token.iat)
        if state is not TokenState.VALID:
            log.info("access_token_rejected", reason=state.value, client_id=token.client_id, jti=token.jti)
            raise invalid_token(_STATE_DESCRIPTIONS[state])
        return token

    def _check_claims(self, claims: dict[str, Any]) -> AccessToken:
        if claims.get("iss") != self._issuer:
            raise invalid_token("the access token has the wrong issuer")
        aud = claims.get("aud")
        if aud != self._audience and not (isinstance(aud, list) and self._audience in aud):
            raise invalid_token("the access token has the wrong audience")
        now = time.time()
        exp = _int_claim(claims, "exp")
        iat = _int_claim(claims, "iat")
        if exp + self._leeway < now:
            raise invalid_token("the access token has expired")
        if iat - self._leeway > now:
            raise invalid_token("the access token is not valid yet")
        client_id = _str_claim(claims, "client_id")
        if claims.get("sub") != client_id:
            raise invalid_token("the access token's sub and client_id differ")
        scope = claims.get("scope", "")
        cnf = claims.get("cnf")
        bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if cnf is not None and not (isinstance(bound, str) and bound):
            raise invalid_token("the access token's cnf claim is not a certificate confirmation")
        return AccessToken(
            client_id=client_id,
            jti=_str_claim(claims, "jti"),
            scope=scope if isinstance(scope, str) else "",
            iat=iat,
            exp=exp,
            cert_thumbprint=bound,
        )

    async def revoke(self, token: AccessToken, reason: str) -> None:
        """Revoke one token at once (stored by jti until it would have expired)."""
        await self._store.revoke_token(token.jti, token.client_id, token.exp, int(time.time()))
        log.info("access_token_revoked", client_id=token.client_id, jti=token.jti, reason=reason)


_STATE_DESCRIPTIONS: Final = {
    TokenState.REVOKED: "the access token has been revoked",
    TokenState.INVALIDATED: "the access token was invalidated when its client was deleted",
    TokenState.CLIENT_GONE: "the access token's client no longer exists",
}
