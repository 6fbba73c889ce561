"""Access-token verification with a bounded cache of verified tokens (never beyond `exp`)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config import TokenIssuer
from ..jose import ClaimRules, JoseError, JwsVerifier, KeyProvider, Trust, validate_claims
from ..jose.claims import CLIENT_ID, NUMERIC_DATE, TOKEN_SCOPE, read_claim
from ..jose.encoding import json_loads_strict
from .key_urls import CONFIGURED_URLS
from .token import VerifiedToken

MAX_TOKEN_BYTES = 8192
"""Longest access token accepted (`bearer_token` refuses a longer one before the verifier sees it)."""
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
"""RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" """
MAX_INTROSPECTION_BYTES = 65536
"""Largest RFC 7662 introspection answer read (a few hundred bytes in practice)."""
IssuerMap = Mapping[str, tuple[str, TokenIssuer]]
"""Trusted issuers of one policy: `iss` value → (config name, issuer settings)."""


@dataclass(frozen=True, slots=True)
class _Verified:
    """A cache entry: the verified token and, for a JWT, where its key came from and which key it was."""

    token: VerifiedToken
    trust: Trust | None = None
    thumbprint: str | None = None


class TokenVerifier:
    """Verifies JWT access tokens (or introspects opaque ones) and caches the verified result.

    The cache is keyed by a SHA-256 of the token (the token itself is never kept), bounded in size, and an
    entry never outlives the token's `exp`; revocation and per-policy rules are applied by the caller on
    every request. A cached JWT is served only while its signing key is still the issuer's: every hit looks
    its `kid` up in the key set (a dictionary lookup while the JWKS cache is fresh), so once the key set has
    been refetched without that key the token is refused (`unknown_kid`), and a `kid` now naming another key
    sends the token through full verification again.
    """

    __slots__ = ("_cache", "_clock", "_max_entries", "_session", "_skew", "_trust", "_verifier")

    def __init__(
        self,
        keys: KeyProvider,
        *,
        skew_seconds: float,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        # The one JWS path (gateway/jose/verifier.py); what is the token's own: its size limit and wording.
        self._verifier = JwsVerifier(keys, max_bytes=MAX_TOKEN_BYTES, missing_kid="the access token has no kid header",
                                     clock=clock)
        self._skew = skew_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._trust: dict[tuple[Any, ...], Trust] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Nothing to open until an introspecting issuer is used."""

    async def close(self) -> None:
        """Close the introspection session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def clear(self) -> None:
        """Forget every cached verification."""
        self._cache.clear()

    async def verify(self, raw: str, issuers: IssuerMap, now: float) -> VerifiedToken:
        """The verified token, from the cache or freshly verified; JoseError when it is not acceptable (`malformed`
        when `raw`, ASCII text, is not an RFC 6750 b64token)."""
        digest = hashlib.sha256(raw.encode("ascii")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if now < cached.token.exp:
                try:
                    same_key = await self._same_key(cached)
                except JoseError:
                    self._cache.pop(digest, None)  # the key is gone (or unreachable): verify again next time
                    raise
                if same_key:
                    if digest in self._cache:  # (another request may have dropped it meanwhile)
                        self._cache.move_to_end(digest)
                    return cached.token
            self._cache.pop(digest, None)
        # Judged once per token text, before any verification or introspection: a remembered token passed it.
        if not _B64TOKEN.match(raw):
            raise JoseError("malformed", "the access token is malformed")
        if raw.count(".") == 2:
            entry = await self._verify_jwt(raw, issuers, now)
        else:
            entry = _Verified(await self._introspect(raw, digest, issuers, now))
        if now < entry.token.exp:
            self._cache[digest] = entry
            if len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return entry.token

    async def _same_key(self, cached: _Verified) -> bool:
        """True while the key that verified a cached JWT is still published under its kid; JoseError
        (`unknown_kid`, `jwks_unavailable`, …) when the key set no longer has the kid or cannot be had."""
        if cached.trust is None or cached.token.kid is None:
            return True  # introspected: the answer's own cache bound applies
        key = await self._verifier.locate(cached.trust, cached.token.kid)
        return key.thumbprint == cached.thumbprint

    def _issuer_trust(self, issuer: TokenIssuer, jwks_uri: str) -> Trust:
        """Who signs this issuer's tokens (algorithms, key set, typ, claim rules): built once per issuer."""
        key = (issuer.issuer, issuer.audiences, jwks_uri, tuple(issuer.algorithms), tuple(issuer.token_types),
               issuer.client_id_claim)
        trust = self._trust.get(key)
        if trust is None:
            rules = ClaimRules.build(
                issuers=issuer.issuer,
                audiences=issuer.audiences or None,
                leeway_seconds=self._skew,
                require=("exp", "iat", "jti", "iss", issuer.client_id_claim),
            )
            trust = Trust(algorithms=frozenset(issuer.algorithms), jwks_uri=jwks_uri, rules=rules,
                          issuer=issuer.issuer, url_policy=CONFIGURED_URLS, typ=tuple(issuer.token_types))
            self._trust[key] = trust
        return trust

    async def _verify_jwt(self, raw: str, issuers: IssuerMap, now: float) -> _Verified:
        jws = self._verifier.parse(raw)
        # Step 2 of the one path: the issuer, from the unverified `iss`, says which keys, algorithms and typ.
        claims = jws.claims or {}
        iss = claims.get("iss")
        entry = issuers.get(iss) if isinstance(iss, str) else None
        if entry is None:
            raise JoseError("iss_mismatch", "the access token's issuer is not trusted here")
        name, issuer = entry
        if issuer.jwks_uri is None:
            raise JoseError("alg_not_allowed", "this issuer's tokens are opaque; a JWT is not accepted")
        trust = self._issuer_trust(issuer, issuer.jwks_uri)
        verified = await self._verifier.verify(jws, trust, now=now)
        return _Verified(_token(name, issuer, dict(verified.claims), verified.kid), trust, verified.key_thumbprint)

    async def _introspect(self, raw: str, digest: bytes, issuers: IssuerMap, now: float) -> VerifiedToken:
        """RFC 7662: POST the token to the (single) introspecting issuer of the policy."""
        candidates = [(n, i) for n, i in issuers.values() if i.introspection is not None]
        if not candidates:
            raise JoseError("malformed", "the access token is not a JWT")
        name, issuer = candidates[0]
        intro = issuer.introspection
        assert intro is not None
        secret = os.environ.get(intro.client_secret_env)
        if not secret:
            raise JoseError("jwks_unavailable", "introspection is not configured (client secret missing)")
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        try:
            async with self._session.post(
                intro.endpoint,
                data={"token": raw, "token_type_hint": "access_token"},
                headers={"Accept": "application/json",
                         "Authorization": aiohttp.encode_basic_auth(intro.client_id, secret)},
                timeout=aiohttp.ClientTimeout(total=intro.timeout_seconds),
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise JoseError("jwks_unavailable", "token introspection failed")
                answer = bytearray()
                async for chunk in resp.content.iter_chunked(16384):
                    answer += chunk
                    if len(answer) > MAX_INTROSPECTION_BYTES:  # SECURITY: bounded, as every JSON we parse
                        raise ValueError("introspection answer too large")
            # Strict JSON as for tokens: bounded depth, no lone surrogates or NaN (a RecursionError was a 500).
            body: Any = json_loads_strict(bytes(answer))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise JoseError("jwks_unavailable", "token introspection failed") from None
        if not isinstance(body, dict) or body.get("active") is not True:
            raise JoseError("bad_signature", "the access token is not active")
        if body.get("iss", issuer.issuer) != issuer.issuer:
            raise JoseError("iss_mismatch", "the access token's issuer is not trusted here")
        body.setdefault("iss", issuer.issuer)
        # Without exp the answer is reused for cache_seconds at most; with it, never beyond it.
        exp = read_claim(body, "exp", NUMERIC_DATE)
        limit = now + intro.cache_seconds
        body["exp"] = limit if exp is None else min(float(exp), limit)
        body.setdefault("iat", now)
        body.setdefault("jti", "sha256:" + digest.hex()[:32])
        validate_claims(body, ClaimRules.build(audiences=issuer.audiences or None, leeway_seconds=self._skew,
                                               require=("exp", issuer.client_id_claim)), now)
        return _token(name, issuer, body, None)


def _token(name: str, issuer: TokenIssuer, claims: dict[str, Any], kid: str | None) -> VerifiedToken:
    """The verified token; its claims already passed validate_claims (iss, jti, exp, iat typed and ranged)."""
    client_id = read_claim(claims, issuer.client_id_claim, CLIENT_ID, required=True)
    scope = read_claim(claims, "scope", TOKEN_SCOPE)
    return VerifiedToken(
        issuer_name=name,
        iss=str(claims["iss"]),
        client_id=client_id,
        jti=str(claims.get("jti")),
        iat=float(claims.get("iat", 0)),
        exp=float(claims["exp"]),
        scopes=frozenset(scope.split()) if scope else frozenset(),
        kid=kid,
        claims=claims,
    )
