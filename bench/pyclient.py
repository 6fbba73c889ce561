"""The Python load generator (when wrk is absent): aiohttp, fixed concurrency, fixed duration, bounded."""

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


def _result(latencies: list[float], errors: int, elapsed: float) -> LoadResult:
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        rps=len(latencies) / elapsed if elapsed else 0.0,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
    )


async def _measure(nxt: Next, request: RequestSpec, duration: float, connections: int) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    headers = dict(request.headers)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        clock = asyncio.get_running_loop().time
        start = clock()
        deadline = start + duration

        async def worker() -> None:
            nonlocal errors
            while clock() < deadline and len(latencies) < MAX_REQUESTS:
                sent = time.perf_counter()
                ok = await _send(session, request, headers, nxt)
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        async with asyncio.timeout(duration + REQUEST_TIMEOUT + 5):
            await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = clock() - start
    return _result(latencies, errors, elapsed)


async def _measure_rate(nxt: Next, request: RequestSpec, duration: float, connections: int,
                        rate: float) -> LoadResult:
    """Open loop: one request every 1/rate s whatever the answers, at most `connections` in flight.

    Latency counts from the moment a request was due, not from when it could be sent, so a slow target
    is not flattered by the load generator waiting for it (no coordinated omission).
    """
    latencies: list[float] = []
    errors = 0
    headers = dict(request.headers)
    total = min(int(duration * rate), MAX_REQUESTS)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        start = time.perf_counter()

        async def one(due: float) -> None:
            nonlocal errors
            ok = await _send(session, request, headers, nxt)
            latencies.append(time.perf_counter() - due)
            errors += not ok

        tasks = []
        async with asyncio.timeout(duration + REQUEST_TIMEOUT + 5):
            for i in range(total):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(due)))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return _result(latencies, errors, elapsed)


class PythonClient:
    """`connections` concurrent aiohttp workers on one loop in the bench process, for `duration` seconds;
    with `rate`, an open loop at that many requests/s instead (latency at a given load)."""

    label = "python (aiohttp client)"

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        if rate is not None:
            self.label = f"python (aiohttp client, open loop at {rate:g} req/s)"

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None) -> LoadResult:
        """Load the target at base `url` with `request` (each time the next of `bodies`, if given) and return
        what was measured."""
        nxt = next_request(require_loopback(url), request, bodies)
        if self.rate is not None:
            return loop.run(_measure_rate(nxt, request, duration, connections, self.rate))
        return loop.run(_measure(nxt, request, duration, connections))
