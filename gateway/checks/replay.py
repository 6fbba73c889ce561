"""`replay`: a verified registration request's `jti` is accepted once while the request is valid."""

from __future__ import annotations

import hashlib
from typing import Final

from ..config.schema import StrictModel
from ..jose.errors import quoted
from ..reasons import Reason, Reasons
from .base import Check, Denial, Recording, RequestView
from .registration import registration_claims_of

NAMESPACE: Final = "registration_jti"


class ReplayParams(StrictModel):
    """`replay` takes no parameters: the window is the request's own lifetime plus the clock skew."""


def replay_key(iss: str, jti: str) -> str:
    """Fixed-size store key of a (software, jti) pair; the UUID is compared case-insensitively."""
    return hashlib.sha256(f"{iss}\x1f{jti.lower()}".encode()).hexdigest()[:40]


class ReplayReasons(Reasons):
    """Why `replay` refuses (a store that cannot answer is the engine's `state_unavailable`)."""

    jti_replayed = Reason(400, "invalid_client_metadata")
    registration_unverified = Reason(400, "invalid_client_metadata")


R = ReplayReasons


class Replay(Check[ReplayParams]):
    """Refuse a registration request whose `jti` was already seen (store TTL = exp - now + skew).

    The compiler runs it after every other check of its policy (`records_state` ON_PASS), whatever the order
    in the file: only a request that passed every verifying check records its jti, so neither a forged request
    that copies a genuine jti nor a genuine request refused for something else (its certificate, its metadata)
    burns it. Recording also happens in audit mode (it is what the check observes), except for a request that
    an enforced check would have refused first. A store that cannot answer makes the engine fail closed (503).
    """

    name = "replay"
    Params = ReplayParams
    reasons = ReplayReasons

    @property
    def records_state(self) -> Recording:
        """ON_PASS: the jti is consumed when the check passes."""
        return Recording.ON_PASS

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass the first time a jti is seen; refuse 400 invalid_client_metadata `jti_replayed` afterwards."""
        claims = registration_claims_of(request.facts)
        if claims is None:
            return self.deny(R.registration_unverified, "no verified registration request to check for replay")
        jti, exp = str(claims["jti"]), float(claims["exp"])  # registration_request: present and well-typed
        ttl = max(1.0, exp - request.now + self.services.trust.clock_skew_seconds)
        if await self.services.store.add_if_absent(NAMESPACE, replay_key(str(claims["iss"]), jti), ttl):
            return None
        self.services.on_replay()
        return self.deny(R.jti_replayed, f"registration request jti {quoted(jti)} was already used; "
                         "sign a new request with a fresh jti")
