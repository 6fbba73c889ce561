"""Playground sessions: one TPP signing key per session, generated here and kept in this process's memory.

The private key never leaves the process — not to the browser, not to disk, not to a log. The browser holds
only the session id (128 random bits, the capability to have this key sign) and the public JWKS, which the
sandbox hosts like any TPP key set so that the gateway and the token endpoint can verify signatures.
Sessions expire, and the oldest is dropped when there are too many: a restart forgets them all.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from ..crypto import SigningKey

SESSION_TTL_SECONDS: Final = 3600.0
"""How long a session's key may sign (the hosted public JWKS stays, harmlessly)."""
MAX_SESSIONS: Final = 200
"""Sessions kept at once; creating one more drops the oldest."""


@dataclass(frozen=True, slots=True)
class PlaygroundSession:
    """A session's signing key and where its public JWKS is hosted."""

    key: SigningKey
    jwks_uri: str
    expires_at: float


class SessionStore:
    """Sessions by id, in memory, with a lifetime and a bound on their number."""

    __slots__ = ("_max", "_sessions", "_ttl")

    def __init__(self, *, ttl: float = SESSION_TTL_SECONDS, max_sessions: int = MAX_SESSIONS) -> None:
        self._ttl = ttl
        self._max = max_sessions
        self._sessions: OrderedDict[str, PlaygroundSession] = OrderedDict()

    def add(self, key: SigningKey, jwks_uri: str, *, now: float | None = None) -> tuple[str, PlaygroundSession]:
        """Keep `key` under a new random session id; returns (id, session)."""
        now = time.time() if now is None else now
        self._prune(now)
        while len(self._sessions) >= self._max:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(16)
        session = PlaygroundSession(key=key, jwks_uri=jwks_uri, expires_at=now + self._ttl)
        self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str, *, now: float | None = None) -> PlaygroundSession | None:
        """The live session with this id, or None (unknown or expired)."""
        self._prune(time.time() if now is None else now)
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self, now: float) -> None:
        # Insertion order is expiry order (one TTL for all), so expired sessions are at the front.
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires_at > now:
                return
            self._sessions.popitem(last=False)
