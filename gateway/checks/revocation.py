"""Token and client revocation, kept in the shared state store (memory now, Redis across replicas)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from ..state.store import StateStore
from .token import VerifiedToken

RevocationCause = Literal["client_not_owned", "upstream_401", "client_deleted"]
"""Why the gateway revoked: the `cause` label of dcr_gateway_revocations_total and of the log line."""
OnRevoke = Callable[[RevocationCause], None]

_JTI_NS = "revoked_jti"
_CLIENT_NS = "revoked_client"


@lru_cache(maxsize=65536)
def _key(*parts: str) -> str:
    # Fixed-size keys whatever the claim values are; no client input reaches the store's key syntax.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


class Revocations:
    """Revoked token ids (until they expire) and per-client watermarks (tokens issued before are void)."""

    __slots__ = ("_client_ttl", "_on_revoke", "_skew", "_store")

    def __init__(
        self, store: StateStore, *, client_ttl_seconds: float, skew_seconds: float, on_revoke: OnRevoke | None = None
    ) -> None:
        self._store = store
        store.read_mostly(_JTI_NS, _CLIENT_NS)  # looked up on every request, written on a revocation only
        self._client_ttl = client_ttl_seconds
        self._skew = skew_seconds
        self._on_revoke = on_revoke

    async def revoke_token(self, token: VerifiedToken, now: float, *, cause: RevocationCause | None = None) -> None:
        """Refuse this token from now until it expires (plus clock skew); a `cause` is reported to on_revoke."""
        ttl = max(1.0, token.exp - now + self._skew)
        await self._store.put(_JTI_NS, _key(token.iss, token.jti), "1", ttl)
        self._report(cause)

    async def revoke_client(
        self, iss: str, client_id: str, at: float, *, cause: RevocationCause | None = None
    ) -> None:
        """Refuse every token of `client_id` issued at or before `at`; a `cause` is reported to on_revoke."""
        await self._store.put(_CLIENT_NS, _key(iss, client_id), repr(at), self._client_ttl)
        self._report(cause)

    def _report(self, cause: RevocationCause | None) -> None:
        # Only after the store accepted the revocation: the counter never claims one that did not happen.
        if cause is not None and self._on_revoke is not None:
            self._on_revoke(cause)

    async def is_revoked(self, token: VerifiedToken) -> bool:
        """True when the token, or every token of its client up to its iat, was revoked.

        Both marks are read together (one round trip to Redis: MGET); any value under the token's jti
        revokes it, and the client's watermark revokes every token issued at or before it."""
        token_mark, client_mark = await self._store.get_many(
            ((_JTI_NS, _key(token.iss, token.jti)), (_CLIENT_NS, _key(token.iss, token.client_id)))
        )
        if token_mark is not None:
            return True
        if client_mark is None:
            return False
        try:
            watermark = float(client_mark)
        except ValueError:
            return True  # a watermark nobody can read (the gateway writes a float's repr) revokes: fail closed
        return not math.isfinite(watermark) or token.iat <= watermark
