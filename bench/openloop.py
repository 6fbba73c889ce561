"""The open-loop load generator: requests on a fixed timetable at a constant rate, whatever the answers.

A closed loop (wrk, the Python client) sends on a connection only once its last answer is in, so a target that
stalls is sent less while it stalls, and the requests that would have waited are never counted: its worst
latencies are under-reported (coordinated omission). Here request `k` of a measurement is *due* at
`t0 + k / rate`; it is sent when due over one of `connections` keep-alive connections (waiting for a free one
when all are busy) and its latency counts **from when it was due**, so time spent queued behind a slow answer
counts as well. The generator's own lateness (sent after due: timer granularity, about 1 ms with libuv, or an
overloaded generator) is part of every latency too, alike for every target, and is reported on its own (`lag`).

It runs in processes of its own (`python -m bench.openloop SPEC OUT`), so it takes no CPU from the bench process
and several can share a high rate: of `processes` workers, worker `i` sends requests `i`, `i + processes`, … of
the one timetable. Each worker runs on the gateway's loop (uvloop) with the gateway's own HTTP/1.1 client
(`gateway.http.upstream`: llhttp, a few tens of µs per request), and writes every latency to a JSON file the
bench reads back: the percentiles, p99.9 included, are exact.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.http.upstream import UpstreamError, UpstreamPool, header_lines

from . import loop
from .bodies import OUT_OF_BODIES_PATH, BodyStream
from .gateway import REPO
from .net import require_loopback
from .procs import ProcessGroup
from .pyclient import result
from .results import LoadResult
from .scenarios import RequestSpec

REQUEST_TIMEOUT = 5.0
"""Seconds a request may wait for a free connection, and then seconds its exchange may take; later it is an
error."""
SLACK_S = 10.0
"""Seconds a worker may run beyond its timetable and its last request's timeouts (a late timer, a busy machine)."""
STARTUP_ALLOWANCE = 30.0
"""Seconds the bench gives a worker to start and write its results, on top of the worker's own bound."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker process sends: its share of one timetable."""

    url: str
    """The target's base URL (loopback)."""
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: str
    """The fixed body (latin-1), when there is no body file."""
    expect_status: int
    rate: float
    """Requests/s of the whole timetable (all workers together)."""
    count: int
    """Requests in the whole timetable."""
    index: int
    processes: int
    connections: int
    """This worker's connections."""
    body_file: str | None = None
    """One body a line: timetable request `k` takes line `first_body + k` (modulo the file when `wrap`)."""
    body_count: int = 0
    first_body: int = 0
    wrap: bool = False


def _bound(count: int, rate: float) -> float:
    """Seconds a worker may take for `count` requests at `rate`: its timetable, then its last request's wait for
    a connection and exchange, and some slack."""
    return count / rate + 2 * REQUEST_TIMEOUT + SLACK_S


def _bodies(spec: WorkerSpec) -> list[bytes | None]:
    """This worker's body for each of its requests, in order; None where the file has run out."""
    mine = range(spec.index, spec.count, spec.processes)
    if spec.body_file is None:
        return [spec.body.encode("latin-1") or None] * len(mine)
    wanted: dict[int, list[int]] = {}
    for n, k in enumerate(mine):
        line = spec.first_body + k
        wanted.setdefault(line % spec.body_count if spec.wrap else line, []).append(n)
    out: list[bytes | None] = [None] * len(mine)
    with open(spec.body_file, "rb") as f:
        for line_no, line_bytes in enumerate(f):
            for n in wanted.get(line_no, ()):
                out[n] = line_bytes.rstrip(b"\n")
    return out


async def _run(spec: WorkerSpec) -> dict[str, Any]:
    """Send this worker's share of the timetable; every latency (from due), every lag (sent - due), errors."""
    bodies = _bodies(spec)
    header_block = header_lines(spec.headers)
    pool = UpstreamPool(spec.url, max_connections=spec.connections, keepalive_seconds=3600.0,
                        connect_timeout=REQUEST_TIMEOUT, read_timeout=REQUEST_TIMEOUT, total_timeout=REQUEST_TIMEOUT)
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    clock = time.perf_counter

    async def one(due: float, path: str, body: bytes | None) -> None:
        nonlocal errors
        ok = False
        try:
            response = await pool.request(spec.method, path, header_block, body)
            try:
                while await response.read():
                    pass
                ok = response.status == spec.expect_status
            finally:
                response.release()
        except (UpstreamError, OSError):
            pass
        latencies.append(clock() - due)
        errors += not ok

    tasks: set[asyncio.Task[None]] = set()
    t0 = clock()
    async with asyncio.timeout(_bound(spec.count, spec.rate)):
        for n, k in enumerate(range(spec.index, spec.count, spec.processes)):
            due = t0 + k / spec.rate
            delay = due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(clock() - due)
            body = bodies[n]
            if body is None and spec.body_file is not None:
                path, body = OUT_OF_BODIES_PATH, b""  # the file ran out: an error, never a body sent twice
            else:
                path = spec.path
            task = asyncio.create_task(one(due, path, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*tasks)
    elapsed = clock() - t0
    await pool.close()
    return {"latencies": latencies, "lags": lags, "errors": errors, "elapsed": elapsed}


def worker_main(argv: list[str]) -> int:
    """`python -m bench.openloop SPEC OUT`: run the worker described by the JSON file SPEC, write OUT."""
    spec_path, out_path = argv
    raw = json.loads(Path(spec_path).read_text())
    spec = WorkerSpec(**{**raw, "headers": [tuple(h) for h in raw["headers"]]})
    require_loopback(spec.url)
    Path(out_path).write_text(json.dumps(loop.run(_run(spec))))
    return 0


class OpenLoop:
    """`processes` worker processes together sending `rate` requests/s on a fixed timetable for `duration`
    seconds (`rate * duration` requests), over `connections` connections in all."""

    def __init__(self, procs: ProcessGroup, workdir: Path, rate: float, processes: int = 1) -> None:
        if rate <= 0 or processes < 1:
            raise ValueError(f"an open loop needs a positive rate and at least one process, got {rate}, {processes}")
        self.procs = procs
        self.workdir = workdir
        self.rate = rate
        self.processes = processes
        self.label = f"open loop at {rate:.0f} req/s ({processes} process{'es' if processes > 1 else ''}, uvloop)"
        self._runs = 0

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None, max_requests: int | None = None) -> LoadResult:
        """`rate * duration` requests (at most `max_requests`) to the target at base `url`; with `bodies`, timetable
        request `k` carries the stream's body `k`, and the stream moves past all of them."""
        count = max(1, round(self.rate * duration))
        if max_requests is not None:
            count = min(count, max_requests)
        processes = min(self.processes, count)
        self._runs += 1
        jobs = []
        outs = []
        for i in range(processes):
            spec = WorkerSpec(
                url=require_loopback(url), method=request.method, path=request.path, headers=list(request.headers),
                body=request.body.decode("latin-1"), expect_status=request.expect_status, rate=self.rate,
                count=count, index=i, processes=processes, connections=max(1, math.ceil(connections / processes)),
            )
            if bodies is not None:
                spec = WorkerSpec(**{**asdict(spec), "body_file": str(bodies.file.path),
                                     "body_count": bodies.file.count, "first_body": bodies.next, "wrap": bodies.wrap})
            name = f"openloop-{self._runs}-{i}"
            spec_path, out = self.workdir / f"{name}.json", self.workdir / f"{name}.out.json"
            spec_path.write_text(json.dumps(asdict(spec)))
            jobs.append((name, [sys.executable, "-m", "bench.openloop", str(spec_path), str(out)]))
            outs.append(out)
        logs = self.procs.run_all(jobs, _bound(count, self.rate) + STARTUP_ALLOWANCE, cwd=REPO)
        latencies: list[float] = []
        lags: list[float] = []
        errors = 0
        elapsed = 0.0
        for out, log in zip(outs, logs, strict=True):
            if not out.exists():
                raise RuntimeError(f"the open-loop generator wrote no result:\n{log[-2000:]}")
            done = json.loads(out.read_text())
            latencies += done["latencies"]
            lags += done["lags"]
            errors += done["errors"]
            elapsed = max(elapsed, done["elapsed"])
        if bodies is not None:
            bodies.advance(count)
        return result(latencies, errors, elapsed, lags)


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
