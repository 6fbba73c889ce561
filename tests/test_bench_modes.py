"""The bench's latency mode (the open-loop generator, the rate taken from bare's saturation) and soak mode
(memory and descriptors over a count of requests). Every run here is bounded by request count, never by how
fast the machine is: the assertions are about what was sent and what was reported, not about speed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.bodies import BodyStream
from bench.cli import build_parser
from bench.openloop import OpenLoop, WorkerSpec, _bodies
from bench.procs import ProcessGroup, group_memory
from bench.report import render, to_json
from bench.results import BenchResult, LoadResult, SoakSample, SoakTrace, TargetResult
from bench.runner import OPEN_LOOP_SHARE, BenchOptions, run_bench
from bench.scenarios import SCENARIOS, RequestSpec
from tests.test_bench import _hard_deadline
from tests.test_bench_post import _body_file, recorder  # noqa: F401  (the fixture)

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _spec(**changes: object) -> WorkerSpec:
    base = {"url": "http://127.0.0.1:9", "method": "POST", "path": "/r", "headers": [], "body": "",
            "expect_status": 200, "rate": 100.0, "count": 10, "index": 0, "processes": 1, "connections": 1}
    return WorkerSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_each_worker_takes_its_share_of_the_timetable_and_its_bodies(tmp_path: Path) -> None:
    """Worker i of n sends timetable requests i, i+n, …, each with body `first + k`; past the file's end a
    stream that does not wrap has no body left (None: the worker sends to the out-of-bodies path)."""
    file = _body_file(tmp_path, 8)
    common = {"body_file": str(file.path), "body_count": 8, "first_body": 3, "processes": 2}
    assert _bodies(_spec(**common, index=0)) == [b"body-3", b"body-5", b"body-7", None, None]
    assert _bodies(_spec(**common, index=1)) == [b"body-4", b"body-6", None, None, None]
    wrapping = _bodies(_spec(**common, index=1, wrap=True))
    assert wrapping == [b"body-4", b"body-6", b"body-0", b"body-2", b"body-4"]
    assert _bodies(_spec(body="fixed", count=3)) == [b"fixed"] * 3


@linux
@pytest.mark.process
def test_open_loop_workers_send_every_body_once_and_running_out_shows_as_errors(
        tmp_path: Path, recorder: tuple[str, list[bytes]]) -> None:  # noqa: F811
    """Two worker processes share one timetable: together exactly rate x duration requests, no body twice, the
    stream moved past all of them; a stream that runs out sends the rest to the 404 path (errors)."""
    url, seen = recorder
    stream = BodyStream(_body_file(tmp_path, 70))
    with _hard_deadline(60), ProcessGroup(tmp_path) as procs:
        generator = OpenLoop(procs, tmp_path, rate=100, processes=2)
        full = generator.measure(url, RequestSpec("POST", "/r"), 0.5, 4, stream)
        short = generator.measure(url, RequestSpec("POST", "/r"), 0.5, 4, stream)
    assert full.requests == 50 and full.errors == 0
    assert short.requests == 50 and short.errors == 30  # 20 bodies were left
    assert sorted(seen) == sorted(f"body-{i}".encode() for i in range(70))
    assert stream.next == 100 and stream.take() is None
    assert full.p999_ms is not None and full.lag_p99_ms is not None


@linux
@pytest.mark.process
def test_latency_mode_offers_half_of_bares_saturation_to_every_target() -> None:
    """Latency mode measures bare in a closed loop first, then sends every target the same timetable at half of
    that rate, and reports p99.9 and each gateway's p99 over bare's."""
    options = BenchOptions(scenario="get", targets=("bare", "gw_open"), duration=1, rounds=1, warmup=0,
                           connections=8, loadgen="python", mode="latency")
    with _hard_deadline(60):
        result = run_bench(options, progress=lambda line: None)
    o = result.open_loop
    assert o["saturation"] > 0 and o["rate"] == o["saturation"] * OPEN_LOOP_SHARE and o["share"] == OPEN_LOOP_SHARE
    for target in result.targets:
        assert [run.requests for run in target.runs] == [max(1, round(o["rate"]))]
        assert target.p999_ms is not None
    assert set(result.p99_over_bare_ms) == {"gw_open"}
    assert "gw_open - bare" in render(result)
    document = json.loads(json.dumps(to_json(result)))
    assert document["mode"] == "latency" and set(document["p99_over_bare_ms"]) == {"gw_open"}
    assert document["targets"][0]["p999_ms"] is not None and document["ratios"] == {}


def test_latency_mode_needs_bare_or_a_rate() -> None:
    """Without bare there is no saturation to take half of: refused before anything starts."""
    with pytest.raises(ValueError, match="include bare"):
        run_bench(BenchOptions(targets=("gw_open",), mode="latency"), progress=lambda line: None)


def test_rate_implies_latency_mode_and_is_refused_elsewhere() -> None:
    """`--rate` alone means latency mode; with another mode it is an error; `--scenario soak` soaks."""
    parser = build_parser()
    get = SCENARIOS["get"]()
    assert BenchOptions(rate=100).resolved_mode(get) == "latency"
    assert BenchOptions().resolved_mode(get) == "throughput"
    assert BenchOptions(scenario="soak").resolved_mode(SCENARIOS["soak"]()) == "soak"
    with pytest.raises(ValueError, match="--rate"):
        BenchOptions(rate=100, mode="soak").resolved_mode(get)
    args = parser.parse_args(["--scenario", "soak", "--requests", "5000", "--open-loop-processes", "2"])
    assert (args.scenario, args.requests, args.open_loop_processes, args.mode) == ("soak", 5000, 2, None)


def _sample(requests: int, rss_mib: float, fds: int) -> SoakSample:
    return SoakSample(requests, float(requests), int(rss_mib * 2**20), fds)


@pytest.mark.parametrize(
    ("end_rss", "end_fds", "passed"),
    [(104.9, 40, True), (105.0, 40, False), (90.0, 39, True), (100.0, 41, False)],
)
def test_soak_verdict_is_under_5_percent_rss_and_no_more_descriptors(end_rss: float, end_fds: int,
                                                                     passed: bool) -> None:
    """Growth counts from the sample after the warm-up, not from the cold start (which is always lower)."""
    trace = SoakTrace((_sample(0, 50.0, 20), _sample(100, 100.0, 40), _sample(1000, end_rss, end_fds)), baseline=1)
    assert trace.passed is passed
    assert trace.fd_growth == end_fds - 40


@linux
def test_group_memory_reads_this_process_group() -> None:
    rss, fds = group_memory(os.getpgrp()) or (0, 0)
    assert rss > 0 and fds >= 3


@linux
@pytest.mark.process
def test_soak_mode_sends_the_requests_and_samples_after_the_warm_up() -> None:
    """A small soak (300 requests, Python client, bounded by count): exactly 300 sent, a sample at the start,
    after the warm-up (the first 30) and at the end; resident memory, descriptors and the verdict reported."""
    options = BenchOptions(scenario="soak", targets=("gw_token",), duration=50, connections=4, loadgen="python",
                           requests=300)
    with _hard_deadline(60):
        result = run_bench(options, progress=lambda line: None)
    (target,) = result.targets
    soak = target.soak
    assert soak is not None and target.errors == 0
    assert [s.requests for s in soak.samples] == [0, 30, 300] and soak.baseline == 1
    assert all(s.rss_bytes > 0 and s.fds > 0 for s in soak.samples)
    assert "verdict" in render(result)
    document = json.loads(json.dumps(to_json(result)))["targets"][0]["soak"]
    assert document["passed"] == soak.passed and document["warmup_requests"] == 30
    assert [s["requests"] for s in document["samples"]] == [0, 30, 300]


def test_latency_report_gives_p99_over_bare_and_notes_a_target_that_fell_behind() -> None:
    """At a fixed rate a target that answered fewer requests/s than offered was saturated: its row is queueing,
    and the report says so; every gateway's p99 is shown against bare's."""

    def target(name: str, kind: str, rps: float, p99: float) -> TargetResult:
        return TargetResult(name, kind, [LoadResult(100, 0, 1.0, rps, 1.0, p99, p999_ms=p99 + 1, lag_p99_ms=0.5)])

    result = BenchResult(
        scenario="get", request="GET /x", settings={"connections": 8, "rounds": 1, "duration": 1, "warmup": 0},
        machine={"nproc": 2, "cpu_model": "cpu", "python": "3.11", "aiohttp": "3", "uvloop": True,
                 "load_generator": "open loop"},
        targets=[target("bare", "bare", 500, 2.0), target("gw_open", "gateway", 499, 2.5),
                 target("gw_token", "gateway", 300, 900.0)],
        skipped={}, pids=[], mode="latency", open_loop={"rate": 500.0, "saturation": 1000.0, "share": 0.5,
                                                        "processes": 1})
    assert result.p99_over_bare_ms == {"gw_open": 0.5, "gw_token": 898.0}
    text = render(result)
    assert "NOTE: gw_token answered 300 of the 500 req/s offered" in text
    assert "NOTE: gw_open" not in text and "gw_open - bare" in text and "+0.50" in text
