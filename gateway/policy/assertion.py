"""Signed facts: what the gateway verified, as a short-lived JWS the backend checks (`upstream.signed_facts`).

The plain fact headers (`policies.fact_headers`) can be trusted only as far as the network between the gateway
and the backend can. The signed facts can be trusted as far as the gateway's key: a compact JWS in one header
(`X-DCR-Assertion` by default), as Google IAP's `x-goog-iap-jwt-assertion`, Cloudflare Access's
`Cf-Access-Jwt-Assertion` or Envoy's XFCC do. It is built only for a request every check allowed — the same
rule as the fact headers (`Decision.forward_headers` is None otherwise) — and carries:

- `iss` (server.public_url), `aud` (the backend: `signed_facts.audience`, else upstream.url), `iat`, `exp`
  (`lifetime_seconds` after), `jti` (unique; the backend may use it to refuse a replay);
- the request it belongs to: `method` and `path` (the target as sent upstream, query included), `policy`,
  `interaction_id` (x-fapi-interaction-id);
- each verified fact with a `claim` projection (gateway/checks/facts.py): `client_id`, `software_id`, `org_id`,
  `software_roles`, `cnf` `{"x5t#S256": …}` (the TPP's certificate, RFC 8705 §3.1), `client_cert_subject_dn`.

The header is `{"alg", "kid", "typ": "dcr-facts+jwt"}` (explicit typing, RFC 8725 §3.11: it cannot pass for an
access token). The public key is published on the admin listener (`/facts/jwks.json`). The key is a PEM file
(`key_file`) or, when none is configured, generated at start and kept in memory (one process only).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..checks.facts import Facts
from ..config import Settings, SignedFactsSettings
from ..jose import JoseError, JwtSigner, SigningKey, generate_signing_key, load_signing_key_pem, public_jwk_from_pem

FACTS_TYP: Final = "dcr-facts+jwt"
"""The `typ` of the signed facts (RFC 8725 §3.11 explicit typing)."""


class FactAssertionError(Exception):
    """The signing key cannot be used; the message names the key path, never the key."""


class FactAssertion:
    """Signs the verified facts of allowed requests for the backend, with one key loaded at start."""

    __slots__ = ("_audience", "_clock", "_issuer", "_lifetime", "_published", "_signer", "header")

    def __init__(
        self,
        key: SigningKey,
        *,
        header: str,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        published: tuple[dict[str, Any], ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`published`: public JWKs published besides the signing key (a rotation's next or previous key)."""
        self._signer = JwtSigner(key, typ=FACTS_TYP)
        self._published = tuple(k for k in published if k.get("kid") != key.kid)
        self.header = header
        """The request header the JWS goes in."""
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> FactAssertion | None:
        """The configured signer (loading `key_file` now), or None when signed facts are off."""
        cfg = settings.upstream.signed_facts
        if not cfg.enabled:
            return None
        return cls(
            _load_key(settings, cfg),
            header=cfg.header,
            issuer=settings.server.public_url,
            audience=settings.upstream.facts_audience,
            lifetime_seconds=cfg.lifetime_seconds,
            published=tuple(_load_public(settings, path) for path in cfg.published_key_files),
        )

    @property
    def kid(self) -> str:
        """The signing key's id (its RFC 7638 thumbprint unless the PEM loader was given one)."""
        return self._signer.key.kid

    def jwks(self) -> dict[str, Any]:
        """The signing key's public half, then the other published keys, as a JWK Set (the admin listener)."""
        own: list[dict[str, Any]] = self._signer.jwks()["keys"]
        return {"keys": [*own, *self._published]}

    def sign(self, facts: Facts, *, policy: str, method: str, path: str, interaction_id: str) -> str:
        """The JWS for one allowed request (the caller sends it only when no check denied)."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._lifetime,
            "jti": secrets.token_urlsafe(16),
            "method": method,
            "path": path,
            "policy": policy,
            "interaction_id": interaction_id,
        }
        claims.update(facts.claims())
        return self._signer.sign(claims)


def _read(settings: Settings, key: str, value: str) -> tuple[Path, bytes]:
    path = settings.resolve_path(value)
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise FactAssertionError(f"upstream.signed_facts.{key}: cannot read {path}: {exc.strerror}") from None


def _load_public(settings: Settings, value: str) -> dict[str, Any]:
    path, pem = _read(settings, "published_key_files", value)
    try:
        return public_jwk_from_pem(pem)
    except JoseError:
        raise FactAssertionError(f"upstream.signed_facts.published_key_files: {path} is not an EC or RSA (2048 "
                                 "bits or more) key in PEM") from None


def _load_key(settings: Settings, cfg: SignedFactsSettings) -> SigningKey:
    if cfg.key_file is None:
        return generate_signing_key("EC", crv="P-256")
    path, pem = _read(settings, "key_file", cfg.key_file)
    try:
        key = load_signing_key_pem(pem)
        key.verification_key()  # SECURITY: the public half must be usable (RSA of 2048 bits or more)
        alg = key.alg
    except (JoseError, ValueError):
        raise FactAssertionError(f"upstream.signed_facts.key_file: {path} is not an EC P-256 or RSA (2048 bits "
                                 "or more) private key in PEM") from None
    if alg not in ("ES256", "PS256"):
        raise FactAssertionError(f"upstream.signed_facts.key_file: {path} signs {alg}; use EC P-256 (ES256) "
                                 "or RSA (PS256)")
    return key
