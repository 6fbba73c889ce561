"""Token and client revocation, kept in the shared state store (memory now, Redis across replicas)."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from ..state.store import StateStore
from .token import VerifiedToken

_JTI_NS = "revoked_jti"
_CLIENT_NS = "revoked_client"


@lru_cache(maxsize=65536)
def _key(*parts: str) -> str:
    # Fixed-size keys whatever the claim values are; no client input reaches the store's key syntax.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


class Revocations:
    """Revoked token ids (until they expire) and per-client watermarks (tokens issued before are void)."""

    __slots__ = ("_client_ttl", "_skew", "_store")

    def __init__(self, store: StateStore, *, client_ttl_seconds: float, skew_seconds: float) -> None:
        self._store = store
        self._client_ttl = client_ttl_seconds
        self._skew = skew_seconds

    async def revoke_token(self, token: VerifiedToken, now: float) -> None:
        """Refuse this token from now until it expires (plus clock skew)."""
        ttl = max(1.0, token.exp - now + self._skew)
        await self._store.put(_JTI_NS, _key(token.iss, token.jti), "1", ttl)

    async def revoke_client(self, iss: str, client_id: str, at: float) -> None:
        """Refuse every token of `client_id` issued at or before `at`."""
        await self._store.put(_CLIENT_NS, _key(iss, client_id), repr(at), self._client_ttl)

    async def is_revoked(self, token: VerifiedToken) -> bool:
        """True when the token, or every token of its client up to its iat, was revoked."""
        if await self._store.exists(_JTI_NS, _key(token.iss, token.jti)):
            return True
        mark = await self._store.get(_CLIENT_NS, _key(token.iss, token.client_id))
        return mark is not None and token.iat <= float(mark)
