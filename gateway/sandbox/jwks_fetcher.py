"""Fetching a TPP's JWKS (the SSA's software_jwks_endpoint) for private_key_jwt and self_signed_tls_client_auth,
with a small TTL cache."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from .crypto import CryptoError, KeySet
from .jsonvalues import loads

MAX_JWKS_BYTES: Final = 256 * 1024
MIN_REFETCH_SECONDS: Final = 10.0
"""An unknown kid or certificate refetches a cached JWKS, but not more often than this (no refetch storms)."""


class JwksFetchError(Exception):
    """The JWKS could not be fetched or parsed; the message is safe to show to the client."""


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched_at: float
    keys: KeySet


class JwksFetcher:
    """GETs a JWKS with a timeout and no redirects, only from allow-listed hosts, and caches it."""

    def __init__(
        self, session: aiohttp.ClientSession, *, allowed_hosts: Iterable[str], timeout: float, ttl: float
    ) -> None:
        self._session = session
        hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self._any_host = "*" in hosts
        self._hosts = frozenset(hosts - {"*"})
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ttl = ttl
        self._cache: dict[str, _Entry] = {}

    async def get(self, url: str, kid: str | None, *, x5t_s256: str | None = None) -> KeySet:
        """The key set at `url`, from the cache while fresh and while it knows `kid` and the certificate whose
        `x5t#S256` is `x5t_s256` (RFC 8705 §2.2: a TPP that just added its certificate need not wait for the TTL)."""
        now = time.monotonic()
        entry = self._cache.get(url)
        if entry is not None and now - entry.fetched_at < self._ttl:
            known = (kid is None or kid in entry.keys) and (
                x5t_s256 is None or entry.keys.has_certificate(x5t_s256)
            )
            if known or now - entry.fetched_at < MIN_REFETCH_SECONDS:
                return entry.keys
        keys = await self._fetch(url)
        self._cache[url] = _Entry(now, keys)
        return keys

    async def _fetch(self, url: str) -> KeySet:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise JwksFetchError("software_jwks_endpoint is not an http(s) URL")
        # SECURITY: SSRF guard — the SSA names the URL, so only configured hosts are ever fetched.
        if not self._any_host and host not in self._hosts:
            raise JwksFetchError(
                f"the sandbox does not fetch JWKS from host {host!r} (sandbox.tpp_jwks_allowed_hosts)"
            )
        try:
            async with self._session.get(
                url, allow_redirects=False, timeout=self._timeout, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise JwksFetchError(f"software_jwks_endpoint answered HTTP {resp.status}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(16384):
                    size += len(chunk)
                    if size > MAX_JWKS_BYTES:
                        raise JwksFetchError("software_jwks_endpoint returned a document that is too large")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise JwksFetchError("software_jwks_endpoint could not be fetched") from None
        body = b"".join(chunks)
        try:
            return KeySet.from_document(loads(body))
        except (ValueError, UnicodeDecodeError):
            raise JwksFetchError("software_jwks_endpoint did not return JSON") from None
        except CryptoError as exc:
            raise JwksFetchError(f"software_jwks_endpoint: {exc.description}") from None
