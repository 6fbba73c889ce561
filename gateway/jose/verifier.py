"""JWT verification in one call: strict parse → alg allow-list → key by `kid` → signature → claims."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .algorithms import FAPI_ALGORITHMS, allow_list
from .claims import ClaimRules, check_typ, validate_claims
from .errors import JoseError, quoted
from .jwks_cache import JwksCache
from .jws import DEFAULT_MAX_BYTES, check_algorithm, parse_compact, verify_signature
from .keys import JwkSet, VerificationKey
from .url_guard import UrlPolicy


class KeySource(Protocol):
    """Where verification keys come from: a static set or a JWKS URI through the shared cache."""

    async def get_key(self, kid: str) -> VerificationKey:
        """The key with this kid; JoseError unknown_kid (or jwks_*) otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class StaticKeys:
    """Keys known at build time (config, tests)."""

    keyset: JwkSet

    async def get_key(self, kid: str) -> VerificationKey:
        """The key with this kid from the static set."""
        key = self.keyset.get(kid)
        if key is None:
            raise JoseError("unknown_kid", f"no key with kid {quoted(kid)} in the key set")
        return key


@dataclass(frozen=True, slots=True)
class CachedKeys:
    """Keys from the JWKS at `uri`, through the shared JwksCache."""

    cache: JwksCache
    uri: str
    policy: UrlPolicy | None = None

    async def get_key(self, kid: str) -> VerificationKey:
        """The key with this kid from the cached (or fetched) JWKS."""
        return await self.cache.get_key(self.uri, kid, policy=self.policy)


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """A JWT whose signature and claims have been verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    alg: str
    kid: str
    key_thumbprint: str  # RFC 7638 thumbprint of the key that verified it (safe to log)
    signing_input: bytes = field(repr=False)


class JwtVerifier:
    """Compiled once per check; `verify` runs per request."""

    __slots__ = ("_clock", "algorithms", "max_bytes", "rules", "understood_crit")

    def __init__(
        self,
        *,
        algorithms: Iterable[str] = FAPI_ALGORITHMS,
        rules: ClaimRules | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        understood_crit: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = allow_list(algorithms)
        self.rules = rules or ClaimRules()
        self.max_bytes = max_bytes
        self.understood_crit = understood_crit
        self._clock = clock

    async def verify(self, token: str, keys: KeySource, *, rules: ClaimRules | None = None) -> VerifiedJwt:
        """Verify `token` with a key from `keys`; `rules` overrides the compiled rules for this call."""
        effective = rules or self.rules
        jws = parse_compact(token, max_bytes=self.max_bytes, understood_crit=self.understood_crit)
        check_typ(jws.header, effective.typ)
        check_algorithm(jws, self.algorithms)  # before any key lookup: `none` never triggers a fetch
        if jws.kid is None:
            raise JoseError("missing_kid", "JWS header must contain a 'kid'")
        key = await keys.get_key(jws.kid)
        verify_signature(jws, key, self.algorithms)
        if jws.claims is None:  # pragma: no cover - parse_compact(json_payload=True) always sets claims
            raise JoseError("payload_not_json", "JWS payload is not a JSON object")
        validate_claims(jws.claims, effective, self._clock())
        return VerifiedJwt(jws.header, jws.claims, jws.alg, jws.kid, key.thumbprint, jws.signing_input)
