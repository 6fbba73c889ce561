"""Client authentication at the token endpoint: client_secret_basic, client_secret_post, private_key_jwt.

RFC 6749 §2.3 (one method per request), §2.3.1 (Basic credentials are form-encoded first), RFC 7523 §3
and RFC 7521 §4.2 (JWT client assertions), OIDC Core §9 (`private_key_jwt`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus

from ..observability.logging import get_logger
from .credentials import verify_secret
from .crypto import CryptoError, decode_unverified
from .errors import invalid_client, oauth_error
from .jwks_fetcher import JwksFetcher, JwksFetchError
from .store import Client, Store

log = get_logger("sandbox.client_auth")

JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 3600
"""Assertions valid for longer are refused, which also bounds how long their jti must be remembered."""
_MAX_ID = 256

_FAILED: Final = "client authentication failed"


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """A client that proved its identity, and how."""

    client: Client
    method: str


def parse_basic(header: str) -> tuple[str, str]:
    """client_id and secret from `Authorization: Basic …`, each form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise invalid_client("the Authorization header must use the Basic scheme at the token endpoint")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except (binascii.Error, ValueError):
        raise invalid_client("malformed Basic credentials") from None
    if not sep or not client_id or not secret:
        raise invalid_client("malformed Basic credentials")
    return client_id, secret


def _num(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_client(f"client_assertion {name} must be a NumericDate")
    return float(value)


class ClientAuthenticator:
    """Authenticates the client of a token request with exactly one method."""

    def __init__(
        self, store: Store, fetcher: JwksFetcher, *, audiences: Iterable[str], leeway: float
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._audiences = frozenset(audiences)
        self._leeway = leeway

    async def authenticate(self, authorization: str | None, form: Mapping[str, str]) -> AuthenticatedClient:
        """The authenticated client, or a GatewayError (400 invalid_request / 401 invalid_client)."""
        uses_basic = authorization is not None
        uses_post = "client_secret" in form
        uses_jwt = "client_assertion" in form or "client_assertion_type" in form
        if uses_basic + uses_post + uses_jwt > 1:
            raise oauth_error(
                "invalid_request", "use exactly one client authentication method (RFC 6749 §2.3)"
            )
        if authorization is not None:
            client_id, secret = parse_basic(authorization)
            self._check_form_client_id(form, client_id)
            return AuthenticatedClient(await self._by_secret(client_id, secret), "client_secret_basic")
        if uses_post:
            post_id = form.get("client_id")
            if not post_id:
                raise invalid_client("client_secret_post needs client_id in the body")
            return AuthenticatedClient(
                await self._by_secret(post_id, form["client_secret"]), "client_secret_post"
            )
        if uses_jwt:
            return AuthenticatedClient(await self._by_assertion(form), "private_key_jwt")
        raise invalid_client("client authentication is required")

    @staticmethod
    def _check_form_client_id(form: Mapping[str, str], client_id: str) -> None:
        given = form.get("client_id")
        if given is not None and given != client_id:
            raise oauth_error(
                "invalid_request", "client_id in the body differs from the authenticated client"
            )

    async def _by_secret(self, client_id: str, secret: str) -> Client:
        client = await self._store.get_client(client_id) if len(client_id) <= _MAX_ID else None
        ok = await asyncio.to_thread(verify_secret, secret, client.secret_hash if client else None)
        if client is None or not ok:
            log.info("client_auth_failed", method="client_secret", reason="bad_credentials")
            raise invalid_client(_FAILED)
        return client

    async def _by_assertion(self, form: Mapping[str, str]) -> Client:
        """RFC 7523 §3: iss = sub = client_id, aud, exp, single-use jti, signed by a key in the TPP JWKS."""
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise oauth_error("invalid_request", f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise oauth_error("invalid_request", "client_assertion is required")
        try:
            header, unverified = decode_unverified(assertion)
        except CryptoError:
            raise invalid_client("client_assertion is not a JWS") from None
        client_id = unverified.get("sub")
        if not isinstance(client_id, str) or not client_id or len(client_id) > _MAX_ID:
            raise invalid_client("client_assertion has no sub")
        if unverified.get("iss") != client_id:
            raise invalid_client("client_assertion iss and sub must both be the client_id")
        self._check_form_client_id(form, client_id)
        client = await self._store.get_client(client_id)
        # SECURITY: only a client registered for private_key_jwt makes us fetch a JWKS (no SSRF by assertion).
        if client is None or client.auth_method != "private_key_jwt" or not client.jwks_uri:
            log.info("client_auth_failed", method="private_key_jwt", reason="not_registered_for_method")
            raise invalid_client(_FAILED)
        kid = header.get("kid")
        try:
            keys = await self._fetcher.get(client.jwks_uri, kid if isinstance(kid, str) else None)
        except JwksFetchError as exc:
            log.info("client_auth_failed", client_id=client_id, reason="jwks_unavailable")
            raise invalid_client(f"cannot check the client_assertion: {exc}") from None
        registered_alg = (client.registration or {}).get("token_endpoint_auth_signing_alg")
        algs = (registered_alg,) if isinstance(registered_alg, str) else ("PS256", "ES256")
        try:
            _, claims = await keys.verify(assertion, algs=algs)
        except CryptoError as exc:
            log.info("client_auth_failed", client_id=client_id, kid=kid, reason=exc.reason)
            raise invalid_client(f"client_assertion rejected: {exc.description}") from None
        jti, exp = self._check_claims(claims, client_id)
        now = time.time()
        if not await self._store.use_assertion(client_id, jti, int(exp) + 1, int(now)):
            log.info("client_auth_failed", client_id=client_id, jti=jti, reason="assertion_replayed")
            raise invalid_client("client_assertion jti has already been used")
        return client

    def _check_claims(self, claims: Mapping[str, Any], client_id: str) -> tuple[str, float]:
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise invalid_client("client_assertion iss and sub must both be the client_id")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not self._audiences.intersection(a for a in auds if isinstance(a, str)):
            raise invalid_client("client_assertion aud must be the token endpoint URL or the issuer")
        now = time.time()
        exp = _num(claims, "exp", required=True)
        assert exp is not None
        if exp + self._leeway < now:
            raise invalid_client("client_assertion has expired")
        if exp - now > MAX_ASSERTION_LIFETIME + self._leeway:
            raise invalid_client(f"client_assertion lifetime exceeds {MAX_ASSERTION_LIFETIME} seconds")
        for name in ("iat", "nbf"):
            value = _num(claims, name, required=False)
            if value is not None and value - self._leeway > now:
                raise invalid_client(f"client_assertion {name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _MAX_ID:
            raise invalid_client("client_assertion needs a jti")
        return jti, exp
