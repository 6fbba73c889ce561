"""One bench run: start the upstream and the scenario's targets, warm up, measure in rounds, stop all."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import bodies, loadgen, machine
from .procs import ProcessGroup, group_cpu_seconds
from .results import BenchResult, LoadResult, TargetResult
from .scenarios import SCENARIOS, RequestSpec, Scenario
from .targets import ANCHORS, Endpoint, TargetSpec, Unavailable, start_target, start_upstream


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run and how long; the defaults are `make bench`'s (about 1.5 minutes on 2 cores)."""

    scenario: str = "get"
    targets: tuple[str, ...] = ()
    """Names of the scenario's targets to run; empty means all of them."""
    duration: int = 5
    """Seconds of each measurement (per target, per round)."""
    rounds: int = 3
    """Measurements per target, interleaved across targets; the median is reported."""
    warmup: int = 2
    """Seconds of unrecorded load per target before the first round."""
    connections: int = 50
    loadgen: str = "auto"
    rate: float | None = None
    """Requests/s of an open-loop load (Python client): latency at a fixed load, e.g. half of saturation."""


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
             connections: int, stream: bodies.BodyStream | None) -> LoadResult:
    """One measurement, with the CPU time the target's processes used meanwhile."""
    cpu_before = group_cpu_seconds(endpoint.pid)
    run = generator.measure(endpoint.url, request, seconds, connections, stream)
    cpu_after = group_cpu_seconds(endpoint.pid)
    if cpu_before is None or cpu_after is None:
        return run
    return replace(run, cpu_seconds=cpu_after - cpu_before)


def run_bench(options: BenchOptions, progress: Callable[[str], None] = _stderr) -> BenchResult:
    """Run one scenario end to end; every child process is stopped before this returns or raises."""
    if options.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {options.scenario!r}; valid: {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[options.scenario]()
    specs = select_targets(scenario, options.targets)
    request = scenario.request
    with tempfile.TemporaryDirectory(prefix="dcrgw-bench-") as tmp, ProcessGroup(Path(tmp)) as procs:
        workdir = Path(tmp)
        generator = loadgen.choose(options.loadgen, procs, workdir, options.rate)
        upstream = start_upstream(procs, workdir)
        body_file = None
        if request.bodies is not None:
            count = bodies.bodies_needed(options.warmup, options.rounds, options.duration, options.rate)
            body_file = bodies.prepare(request.bodies, count, workdir, upstream.url, progress)
        streams: dict[str, bodies.BodyStream] = {}
        _wait_serving(upstream, replace(request, headers=()), procs,
                      bodies.BodyStream(body_file, wrap=True) if body_file else None)
        endpoints: list[Endpoint] = []
        skipped: dict[str, str] = {}
        for spec in specs:
            try:
                endpoint = start_target(spec, procs, workdir, upstream)
            except Unavailable as exc:
                skipped[spec.name] = str(exc)
                progress(f"skip {spec.name}: {exc}")
                continue
            if body_file is not None:
                # Its own walk through the bodies (a gateway's replay state is its own); a target that does not
                # refuse replays may go round again, so a fast one never runs out.
                refuses = spec.kind not in ANCHORS and spec.gateway.refuses_replays
                streams[spec.name] = bodies.BodyStream(body_file, wrap=not refuses)
            _wait_serving(endpoint, request, procs, streams.get(spec.name))
            endpoints.append(endpoint)
        progress(f"{', '.join(e.name for e in endpoints)} ready; load generator: {generator.label}")

        if options.warmup > 0:
            for endpoint in endpoints:
                generator.measure(endpoint.url, request, options.warmup, options.connections,
                                  streams.get(endpoint.name))
        results = {e.name: TargetResult(e.name, e.kind) for e in endpoints}
        for round_no in range(options.rounds):
            # Rotate the order every round so slow drift (thermal, noisy neighbours) hits every target alike.
            shift = round_no % len(endpoints) if endpoints else 0
            for endpoint in endpoints[shift:] + endpoints[:shift]:
                run = _measure(generator, endpoint, request, options.duration, options.connections,
                               streams.get(endpoint.name))
                results[endpoint.name].runs.append(run)
                per_core = f" {run.per_core:.0f} req/cpu-s" if run.per_core else ""
                progress(f"round {round_no + 1}/{options.rounds} {endpoint.name:<14} {run.rps:>9.0f} req/s "
                         f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms errors {run.errors}{per_core}")
        label = generator.label
    return BenchResult(
        scenario=scenario.name,
        request=request.describe(),
        settings={k: v for k, v in asdict(options).items() if k != "targets"},
        machine=machine.describe(label),
        targets=[results[e.name] for e in endpoints],
        skipped=skipped,
        pids=list(procs.pids),
    )
