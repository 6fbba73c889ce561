"""One outbound fetch path for documents named by others (key sets, CRLs, OCSP answers): the SSRF guard vets the
URL and every address it resolves to BEFORE any connection, the fetch connects only to those addresses, never
follows a redirect, and is bounded in time and bytes. `JwksCache` and `gateway.pki.revocation` both use it."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
from aiohttp import hdrs

from .errors import JoseError
from .url_guard import UrlGuard, VettedUrl

FetchResult = Literal["ok", "error", "timeout", "too_large", "refused"]
"""How a fetch ended (a closed set, for metrics labels)."""
_CHUNK: Final = 16 * 1024


class FetchFailed(Exception):
    """A fetch that produced no usable body; `result` is one of FetchResult (never "ok")."""

    __slots__ = ("description", "result")

    def __init__(self, result: FetchResult, description: str) -> None:
        super().__init__(description)
        self.result: FetchResult = result
        self.description = description


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds of one fetch: DNS + connect + whole body within `timeout_seconds`, at most `max_bytes` decoded."""

    timeout_seconds: float
    max_bytes: int


def guarded_session(timeout_seconds: float) -> aiohttp.ClientSession:
    """The ClientSession guarded fetches run on (created by its owner at start, closed at exit)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        trust_env=False,  # SECURITY: an environment proxy would bypass the address vetting
    )


async def guarded_fetch(
    session: aiohttp.ClientSession,
    guard: UrlGuard,
    url: str,
    limits: FetchLimits,
    *,
    accept: str,
    body: bytes | None = None,
    content_type: str | None = None,
    ssl_context: ssl.SSLContext | bool = True,
) -> bytes:
    """GET `url` (POST `body` when given) through `guard`; the 200 body, else FetchFailed."""
    try:
        async with asyncio.timeout(limits.timeout_seconds):
            try:
                # SECURITY: the URL and every address of its host are vetted before any connection (SSRF).
                vetted = await guard.check(url)
            except JoseError as exc:
                raise FetchFailed("refused", exc.description) from exc
            return await _download(session, vetted, limits.max_bytes, accept, body, content_type, ssl_context)
    except TimeoutError as exc:
        raise FetchFailed("timeout", f"no answer within {limits.timeout_seconds:g}s") from exc


async def _download(
    session: aiohttp.ClientSession, vetted: VettedUrl, limit: int, accept: str, body: bytes | None,
    content_type: str | None, ssl_context: ssl.SSLContext | bool,
) -> bytes:
    url = vetted.url
    headers = {hdrs.HOST: url.raw_authority, hdrs.ACCEPT: accept}
    if content_type is not None:
        headers[hdrs.CONTENT_TYPE] = content_type
    is_tls = url.scheme == "https"
    last: Exception | None = None
    for address in vetted.addresses:
        # SECURITY: connect to the address the guard vetted, never re-resolve (DNS rebinding); TLS still
        # verifies the certificate against the real host name (server_hostname).
        target = url.with_host(address)
        try:
            async with session.request(
                hdrs.METH_GET if body is None else hdrs.METH_POST,
                target,
                data=body,
                headers=headers,
                allow_redirects=False,  # SECURITY: a redirect could point anywhere (SSRF)
                server_hostname=vetted.host if is_tls else None,
                ssl=ssl_context,
            ) as resp:
                return await _read(resp, limit)
        except aiohttp.ClientConnectorError as exc:
            last = exc
            continue
        except TimeoutError as exc:  # aiohttp's own timeouts (also ClientErrors)
            raise FetchFailed("timeout", "the server did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise FetchFailed("error", f"HTTP client error ({type(exc).__name__})") from exc
    raise FetchFailed("error", f"connection failed ({type(last).__name__})")


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if 300 <= resp.status < 400:
        raise FetchFailed("refused", f"answered a redirect (HTTP {resp.status}), never followed")
    if resp.status != 200:
        raise FetchFailed("error", f"answered HTTP {resp.status}")
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchFailed("too_large", f"body of {resp.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > limit:
            # SECURITY: stop reading at the limit (memory exhaustion, decompression bombs)
            raise FetchFailed("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
