"""The gateway's signed facts (config `upstream.signed_facts`), as the sandbox bank — the backend — reads them.

What the gateway verified reaches the sandbox in one header, a compact JWS (gateway/policy/assertion.py). The
sandbox believes it only through its signature, never a plain header: the key is the gateway's (handed over in
process, or fetched from the gateway's admin listener), `typ` is `dcr-facts+jwt`, and `iss`, `aud`, `exp`/`iat`
and the request it was made for (`method`, `path`) must all be this request's. A header that is present but
fails any of that is refused outright (`FactsError`): the sandbox never falls back to believing less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ..certificates import Rdn, parse_dn
from ..jose import ClaimRules
from ..observability.logging import get_logger
from ..policy.assertion import FACTS_TYP
from .crypto import ALLOWED_ALGS, CryptoError, KeySet, decode_unverified
from .jwks_fetcher import JwksFetcher, JwksFetchError

log = get_logger("sandbox.gateway_facts")

_TYPES: Final = (FACTS_TYP,)


class FactsError(Exception):
    """Signed facts that cannot be believed; the message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class GatewayFacts:
    """The verified claims of the gateway's signed facts for this request."""

    claims: dict[str, Any]

    def text(self, name: str) -> str | None:
        """A text claim, None when absent or not text."""
        value = self.claims.get(name)
        return value if isinstance(value, str) and value else None

    @property
    def cert_thumbprint(self) -> str | None:
        """`cnf.x5t#S256`: the TPP's transport certificate the gateway checked (RFC 8705 §3.1)."""
        cnf = self.claims.get("cnf")
        value = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        return value if isinstance(value, str) and value else None

    @property
    def cert_subject(self) -> list[Rdn] | None:
        """The certificate's subject, parsed from `client_cert_subject_dn` (None when absent or unreadable)."""
        dn = self.text("client_cert_subject_dn")
        if dn is None:
            return None
        try:
            return parse_dn(dn)
        except ValueError:
            return None


class GatewayFactsVerifier:
    """Reads and verifies the signed facts header of a request."""

    __slots__ = ("_fetcher", "_jwks_uri", "_keys", "_rules", "header")

    def __init__(
        self,
        *,
        header: str,
        issuer: str,
        audience: str,
        leeway: float,
        keys: KeySet | None = None,
        jwks_uri: str | None = None,
        fetcher: JwksFetcher | None = None,
    ) -> None:
        self.header = header
        # iss, aud, exp and iat by the one verifier's claim rules (gateway/jose/claims.py).
        self._rules = ClaimRules.build(issuers=issuer, audiences=audience, leeway_seconds=leeway,
                                       require=("exp", "iat"))
        self._keys = keys
        self._jwks_uri = jwks_uri
        self._fetcher = fetcher

    async def read(self, request: web.Request) -> GatewayFacts | None:
        """The verified facts, None when the request carries none; FactsError when they cannot be believed."""
        values = request.headers.getall(self.header, [])
        if not values:
            return None
        if len(values) > 1:
            raise self._refused("more than one signed facts header", "duplicate")
        token = values[0].strip()
        try:
            keys = await self._key_set(token)
            _, claims = await keys.verify(token, algs=ALLOWED_ALGS, typ=_TYPES, rules=self._rules)
        except CryptoError as exc:
            raise self._refused(f"the gateway's signed facts do not verify ({exc.reason})", exc.reason) from None
        # SECURITY: facts belong to one request; a copy sent with another method or path is not believed.
        if claims.get("method") != request.method or claims.get("path") != request.rel_url.raw_path_qs:
            raise self._refused("the signed facts were made for another request", "wrong_request")
        return GatewayFacts(claims)

    async def _key_set(self, token: str) -> KeySet:
        if self._keys is not None:
            return self._keys
        if self._jwks_uri is None or self._fetcher is None:
            raise self._refused("the sandbox does not know the gateway's signing key (sandbox.gateway_jwks_uri)",
                                "no_key")
        header, _ = decode_unverified(token)
        kid = header.get("kid")
        try:
            return await self._fetcher.get(self._jwks_uri, kid if isinstance(kid, str) else None)
        except JwksFetchError:
            raise self._refused("the gateway's signing key could not be fetched", "jwks_unavailable") from None

    @staticmethod
    def _refused(description: str, reason: str) -> FactsError:
        log.info("gateway_facts_refused", reason=reason)
        return FactsError(description)

