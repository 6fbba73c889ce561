"""Client authentication at the token endpoint: client_secret_basic, client_secret_post, private_key_jwt,
tls_client_auth and self_signed_tls_client_auth.

RFC 6749 §2.3 (one method per request), §2.3.1 (Basic credentials are form-encoded first), RFC 7523 §3
and RFC 7521 §4.2 (JWT client assertions), OIDC Core §9 (`private_key_jwt`), RFC 8705 §2 (mutual TLS: the
certificate behind the request, from `PresentedCertificates`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote_plus

from aiohttp import web

from ..certificates import (
    CertificateRefused,
    ForwardedCertificateReader,
    Rdn,
    parse_dn,
    registered_dn,
    same_dn,
    subject_rdns,
)
from ..config import ClientCertificateSettings
from ..observability.logging import get_logger
from .credentials import verify_secret
from .crypto import CryptoError, KeySet, decode_unverified
from .errors import invalid_client, oauth_error
from .gateway_facts import FactsError, GatewayFacts, GatewayFactsVerifier
from .jwks_fetcher import JwksFetcher, JwksFetchError
from .store import Client, Store

log = get_logger("sandbox.client_auth")

JWT_BEARER_ASSERTION: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 3600
"""Assertions valid for longer are refused, which also bounds how long their jti must be remembered."""
_MAX_ID = 256

_FAILED: Final = "client authentication failed"
MTLS_METHODS: Final = ("tls_client_auth", "self_signed_tls_client_auth")
"""The RFC 8705 §2 methods: the client is authenticated by its TLS client certificate alone."""
"""Where a tls_client_auth client's registered subject DN is (RFC 8705 / OB 3.2+ name, then OB 3.1)."""


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The TLS client certificate of a request: as a trusted proxy forwarded it, or as the gateway's signed
    facts assert it (the gateway keeps the certificate header to itself)."""

    thumbprint: str
    """`x5t#S256`: base64url SHA-256 of the DER (RFC 8705 §3.1)."""
    subject: list[Rdn] | None
    """The subject, normalised for comparison (certificates.parse_dn / subject_rdns); None when unknown."""


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """A client that proved its identity, how, and over which TLS client certificate (if any)."""

    client: Client
    method: str
    certificate: ClientCertificate | None = None


class PresentedCertificates:
    """The TLS client certificate behind a request: as the gateway's signed facts assert it (`cnf.x5t#S256`
    and the subject DN; the gateway keeps the certificate header to itself), else as a trusted TLS-terminating
    proxy forwarded it straight to the sandbox port."""

    __slots__ = ("_facts", "_forwarded")

    def __init__(self, settings: ClientCertificateSettings, facts: GatewayFactsVerifier) -> None:
        # The gateway's own reader (certificates.ForwardedCertificateReader): the same header rules.
        self._forwarded = ForwardedCertificateReader(settings.header, settings.format, settings.trusted_proxies)
        self._facts = facts

    async def read(self, request: web.Request) -> tuple[ClientCertificate | None, GatewayFacts | None]:
        """The certificate (None when there is none) and the verified facts (None when none came);
        CertificateError when either cannot be believed."""
        try:
            facts = await self._facts.read(request)
        except FactsError as exc:
            raise CertificateError(str(exc)) from None
        if facts is not None and (thumbprint := facts.cert_thumbprint) is not None:
            return ClientCertificate(thumbprint, facts.cert_subject), facts
        try:
            forwarded = self._forwarded.read(request.headers, request.remote, time.time())
        except CertificateRefused as exc:
            log.info("client_certificate_refused", reason=exc.reason)
            raise CertificateError(exc.description) from None
        if forwarded is None:
            return None, facts
        _, cert, thumbprint = forwarded
        return ClientCertificate(thumbprint, subject_rdns(cert)), facts


class CertificateError(Exception):
    """A certificate (or signed facts) that cannot be believed; the message is safe to show to the client."""


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


@dataclass(slots=True)
class _Request:
    """What a token request authenticates with; `client` is known beforehand for the mTLS methods."""

    authorization: str | None
    form: Mapping[str, str]
    certificate: ClientCertificate | None
    client: Client | None = None


class ClientAuthenticator:
    """Authenticates the client of a token request with exactly one method."""

    def __init__(
        self, store: Store, fetcher: JwksFetcher, *, audiences: Iterable[str], leeway: float
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self._audiences = frozenset(audiences)
        self._leeway = leeway

    async def authenticate(
        self, authorization: str | None, form: Mapping[str, str], certificate: ClientCertificate | None = None
    ) -> AuthenticatedClient:
        """The authenticated client, or a GatewayError (400 invalid_request / 401 invalid_client).

        A certificate is not a method of its own: the client's registered method decides whether it is the
        credential (RFC 8705 §2) or only what the token is bound to (§3) next to a secret or an assertion."""
        uses_basic = authorization is not None
        uses_post = "client_secret" in form
        uses_jwt = "client_assertion" in form or "client_assertion_type" in form
        if uses_basic + uses_post + uses_jwt > 1:
            raise oauth_error(
                "invalid_request", "use exactly one client authentication method (RFC 6749 §2.3)"
            )
        request = _Request(authorization, form, certificate)
        if uses_basic:
            method = "client_secret_basic"
        elif uses_post:
            method = "client_secret_post"
        elif uses_jwt:
            method = "private_key_jwt"
        else:
            request.client = await self._registered_for_mtls(form)
            method = request.client.auth_method or ""
        client = await _METHODS[method](self, request)
        return AuthenticatedClient(client, method, certificate)

    async def _registered_for_mtls(self, form: Mapping[str, str]) -> Client:
        """RFC 8705 §2: no credential in the request, so the certificate is one if the client (named by the
        client_id parameter, which §2 requires) registered an mTLS method."""
        client_id = form.get("client_id")
        if not client_id:
            raise invalid_client("client authentication is required")
        client = await self._store.get_client(client_id) if len(client_id) <= _MAX_ID else None
        if client is None or client.auth_method not in MTLS_METHODS:
            log.info("client_auth_failed", method="mtls", reason="not_registered_for_method")
            raise invalid_client("client authentication is required")
        return client

    async def _basic(self, request: _Request) -> Client:
        assert request.authorization is not None
        client_id, secret = parse_basic(request.authorization)
        self._check_form_client_id(request.form, client_id)
        return await self._by_secret(client_id, secret)

    async def _post(self, request: _Request) -> Client:
        post_id = request.form.get("client_id")
        if not post_id:
            raise invalid_client("client_secret_post needs client_id in the body")
        return await self._by_secret(post_id, request.form["client_secret"])

    async def _jwt(self, request: _Request) -> Client:
        return await self._by_assertion(request.form)

    async def _tls(self, request: _Request) -> Client:
        """RFC 8705 §2.1: the certificate's subject is the DN the client registered (RFC 4514, attribute by
        attribute, RDNs in either order: `certificates.same_dn`, as the gateway's `client_certificate` check)."""
        client, certificate = self._mtls_client(request)
        reg = client.registration or {}
        dn = registered_dn(reg)
        try:
            wanted = parse_dn(dn) if dn is not None else None
        except ValueError:
            wanted = None
        if wanted is None or certificate.subject is None or not same_dn(wanted, certificate.subject):
            log.info("client_auth_failed", client_id=client.client_id, method="tls_client_auth",
                     client_cert_s256=certificate.thumbprint, reason="subject_dn_mismatch")
            raise invalid_client("the TLS client certificate's subject is not the registered "
                                 "tls_client_auth_subject_dn")
        return client

    async def _self_signed(self, request: _Request) -> Client:
        """RFC 8705 §2.2: the certificate is in the client's registered key set (an `x5c` leaf, or its
        `x5t#S256`): the key set its SSA's software_jwks_endpoint names, fetched as for private_key_jwt."""
        client, certificate = self._mtls_client(request)
        keys = await self._client_keys(client, None, "self_signed_tls_client_auth", certificate.thumbprint)
        if not keys.has_certificate(certificate.thumbprint):
            log.info("client_auth_failed", client_id=client.client_id, method="self_signed_tls_client_auth",
                     client_cert_s256=certificate.thumbprint, reason="client_cert_not_in_jwks")
            raise invalid_client("the TLS client certificate is not in the client's registered key set")
        return client

    @staticmethod
    def _mtls_client(request: _Request) -> tuple[Client, ClientCertificate]:
        client = request.client
        assert client is not None  # resolved by _registered_for_mtls
        if request.certificate is None:
            log.info("client_auth_failed", client_id=client.client_id, method=client.auth_method,
                     reason="client_cert_missing")
            raise invalid_client(f"{client.auth_method} needs the TLS client certificate (mutual TLS, RFC 8705 §2)")
        return client, request.certificate

    async def _client_keys(self, client: Client, kid: str | None, method: str, x5t_s256: str | None = None) -> KeySet:
        """The key set of a client registered for `method` (its SSA's software_jwks_endpoint), refetched early
        for an unknown `kid` or certificate (`x5t_s256`)."""
        # SECURITY: only a client registered for a key-set method makes us fetch a JWKS (no SSRF by request).
        if client.auth_method != method or not client.jwks_uri:
            log.info("client_auth_failed", client_id=client.client_id, method=method,
                     reason="not_registered_for_method")
            raise invalid_client(_FAILED)
        try:
            return await self._fetcher.get(client.jwks_uri, kid, x5t_s256=x5t_s256)
        except JwksFetchError as exc:
            log.info("client_auth_failed", client_id=client.client_id, reason="jwks_unavailable")
            raise invalid_client(f"cannot fetch the client's key set: {exc}") from None

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
        if client.auth_method in MTLS_METHODS:
            # The registered method decides: the certificate is this client's credential (RFC 8705 §2).
            log.info("client_auth_failed", client_id=client_id, method="client_secret", reason="registered_for_mtls")
            raise invalid_client(f"this client is registered for {client.auth_method}: "
                                 "it authenticates with its TLS client certificate")
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
        if client is None:
            log.info("client_auth_failed", method="private_key_jwt", reason="not_registered_for_method")
            raise invalid_client(_FAILED)
        kid = header.get("kid")
        keys = await self._client_keys(client, kid if isinstance(kid, str) else None, "private_key_jwt")
        registered_alg = (client.registration or {}).get("token_endpoint_auth_signing_alg")
        algs = (registered_alg,) if isinstance(registered_alg, str) else ("PS256", "ES256")
        try:
            _, claims = await keys.verify(assertion, algs=algs, sole_key_without_kid=True)
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


_Authenticate = Callable[[ClientAuthenticator, _Request], Awaitable[Client]]
_METHODS: Final[Mapping[str, _Authenticate]] = {
    "client_secret_basic": ClientAuthenticator._basic,
    "client_secret_post": ClientAuthenticator._post,
    "private_key_jwt": ClientAuthenticator._jwt,
    "tls_client_auth": ClientAuthenticator._tls,
    "self_signed_tls_client_auth": ClientAuthenticator._self_signed,
}
AUTH_METHODS: Final = tuple(_METHODS)
"""The token endpoint auth methods implemented, as discovery advertises them (RFC 8414 §2)."""
