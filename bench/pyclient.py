"""The Python load generator (when wrk is absent, or to bound a measurement by request count): aiohttp, fixed
concurrency, closed loop, ending after a duration or a number of requests, whichever comes first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from . import loop
from .bodies import OUT_OF_BODIES_PATH, BodyStream
from .net import require_loopback
from .results import LoadResult
from .scenarios import RequestSpec

REQUEST_TIMEOUT = 5.0
MAX_REQUESTS = 2_000_000
"""Hard bound on requests per measurement, whatever the duration."""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 < q <= 100) of an ascending list; 0.0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


Next = Callable[[], tuple[str, bytes | None]]
"""Where the next request goes and its body."""


def next_request(base_url: str, request: RequestSpec, bodies: BodyStream | None = None) -> Next:
    """The scenario's fixed body every time, or the stream's next body; a stream that has run out sends to
    `OUT_OF_BODIES_PATH` instead (every target answers 404: an error, as with wrk)."""
    url = base_url + request.path
    if bodies is None:
        fixed = (url, request.body or None)
        return lambda: fixed
    stream, out = bodies, (base_url + OUT_OF_BODIES_PATH, b"")

    def take() -> tuple[str, bytes | None]:
        body = stream.take()
        return (url, body) if body is not None else out

    return take


async def _send(session: aiohttp.ClientSession, request: RequestSpec, headers: dict[str, str], nxt: Next) -> bool:
    """One request; True when it got the expected status."""
    url, body = nxt()
    try:
        async with session.request(request.method, url, headers=headers, data=body, allow_redirects=False) as resp:
            await resp.read()
            return resp.status == request.expect_status
    except (aiohttp.ClientError, TimeoutError):
        return False


def result(latencies: list[float], errors: int, elapsed: float, lags: list[float] | None = None) -> LoadResult:
    """The measurement of `latencies` (seconds, any order; sorted here) with `errors` over `elapsed` seconds;
    `lags`: an open loop's lateness of each send."""
    latencies.sort()
    if lags is not None:
        lags.sort()
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        p999_ms=percentile(latencies, 99.9) * 1000,
        lag_p99_ms=percentile(lags, 99) * 1000 if lags is not None else None,
    )


async def _measure(nxt: Next, request: RequestSpec, duration: float, connections: int, limit: int) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    started = 0
    headers = dict(request.headers)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        clock = asyncio.get_running_loop().time
        start = clock()
        deadline = start + duration

        async def worker() -> None:
            nonlocal errors, started
            while clock() < deadline and started < limit:
                started += 1
                sent = time.perf_counter()
                ok = await _send(session, request, headers, nxt)
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        async with asyncio.timeout(duration + REQUEST_TIMEOUT + 5):
            await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = clock() - start
    return result(latencies, errors, elapsed)


class PythonClient:
    """`connections` concurrent aiohttp workers on one loop in the bench process, each sending its next request
    when the last one is answered, for `duration` seconds or `max_requests` requests in all."""

    label = "python (aiohttp client)"

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None, max_requests: int | None = None) -> LoadResult:
        """Load the target at base `url` with `request` (each time the next of `bodies`, if given) and return
        what was measured."""
        nxt = next_request(require_loopback(url), request, bodies)
        limit = min(max_requests, MAX_REQUESTS) if max_requests is not None else MAX_REQUESTS
        return loop.run(_measure(nxt, request, duration, connections, limit))
