"""One JWKS cache shared by every check, keyed by URI and origin (after Envoy jwt_authn's jwks_cache / async fetcher).

- one entry per URI and `UrlPolicy.origin`: a key set fetched for the config (token issuers, directories, under a
  policy that allows private addresses) is never served to a lookup under a TPP's policy, which fetches the URI
  itself under its own rules;
- single fetch in flight per entry: concurrent callers await the same task;
- keys are fresh for `ttl_seconds`, then refetched;
- an unknown `kid` triggers a refetch at most once per `min_refetch_interval_seconds` per URI, so random
  kids cannot cause fetch storms; after that it is `unknown_kid`;
- a failed fetch is retried no sooner than `failed_refetch_interval_seconds`; meanwhile, and while the
  last good keys are younger than `ttl + stale_max_seconds`, those stale keys are served; then fail closed
  (`jwks_unavailable`);
- every fetch goes through the SSRF guard, connects only to the vetted addresses, never follows a redirect,
  and is bounded in time and bytes.

Events reported through `on_event(kind, result, origin)` (a closed set, for metrics labels):
  fetch:   ok | error | timeout | too_large | refused
  cache:   hit | miss | stale
  refetch: unknown_kid | rate_limited
`origin` is the `UrlPolicy.origin` of the lookup: `configured` (a key set of the operator's config) or `software`
(a TPP's, named by its SSA).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp
import structlog

from .errors import JoseError, JoseReason, quoted, quoted_url
from .guarded_fetch import FetchFailed, FetchLimits, guarded_fetch, guarded_session
from .keys import JwkSet, VerificationKey
from .url_guard import HostResolver, KeyOrigin, UrlGuard, UrlPolicy

_log = structlog.get_logger(__name__)

OnEvent = Callable[[str, str, KeyOrigin], None]
EVENTS: Final[dict[str, frozenset[str]]] = {
    "fetch": frozenset({"ok", "error", "timeout", "too_large", "refused"}),
    "cache": frozenset({"hit", "miss", "stale"}),
    "refetch": frozenset({"unknown_kid", "rate_limited"}),
}
_ACCEPT: Final = "application/jwk-set+json, application/json;q=0.9"


@dataclass(frozen=True, slots=True)
class JwksCacheSettings:
    """Tuning of the cache; defaults suit a directory JWKS that rotates rarely."""

    ttl_seconds: float = 300.0
    min_refetch_interval_seconds: float = 30.0  # floor between unknown-kid refetches, per URI
    failed_refetch_interval_seconds: float = 2.0  # after a failed fetch, no new attempt before this
    stale_max_seconds: float = 3600.0  # keys may be served until ttl + stale_max after the last good fetch
    fetch_timeout_seconds: float = 5.0  # DNS + connect + full body
    max_bytes: int = 256 * 1024  # response body limit (decoded)
    max_uris: int = 1024  # least recently used URIs are forgotten beyond this
    uses: frozenset[str] = frozenset({"sig"})

    def __post_init__(self) -> None:
        for name in ("ttl_seconds", "fetch_timeout_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0")
        for name in ("min_refetch_interval_seconds", "failed_refetch_interval_seconds", "stale_max_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0")
        if self.max_bytes <= 0 or self.max_uris <= 0:
            raise ValueError("max_bytes and max_uris must be > 0")


class _Entry:
    __slots__ = ("attempted_at", "error", "fetched_at", "inflight", "keyset")

    def __init__(self) -> None:
        self.keyset: JwkSet | None = None
        self.fetched_at = -math.inf  # last successful fetch
        self.attempted_at = -math.inf  # last fetch attempt, successful or not
        self.error: JoseError | None = None  # last failure, cleared by a success
        self.inflight: asyncio.Task[JwkSet] | None = None


def _consume(task: asyncio.Task[JwkSet]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" when every waiter went away


class JwksCache:
    """Shared JWKS cache: single-flight fetch, TTL, rate-limited unknown-kid refetch, bounded stale use."""

    __slots__ = (
        "_clock",
        "_entries",
        "_guard",
        "_on_event",
        "_owns_session",
        "_session",
        "_ssl",
        "_syntax_ok",
        "settings",
    )

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        policy: UrlPolicy | None = None,
        resolver: HostResolver | None = None,
        settings: JwksCacheSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: OnEvent | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings or JwksCacheSettings()
        self._ssl: ssl.SSLContext | bool = ssl_context or True  # True: system trust store, full verification
        self._guard = UrlGuard(policy or UrlPolicy(), resolver)
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._on_event = on_event
        # Keyed by (origin, URI): a key set fetched under the config's policy (private addresses allowed) is never
        # handed to a lookup under a TPP's (`software`) policy, which fetches it itself, under its own rules.
        self._entries: OrderedDict[tuple[KeyOrigin, str], _Entry] = OrderedDict()
        self._syntax_ok: set[tuple[UrlPolicy, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the owned ClientSession (no-op when one was passed in)."""
        self._ensure_session()

    async def close(self) -> None:
        """Cancel fetches in flight and close the owned session."""
        for entry in self._entries.values():
            if entry.inflight is not None:
                entry.inflight.cancel()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JwksCache:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self.settings.fetch_timeout_seconds)
        return self._session

    # -- public API ------------------------------------------------------------------------------------
    async def get_key(self, uri: str, kid: str, *, policy: UrlPolicy | None = None) -> VerificationKey:
        """The signing key `kid` from the JWKS at `uri`; JoseError unknown_kid / jwks_unavailable / ..."""
        policy = policy or self._guard.policy
        keyset = await self.get_keyset(uri, policy=policy)
        key = keyset.get(kid)
        if key is not None:
            return key
        entry = self._entry(uri, policy)
        if entry.inflight is None:
            # SECURITY: random kids must not cause fetch storms against the key server (and us).
            if self._clock() - entry.attempted_at < self.settings.min_refetch_interval_seconds:
                self._event("refetch", "rate_limited", policy)
                raise JoseError("unknown_kid", f"no key with kid {quoted(kid)} in the key set")
            self._event("refetch", "unknown_kid", policy)
        keyset = await self._refresh(uri, entry, policy)
        key = keyset.get(kid)
        if key is None:
            raise JoseError("unknown_kid", f"no key with kid {quoted(kid)} in the key set")
        return key

    async def get_keyset(self, uri: str, *, policy: UrlPolicy | None = None) -> JwkSet:
        """The key set at `uri`, fetched if absent or older than the TTL (stale within bounds on error)."""
        policy = policy or self._guard.policy  # the cache's own when the caller names none: resolved here, once
        self._check_syntax(uri, policy)
        entry = self._entry(uri, policy)
        if entry.keyset is not None and self._clock() - entry.fetched_at < self.settings.ttl_seconds:
            self._event("cache", "hit", policy)
            return entry.keyset
        self._event("cache", "miss", policy)
        return await self._refresh(uri, entry, policy)

    async def prefetch(
        self, uris: Iterable[str], *, policy: UrlPolicy | None = None
    ) -> dict[str, JoseError | None]:
        """Warm the cache at start; returns each URI's error (None when it loaded). Never raises JoseError."""
        unique = list(dict.fromkeys(uris))
        results = await asyncio.gather(
            *(self.get_keyset(u, policy=policy) for u in unique), return_exceptions=True
        )
        out: dict[str, JoseError | None] = {}
        for uri, result in zip(unique, results, strict=True):
            if isinstance(result, JoseError):
                out[uri] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                out[uri] = None
        return out

    def cached_uris(self) -> list[str]:
        """URIs currently cached, least recently used first."""
        return list(dict.fromkeys(uri for _, uri in self._entries))

    # -- internals -------------------------------------------------------------------------------------
    def _event(self, kind: str, result: str, policy: UrlPolicy) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, result, policy.origin)
        except Exception:  # a metrics hook must never break key lookup
            _log.exception("jwks_event_hook_failed", kind=kind, result=result)

    def _check_syntax(self, uri: str, policy: UrlPolicy) -> None:
        memo = (policy, uri)
        if memo in self._syntax_ok:
            return
        policy.check_syntax(uri)  # a cached URI must still pass the caller's policy
        if len(self._syntax_ok) >= 4 * self.settings.max_uris:
            self._syntax_ok.clear()
        self._syntax_ok.add(memo)

    def _entry(self, uri: str, policy: UrlPolicy) -> _Entry:
        key = (policy.origin, uri)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            while len(self._entries) > self.settings.max_uris:
                oldest_key, oldest = next(iter(self._entries.items()))
                if oldest.inflight is not None or oldest_key == key:
                    break
                del self._entries[oldest_key]
        else:
            self._entries.move_to_end(key)
        return entry

    async def _refresh(self, uri: str, entry: _Entry, policy: UrlPolicy) -> JwkSet:
        if entry.inflight is None:
            now = self._clock()
            recently_failed = now - entry.attempted_at < self.settings.failed_refetch_interval_seconds
            if entry.error is not None and recently_failed:
                return self._stale_or_raise(uri, entry, entry.error, policy)
            entry.attempted_at = now
            task = asyncio.get_running_loop().create_task(self._fetch_and_store(uri, entry, policy))
            task.add_done_callback(_consume)
            entry.inflight = task
        # shield: a cancelled caller must not cancel the fetch the other callers are waiting for
        return await asyncio.shield(entry.inflight)

    async def _fetch_and_store(self, uri: str, entry: _Entry, policy: UrlPolicy) -> JwkSet:
        try:
            try:
                keyset = await self._fetch(uri, policy)
            except FetchFailed:
                raise
            except Exception as exc:  # anything unforeseen still fails closed with a stable reason
                _log.exception("jwks_fetch_crashed", jwks_uri=quoted_url(uri))
                raise FetchFailed("error", f"unexpected {type(exc).__name__}") from exc
        except FetchFailed as failure:
            self._event("fetch", failure.result, policy)
            shown = quoted_url(uri)
            _log.warning("jwks_fetch_failed", jwks_uri=shown, origin=policy.origin,
                         result=failure.result, why=failure.description)
            reason: JoseReason = "jwks_url_refused" if failure.result == "refused" else "jwks_unavailable"
            entry.error = JoseError(reason, f"key set {shown} unavailable: {failure.description}")
            return self._stale_or_raise(uri, entry, entry.error, policy)
        finally:
            entry.inflight = None
        self._event("fetch", "ok", policy)
        entry.keyset = keyset
        entry.fetched_at = self._clock()
        entry.error = None
        _log.info("jwks_fetched", jwks_uri=quoted_url(uri), kids=sorted(quoted(k) for k in keyset.kids()),
                  skipped=keyset.skipped)
        return keyset

    def _stale_or_raise(self, uri: str, entry: _Entry, error: JoseError, policy: UrlPolicy) -> JwkSet:
        limit = self.settings.ttl_seconds + self.settings.stale_max_seconds
        if entry.keyset is not None and self._clock() - entry.fetched_at < limit:
            self._event("cache", "stale", policy)
            age = round(self._clock() - entry.fetched_at, 1)
            _log.info("jwks_serving_stale", jwks_uri=quoted_url(uri), age_seconds=age)
            return entry.keyset
        # SECURITY: fail closed once the last good keys are too old (DESIGN: "Fail closed").
        raise JoseError(error.reason, error.description)

    async def _fetch(self, uri: str, policy: UrlPolicy) -> JwkSet:
        guard = self._guard if policy is self._guard.policy else UrlGuard(policy, self._guard.resolver)
        limits = FetchLimits(self.settings.fetch_timeout_seconds, self.settings.max_bytes)
        body = await guarded_fetch(self._ensure_session(), guard, uri, limits, accept=_ACCEPT, ssl_context=self._ssl)
        try:
            return JwkSet.from_json(body, uses=self.settings.uses)
        except JoseError as exc:
            raise FetchFailed("error", exc.description) from exc
