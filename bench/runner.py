"""One bench run: start the upstream and the scenario's targets, measure them in the run's mode, stop all.

Modes (`BenchOptions.mode`, or the scenario's own):
- `throughput`: a closed loop (wrk or the Python client) saturating each target in turn: requests/s, req/cpu-s,
  ratios; warm-up, then rounds interleaved across targets, the median shown.
- `latency`: first `bare`'s saturation in a closed loop, then the open-loop generator (`bench/openloop.py`) at
  `OPEN_LOOP_SHARE` of it (or at `rate`), the same for every target, in the same rounds: p50/p99/p99.9.
- `soak`: `requests` requests (default `SOAK_REQUESTS`) to each target in chunks, the target's resident memory
  and open file descriptors read from /proc between chunks; growth after a warm-up share.
"""

from __future__ import annotations

import functools
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.settings import load_settings

from . import bodies, loadgen, machine
from .gateway import gateway_env
from .openloop import OpenLoop
from .procs import GroupMemory, ProcessGroup, group_cpu_seconds, group_memory
from .results import SOAK_WARMUP_SHARE, BenchResult, LoadResult, Peer, SoakSample, SoakTrace, TargetResult
from .scenarios import SCENARIOS, RequestSpec, Scenario
from .serving import DEFAULT_LIFETIME
from .targets import ANCHORS, Endpoint, TargetSpec, Unavailable, start_target, start_upstream

MODES = ("throughput", "latency", "soak")
OPEN_LOOP_SHARE = 0.5
"""Latency mode offers this share of `bare`'s closed-loop saturation rate (measured in the same run)."""
SATURATION_BODIES = 2000
"""Latency mode with distinct bodies: the bodies of the readiness probes and of `bare`'s saturation run (bare
goes round them again; the open loop then gets a file of exactly the bodies it sends)."""
SOAK_REQUESTS = 1_000_000
"""Soak mode: requests per target unless `requests` says otherwise."""
SOAK_SLOWEST_RATE = 100.0
"""Soak mode: the upstream's own lifetime assumes at least this many requests/s (a soak outlasts the default)."""
SETTLE_S = 5.0
"""Soak mode: at most this long after a chunk for the target to settle (`settle`): no client connection left
open (the load generator's are closing) and its descriptor count unchanged for `SETTLE_STABLE_S`."""
SETTLE_STABLE_S = 0.5
KEY_FETCH_KEEPALIVE_S = 15.0
"""aiohttp's default keep-alive (`TCPConnector`), the gateway's key-fetch session's (gateway/jose/guarded_fetch.py):
the bench upstream also serves the key sets, so a key-set refetch (every `trust.jwks.ttl_seconds`) leaves one more
connection to it, closed once idle this long."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run and how long; the defaults are `make bench`'s (about 2.5 minutes on 2 cores)."""

    scenario: str = "get"
    targets: tuple[str, ...] = ()
    """Names of the scenario's targets to run; empty means all of them."""
    duration: int = 5
    """Seconds of each measurement (per target, per round); in soak mode, of each chunk."""
    rounds: int = 3
    """Measurements per target, interleaved across targets; the median is reported."""
    warmup: int = 2
    """Seconds of unrecorded load per target before the first round."""
    connections: int = 50
    loadgen: str = "auto"
    """The closed-loop load generator (throughput, `bare`'s saturation in latency mode, soak)."""
    mode: str | None = None
    """One of `MODES`; None: `latency` when `rate` is given, else the scenario's own mode."""
    rate: float | None = None
    """Latency mode: offer this many requests/s instead of `OPEN_LOOP_SHARE` of bare's saturation."""
    requests: int | None = None
    """Throughput mode: each measurement (and the warm-up) ends after this many requests (Python client), so a
    run does the same work on any machine; soak mode: requests per target (default `SOAK_REQUESTS`)."""
    open_loop_processes: int = 1
    """Latency mode: processes of the open-loop generator (one timetable shared between them)."""

    def resolved_mode(self, scenario: Scenario) -> str:
        """The mode this run measures in."""
        mode = self.mode or ("latency" if self.rate is not None else scenario.mode)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if self.rate is not None and mode != "latency":
            raise ValueError("--rate is the open-loop rate of latency mode")
        return mode


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def select_targets(scenario: Scenario, names: tuple[str, ...]) -> tuple[TargetSpec, ...]:
    """The scenario's targets named in `names` (all when empty), in the scenario's order."""
    known = {t.name for t in scenario.targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"scenario {scenario.name} has no target {', '.join(unknown)}; "
                         f"valid: {', '.join(t.name for t in scenario.targets)}")
    return tuple(t for t in scenario.targets if not names or t.name in names)


def _wait_serving(endpoint: Endpoint, request: RequestSpec, procs: ProcessGroup,
                  stream: bodies.BodyStream | None = None) -> None:
    """Wait until the target answers the scenario's request with the expected status (with a body stream,
    its first body: the measurements then start at the second)."""
    from .net import wait_until

    body = stream.take() if stream is not None else request.body or None
    try:
        wait_until(endpoint.url + request.path, expect=request.expect_status, method=request.method,
                   headers=dict(request.headers), body=body, alive=lambda: procs.alive(endpoint.pid))
    except RuntimeError as exc:
        name = procs.name_of(endpoint.pid)
        raise RuntimeError(f"{endpoint.name}: {exc}\n{procs.tail(name)}") from None


def _measure(generator: loadgen.LoadGenerator, endpoint: Endpoint, request: RequestSpec, seconds: float,
             connections: int, stream: bodies.BodyStream | None, max_requests: int | None = None) -> LoadResult:
    """One measurement, with the CPU time the target's processes used meanwhile."""
    cpu_before = group_cpu_seconds(endpoint.pid)
    run = generator.measure(endpoint.url, request, seconds, connections, stream, max_requests)
    cpu_after = group_cpu_seconds(endpoint.pid)
    if cpu_before is None or cpu_after is None:
        return run
    return replace(run, cpu_seconds=cpu_after - cpu_before)


@dataclass(slots=True)
class _Started:
    """The run's targets, serving, with the body file their streams walk (when the request has bodies)."""

    request: RequestSpec
    upstream: Endpoint
    endpoints: list[Endpoint]
    refuses_replays: dict[str, bool]
    skipped: dict[str, str]
    streams: dict[str, bodies.BodyStream]

    def walk(self, body_file: bodies.BodyFile | None) -> None:
        """Give every target its own walk through `body_file`: a gateway's replay state is its own, and a target
        that does not refuse replays goes round again, so a fast one never runs out."""
        self.streams = {} if body_file is None else {
            e.name: bodies.BodyStream(body_file, wrap=not self.refuses_replays[e.name]) for e in self.endpoints}


def _start(scenario: Scenario, specs: tuple[TargetSpec, ...], procs: ProcessGroup, workdir: Path,
           body_count: int, progress: Callable[[str], None], lifetime: float | None = None) -> _Started:
    """Start the upstream (living `lifetime` seconds at most) and every target, each answering the scenario's
    request (targets that cannot run here are skipped); with distinct bodies, `body_count` are generated first."""
    request = scenario.request
    upstream = start_upstream(procs, workdir, lifetime)
    body_file = None
    if request.bodies is not None:
        body_file = bodies.prepare(request.bodies, body_count, workdir, upstream.url, progress)
    _wait_serving(upstream, replace(request, headers=()), procs,
                  bodies.BodyStream(body_file, wrap=True) if body_file else None)
    started = _Started(request, upstream, [], {}, {}, {})
    for spec in specs:
        try:
            endpoint = start_target(spec, procs, workdir, upstream)
        except Unavailable as exc:
            started.skipped[spec.name] = str(exc)
            progress(f"skip {spec.name}: {exc}")
            continue
        started.endpoints.append(endpoint)
        refuses = started.refuses_replays[spec.name] = spec.kind not in ANCHORS and spec.gateway.refuses_replays
        if body_file is not None:
            started.streams[spec.name] = bodies.BodyStream(body_file, wrap=not refuses)
        _wait_serving(endpoint, request, procs, started.streams.get(spec.name))  # takes the stream's first body
    return started


def _rounds(generator: loadgen.LoadGenerator, started: _Started, options: BenchOptions,
            progress: Callable[[str], None], max_requests: int | None = None) -> dict[str, TargetResult]:
    """A warm-up per target, then `rounds` measurements of every target, the order rotating every round."""
    endpoints, request, streams = started.endpoints, started.request, started.streams
    if options.warmup > 0:
        for endpoint in endpoints:
            generator.measure(endpoint.url, request, options.warmup, options.connections, streams.get(endpoint.name),
                              max_requests)
    results = {e.name: TargetResult(e.name, e.kind) for e in endpoints}
    for round_no in range(options.rounds):
        # Rotate the order every round so slow drift (thermal, noisy neighbours) hits every target alike.
        shift = round_no % len(endpoints) if endpoints else 0
        for endpoint in endpoints[shift:] + endpoints[:shift]:
            run = _measure(generator, endpoint, request, options.duration, options.connections,
                           streams.get(endpoint.name), max_requests)
            results[endpoint.name].runs.append(run)
            per_core = f" {run.per_core:.0f} req/cpu-s" if run.per_core else ""
            p999 = f" p99.9 {run.p999_ms:.2f} ms" if run.p999_ms is not None else ""
            progress(f"round {round_no + 1}/{options.rounds} {endpoint.name:<14} {run.rps:>9.0f} req/s "
                     f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms{p999} errors {run.errors}{per_core}")
    return results


def _saturation(generator: loadgen.LoadGenerator, started: _Started, options: BenchOptions,
                progress: Callable[[str], None]) -> float:
    """`bare`'s requests/s in a closed loop (after the warm-up): the rate the open loop takes its share of."""
    bare = next((e for e in started.endpoints if e.kind == "bare"), None)
    if bare is None:
        raise ValueError("latency mode takes its rate from bare's saturation: include bare in --targets, "
                         "or give --rate")
    stream = started.streams.get(bare.name)
    if options.warmup > 0:
        generator.measure(bare.url, started.request, options.warmup, options.connections, stream)
    run = generator.measure(bare.url, started.request, options.duration, options.connections, stream)
    if run.errors or run.rps <= 0:
        raise RuntimeError(f"bare's saturation run failed: {run.requests} requests, {run.errors} errors")
    progress(f"bare saturates at {run.rps:.0f} req/s ({generator.label}); open loop at "
             f"{OPEN_LOOP_SHARE:.0%} of it: {run.rps * OPEN_LOOP_SHARE:.0f} req/s")
    return run.rps


def settle(read: Callable[[], GroupMemory | None], idle: Callable[[GroupMemory], bool], limit_s: float, *,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
           poll_s: float = 0.1) -> GroupMemory:
    """Read a target's processes until they are `idle` (no client connection left open, and for the last sample
    no idle connection left to close) and their descriptors (count, and connections by peer) have not moved for
    `SETTLE_STABLE_S`; at most `limit_s`, then the last reading as it is (nothing is excluded: a target that never
    settles is judged as read)."""
    deadline = clock() + limit_s
    last = read()
    stable_since = clock()
    while True:
        if last is None:
            raise RuntimeError("soak mode reads /proc: Linux only")
        now = clock()
        if (idle(last) and now - stable_since >= SETTLE_STABLE_S) or now >= deadline:
            return last
        sleep(poll_s)
        reading = read()
        if reading is None or _shape(reading) != _shape(last):
            stable_since = clock()
        last = reading


def _shape(reading: GroupMemory) -> tuple[int, int, dict[int, int]]:
    """What must not move for a reading to count as settled: the descriptors, by kind of connection."""
    return reading.fds, reading.accepted, dict(reading.peers)


REDIS_CONNECTIONS_PER_WORKER = 2
"""The store's pipelined connection (gateway/state/resp.py) and the revocation cache's invalidation link."""


def soak_peers(endpoint: Endpoint, upstream: Endpoint) -> tuple[Peer, ...]:
    """The servers a gateway target keeps pooled connections to, with the rules its own config gives them (read
    as the gateway reads it): the upstream, whose idle connections it closes (`upstream.pool.keepalive_seconds`;
    the key-fetch session's keep-alive, since the bench upstream serves the key sets), and Redis, where each worker
    keeps its one pipelined connection and its invalidation link open. Other targets have none: every descriptor
    of theirs is held to the strict rule."""
    if endpoint.config is None:
        return ()
    settings = load_settings(endpoint.config, gateway_env())
    keepalive = max(settings.upstream.pool.keepalive_seconds, KEY_FETCH_KEEPALIVE_S)
    # An idle connection is closed by the first sweep at least `keepalive` after its last use: sweeps run every
    # `keepalive`, so within twice that.
    peers = [Peer("upstream", _port(upstream.url), idle_close_s=2 * keepalive + SETTLE_S)]
    if settings.state.backend == "redis":
        url = settings.state.redis.resolve_url(gateway_env())
        peers.append(Peer("redis", _port(url), bound=settings.server.workers * REDIS_CONNECTIONS_PER_WORKER))
    return tuple(peers)


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url!r}")
    return port


def _idle(closing_ports: tuple[int, ...], reading: GroupMemory) -> bool:
    """No client connection open, nor any connection to `closing_ports`."""
    return reading.accepted == 0 and not any(reading.peers.get(port) for port in closing_ports)


def _sample(reading: GroupMemory, peers: tuple[Peer, ...], requests: int, seconds: float) -> SoakSample:
    return SoakSample(requests, seconds, reading.rss_bytes, reading.fds,
                      {p.name: reading.peers.get(p.port, 0) for p in peers})


def _soak(generator: loadgen.LoadGenerator, started: _Started, options: BenchOptions,
          progress: Callable[[str], None]) -> dict[str, TargetResult]:
    """Each target in turn: `requests` requests in chunks of `duration` seconds (or fewer requests, where the
    generator can count), its memory and descriptors read after every chunk once it has settled, the last time once
    it has also closed its idle connections; growth from the end of the warm-up."""
    total = options.requests or SOAK_REQUESTS
    warm = max(1, math.ceil(total * SOAK_WARMUP_SHARE))
    results = {}
    for endpoint in started.endpoints:
        result = TargetResult(endpoint.name, endpoint.kind)
        peers = soak_peers(endpoint, started.upstream)
        closing = [p for p in peers if p.idle_close_s is not None]
        read = functools.partial(group_memory, endpoint.pid)
        no_clients = functools.partial(_idle, ())
        all_closed = functools.partial(_idle, tuple(p.port for p in closing))
        began = time.monotonic()
        samples = [_sample(settle(read, no_clients, SETTLE_S), peers, 0, 0.0)]
        baseline = None
        sent = 0
        while sent < total:
            goal = warm if sent < warm else total
            run = _measure(generator, endpoint, started.request, options.duration, options.connections,
                           started.streams.get(endpoint.name), goal - sent)
            if run.requests == 0:
                raise RuntimeError(f"{endpoint.name}: no request answered in a soak chunk")
            result.runs.append(run)
            sent += run.requests
            if sent < total:
                reading = settle(read, no_clients, SETTLE_S)
            else:
                limit = max([SETTLE_S, *(p.idle_close_s or 0.0 for p in closing)])
                progress(f"soak {endpoint.name:<14} waiting up to {limit:.0f} s for its idle connections to close")
                reading = settle(read, all_closed, limit)
            samples.append(_sample(reading, peers, sent, time.monotonic() - began))
            if baseline is None and sent >= warm:
                baseline = len(samples) - 1
            s = samples[-1]
            pools = "".join(f" {name} {count}" for name, count in s.peers.items())
            progress(f"soak {endpoint.name:<14} {sent:>9}/{total} requests {run.rps:>7.0f} req/s "
                     f"rss {s.rss_bytes / 2**20:.1f} MiB fds {s.fds} (own {s.own_fds}{pools}) errors {run.errors}")
        result.soak = SoakTrace(tuple(samples), baseline or len(samples) - 1, peers)
        results[endpoint.name] = result
    return results


def _body_count(mode: str, options: BenchOptions) -> int:
    """The bodies to generate before the targets start (latency mode generates its open loop's later)."""
    if mode == "latency":
        return SATURATION_BODIES
    if mode == "soak":
        total = options.requests or SOAK_REQUESTS
        return total + math.ceil(bodies.RATE_CEILING * options.duration) + 1  # a chunk of wrk may overshoot
    return bodies.bodies_needed(options.warmup, options.rounds, options.duration, options.requests)


def run_bench(options: BenchOptions, progress: Callable[[str], None] = _stderr) -> BenchResult:
    """Run one scenario end to end; every child process is stopped before this returns or raises."""
    if options.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {options.scenario!r}; valid: {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[options.scenario]()
    mode = options.resolved_mode(scenario)
    specs = select_targets(scenario, options.targets)
    if mode == "latency" and options.rate is None and not any(s.kind == "bare" for s in specs):
        raise ValueError("latency mode takes its rate from bare's saturation: include bare in --targets, "
                         "or give --rate")
    open_loop: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="dcrgw-bench-") as tmp, ProcessGroup(Path(tmp)) as procs:
        workdir = Path(tmp)
        closed = loadgen.choose(options.loadgen, procs, workdir,
                                counted=mode == "throughput" and options.requests is not None)
        lifetime = None
        if mode == "soak":
            lifetime = DEFAULT_LIFETIME + len(specs) * (options.requests or SOAK_REQUESTS) / SOAK_SLOWEST_RATE
        started = _start(scenario, specs, procs, workdir, _body_count(mode, options), progress, lifetime)
        progress(f"{', '.join(e.name for e in started.endpoints)} ready; load generator: {closed.label}")
        if mode == "throughput":
            results = _rounds(closed, started, options, progress, options.requests)
            label = closed.label
        elif mode == "latency":
            saturation = _saturation(closed, started, options, progress) if options.rate is None else None
            rate = options.rate or (saturation or 0.0) * OPEN_LOOP_SHARE
            generator = OpenLoop(procs, workdir, rate, options.open_loop_processes)
            if started.request.bodies is not None:
                per_round = max(1, round(rate * options.duration))
                count = (max(1, round(rate * options.warmup)) if options.warmup > 0 else 0) + options.rounds * per_round
                started.walk(bodies.prepare(started.request.bodies, count, workdir, started.upstream.url, progress))
            results = _rounds(generator, started, options, progress)
            label = f"{generator.label}; saturation: {closed.label}"
            open_loop = {"rate": rate, "saturation": saturation, "share": OPEN_LOOP_SHARE if saturation else None,
                         "processes": options.open_loop_processes}
        else:
            results = _soak(closed, started, options, progress)
            label = closed.label
    settings = {k: v for k, v in asdict(options).items() if k != "targets"}
    settings["mode"] = mode
    return BenchResult(
        scenario=scenario.name,
        request=started.request.describe(),
        settings=settings,
        machine=machine.describe(label),
        targets=[results[e.name] for e in started.endpoints],
        skipped=started.skipped,
        pids=list(procs.pids),
        mode=mode,
        open_loop=open_loop,
    )
