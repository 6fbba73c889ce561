"""`rate_limit`: at most `limit` requests per `window_seconds` per client id, source address or route.

Fixed windows aligned on multiples of `window_seconds` since the epoch, so every replica and worker counts
into the same window; one atomic counter per (bucket, key, window) in the state store — in this process with
the memory store, shared by every instance with Redis. A refused request gets 429 with `Retry-After` and the
`RateLimit-Policy` / `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers (structured-field lists:
`"bucket";q=<quota>;w=<window>` and `"bucket";r=<remaining>;t=<seconds to reset>`). An allowed request
leaves the same fields in its facts (`RATE_LIMIT`), and the gateway adds them to the forwarded response,
so a client sees its budget before it runs out (one list item per rate_limit check of the policy).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Literal

from pydantic import field_validator

from ..config.schema import PositiveInt, StrictModel
from ..reasons import Challenge, Reason, Reasons
from .base import Check, Denial, RequestView
from .facts import Fact
from .token import token_of

_NS = "rate"
_BUCKET = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def rate_limit_headers(fields: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """The RateLimit-Policy and RateLimit fields of the rate_limit checks that passed (structured-field lists),
    for the forwarded response; None when no rate_limit check ran."""
    if not fields:
        return None
    return [("RateLimit-Policy", ", ".join(policy for policy, _ in fields)),
            ("RateLimit", ", ".join(state for _, state in fields))]


RATE_LIMIT: Fact[list[tuple[str, str]]] = Fact("rate_limit_fields", list, response_headers=rate_limit_headers)
"""Fact: (RateLimit-Policy item, RateLimit item) of each rate_limit check that passed, in order; the gateway adds
them to the forwarded response."""


class RateLimitParams(StrictModel):
    """Parameters of `rate_limit`."""

    limit: PositiveInt
    """Requests allowed per window and key; the next one gets 429."""
    window_seconds: PositiveInt = 60
    """Window length; windows start at multiples of it since the epoch (the same on every instance)."""
    key: Literal["client_id", "peer", "route"] = "client_id"
    """What one budget belongs to: `client_id` — the verified token's client (place after `bearer_token`);
    `peer` — the client's source address: the connection's, or behind the load balancers listed in
    `server.trusted_proxies` the address they forwarded (X-Forwarded-For); `route` — everyone together (the
    whole bucket shares one budget)."""
    bucket: str | None = None
    """Name of the budget (also the policy name in the RateLimit fields); default: the policy's name, so each
    policy has its own. Policies naming the same bucket share one budget."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str | None) -> str | None:
        if v is not None and not _BUCKET.match(v):
            raise ValueError("expected a snake_case name (a-z, 0-9, _)")
        return v


class RateLimitReasons(Reasons):
    """Why `rate_limit` refuses."""

    rate_limited = Reason(429, "too_many_requests")
    """The window's budget is spent: with Retry-After, RateLimit-Policy and RateLimit."""
    token_missing = Reason(401, "invalid_token", Challenge.BEARER)
    """`key: client_id` without a verified access token."""


R = RateLimitReasons


class RateLimit(Check[RateLimitParams]):
    """Count the request in its window; refuse it with 429 once the window's budget is spent."""

    name = "rate_limit"
    Params = RateLimitParams
    produces = (RATE_LIMIT,)
    reasons = RateLimitReasons
    store_fail_open = True  # a counter is the whole decision: passing over it when the store is down is coherent

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass while the budget lasts (noting the RateLimit fields); 429 with Retry-After once it is spent."""
        p = self.params
        if p.key == "client_id":
            token = token_of(request.facts)
            if token is None:
                description = "rate limit by client: no verified access token"
                return self.deny(R.token_missing, description)
            who = token.client_id
        elif p.key == "peer":
            who = request.client_address or request.peer or "unknown"
        else:
            who = ""
        bucket = p.bucket or request.policy or "default"
        window = p.window_seconds
        index = math.floor(request.now / window)
        reset = (index + 1) * window - request.now  # seconds until this window ends
        # Fixed-size key: no client-chosen text reaches the store's key syntax.
        key = hashlib.sha256(f"{bucket}\x1f{p.key}\x1f{who}\x1f{index}".encode()).hexdigest()[:40]
        count = await self.services.store.incr(_NS, key, 1, reset + 1.0)
        seconds = max(1, math.ceil(reset))
        if count <= p.limit:
            fields = request.facts.get(RATE_LIMIT)
            if fields is None:
                fields = []
                request.facts.set(RATE_LIMIT, fields)
            fields.append((f'"{bucket}";q={p.limit};w={window}', f'"{bucket}";r={p.limit - count};t={seconds}'))
            return None
        return self.deny(
            R.rate_limited, f"rate limit of {p.limit} requests per {window} s exceeded, retry later",
            (
                ("Retry-After", str(seconds)),
                ("RateLimit-Policy", f'"{bucket}";q={p.limit};w={window}'),
                ("RateLimit", f'"{bucket}";r=0;t={seconds}'),
            ),
        )
