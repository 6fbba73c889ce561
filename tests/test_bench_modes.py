"""The bench's latency mode (the open-loop generator, the rate taken from bare's saturation) and soak mode
(memory and descriptors over a count of requests). Every run here is bounded by request count, never by how
fast the machine is: the assertions are about what was sent and what was reported, not about speed."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from bench.bodies import BodyStream
from bench.cli import build_parser
from bench.openloop import OpenLoop, WorkerSpec, _bodies
from bench.procs import GroupMemory, ProcessGroup, group_memory
from bench.report import render, to_json
from bench.results import BenchResult, LoadResult, Peer, SoakSample, SoakTrace, TargetResult
from bench.runner import OPEN_LOOP_SHARE, SETTLE_STABLE_S, BenchOptions, run_bench, settle
from bench.scenarios import SCENARIOS, RequestSpec
from tests.test_bench import _hard_deadline
from tests.test_bench_post import _body_file, recorder  # noqa: F401  (the fixture)
from tests.waiting import Clock

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


UPSTREAM = Peer("upstream", 8080, idle_close_s=65.0)
REDIS = Peer("redis", 6379, bound=33)


def _pooled(requests: int, own: int, upstream: int, redis: int) -> SoakSample:
    return SoakSample(requests, float(requests), 100 * 2**20, own + upstream + redis,
                      {"upstream": upstream, "redis": redis})


@pytest.mark.parametrize(
    ("end", "faults"),
    [
        # The recorded false FAIL: one connection more than after the warm-up, to the upstream, closed once idle.
        (_pooled(1000, 15, 0, 33), []),
        # A pool filling up to its bound after the warm-up (gw_token_redis went 87 -> 97) is not growth.
        (_pooled(1000, 15, 0, 22), []),
        (_pooled(1000, 16, 0, 33), []),  # one own descriptor more: fd_growth, below
        (_pooled(1000, 15, 1, 33), ["1 connections to upstream still open 65 s after the load"]),
        (_pooled(1000, 15, 0, 34), ["34 connections to redis, above its bound of 33"]),
    ],
)
def test_soak_verdict_judges_pooled_connections_by_their_rules_and_the_rest_strictly(
        end: SoakSample, faults: list[str]) -> None:
    """Connections to the upstream and to Redis are judged by the target's config (closed once idle; at most the
    pool's bound), everything else by the strict rule (no descriptor more than after the warm-up), whatever the
    totals say: more descriptors in all can pass, fewer in all can fail."""
    warm = _pooled(100, 15, 52, 22)
    trace = SoakTrace((_pooled(0, 15, 1, 1), warm, _pooled(500, 15, 51, 30), end), baseline=1, peers=(UPSTREAM, REDIS))
    assert trace.peer_faults == faults
    assert trace.fd_growth == end.own_fds - 15
    assert trace.passed is (not faults and end.own_fds <= 15)
    over = SoakTrace((warm, _pooled(500, 15, 50, 34), _pooled(1000, 15, 0, 33)), baseline=0, peers=(UPSTREAM, REDIS))
    assert over.peer_faults == ["34 connections to redis, above its bound of 33"]  # in any sample, not only the last
    filling = SoakTrace((_pooled(100, 15, 0, 22), _pooled(1000, 15, 0, 33)), baseline=0, peers=(UPSTREAM, REDIS))
    assert filling.end.fds > filling.warm.fds and filling.passed
    leaking = SoakTrace((_pooled(100, 15, 0, 33), _pooled(1000, 16, 0, 22)), baseline=0, peers=(UPSTREAM, REDIS))
    assert leaking.end.fds < leaking.warm.fds and not leaking.passed


def test_soak_of_a_target_without_pooled_peers_counts_every_descriptor() -> None:
    """An anchor (bare, nginx) has no peers: its connections to the upstream are its own descriptors."""
    trace = SoakTrace((SoakSample(100, 1.0, 2**20, 65, {}), SoakSample(1000, 2.0, 2**20, 66, {})), baseline=0)
    assert trace.fd_growth == 1 and not trace.passed and trace.peer_faults == []


class _Clock(Clock):
    """Time that moves only when the code under test sleeps: settle's logic, not this machine's speed."""

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _reader(clock: _Clock, script: list[tuple[float, GroupMemory]]):  # type: ignore[no-untyped-def]
    """Readings by time: from each `(t, reading)` on, that reading."""
    def read() -> GroupMemory:
        return [reading for t, reading in script if t <= clock.now + 1e-9][-1]
    return read


def test_settle_waits_for_the_clients_to_go_and_the_descriptors_to_stop_moving() -> None:
    """The load generator's connections still closing at first; then the count stops moving: the reading taken
    is the settled one, `SETTLE_STABLE_S` after the last change."""
    clock = _Clock(0.0)
    script = [(0.0, GroupMemory(1, 70, {8080: 50}, accepted=5)), (0.3, GroupMemory(1, 66, {8080: 51}, accepted=1)),
              (0.6, GroupMemory(1, 65, {8080: 50}, accepted=0))]
    reading = settle(_reader(clock, script), lambda r: r.accepted == 0, 5.0, clock=clock, sleep=clock.sleep)
    assert reading == script[-1][1]
    assert 0.6 + SETTLE_STABLE_S <= clock.now < 0.6 + SETTLE_STABLE_S + 0.2


def test_settle_restarts_when_connections_change_under_the_same_count() -> None:
    """A reading taken as pooled connections are reset (out of the kernel's table, descriptors not yet closed)
    has the same count of descriptors as the one before but not the same connections: not settled until the
    descriptors are closed and stay so."""
    clock = _Clock(0.0)
    idle = lambda r: r.accepted == 0 and not r.peers.get(8080)  # noqa: E731
    script = [(0.0, GroupMemory(1, 65, {8080: 50})), (1.0, GroupMemory(1, 65, {})), (1.05, GroupMemory(1, 15, {}))]
    reading = settle(_reader(clock, script), idle, 70.0, clock=clock, sleep=clock.sleep)
    assert reading.fds == 15 and clock.now >= 1.05 + SETTLE_STABLE_S


def test_settle_gives_the_last_reading_at_its_bound() -> None:
    """A target that never goes idle is judged as it is at the bound: nothing is left out."""
    clock = _Clock(0.0)
    busy = GroupMemory(1, 66, {8080: 1}, accepted=1)
    reading = settle(lambda: busy, lambda r: r.accepted == 0, 5.0, clock=clock, sleep=clock.sleep)
    assert reading == busy and 5.0 <= clock.now < 5.2


@linux
def test_group_memory_reads_this_process_group() -> None:
    reading = group_memory(os.getpgrp())
    assert reading is not None and reading.rss_bytes > 0 and reading.fds >= 3


@linux
def test_group_memory_tells_connections_by_peer_and_clients_connections() -> None:
    """Real sockets on 127.0.0.1 in this process: a connection out counts under its remote port (also once the
    peer has closed it: its descriptor is still open), one accepted on a listening port counts as a client's."""
    def read() -> GroupMemory:
        reading = group_memory(os.getpgrp())
        assert reading is not None
        return reading

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        before = read()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        during = read()
        assert during.peers.get(port) == 1 and during.accepted == before.accepted + 1
        assert during.fds == before.fds + 2
        accepted.close()  # the peer closes: this side is in CLOSE_WAIT, still a descriptor of ours
        half = read()
        assert half.peers.get(port) == 1 and half.accepted == before.accepted
        client.close()
        assert port not in read().peers


@linux
@pytest.mark.process
def test_soak_mode_sends_the_requests_and_samples_after_the_warm_up() -> None:
    """A small soak of both soak targets (300 requests each, Python client, bounded by count): exactly 300 sent, a
    sample at the start, after the warm-up (the first 30) and at the end, the last once the gateway has closed its
    idle upstream connections (it holds some while loaded); Redis connections within the configured pool (32 + the
    invalidation link); resident memory, descriptors and the verdict reported."""
    options = BenchOptions(scenario="soak", duration=50, connections=4, loadgen="python", requests=300)
    with _hard_deadline(300):  # the last sample waits for the upstream pool's keep-alive (30 s) sweep: 30-60 s
        result = run_bench(options, progress=lambda line: None)
    assert [t.name for t in result.targets] + list(result.skipped) == ["gw_token", "gw_token_redis"]
    for target in result.targets:
        soak = target.soak
        assert soak is not None and target.errors == 0
        assert [s.requests for s in soak.samples] == [0, 30, 300] and soak.baseline == 1
        assert all(s.rss_bytes > 0 and s.own_fds > 0 for s in soak.samples)
        assert soak.samples[1].peers["upstream"] > 0 and soak.end.peers["upstream"] == 0
        assert soak.passed, (soak, soak.peer_faults)
        document = json.loads(json.dumps(to_json(result)))["targets"][result.targets.index(target)]["soak"]
        assert document["passed"] and document["warmup_requests"] == 30 and document["peer_faults"] == []
        assert [s["requests"] for s in document["samples"]] == [0, 30, 300]
    redis = [t.soak for t in result.targets if t.name == "gw_token_redis" and t.soak is not None]
    for soak in redis:
        assert [(p.name, p.bound) for p in soak.peers] == [("upstream", None), ("redis", 2)]
        assert 0 < max(s.peers["redis"] for s in soak.samples) <= 33
    assert "verdict" in render(result)


def test_a_soak_with_failed_requests_fails_whatever_its_memory() -> None:
    """Flat memory over requests that failed (an expired token answered 401 a million times) is not the memory of
    the path the soak is for: the verdict, the report and the JSON say FAIL, with the count."""
    flat = SoakTrace((_sample(0, 50.0, 20), _sample(100, 100.0, 40), _sample(1000, 100.5, 40)), baseline=1)
    assert flat.passed

    def target(errors: int) -> TargetResult:
        return TargetResult("gw_token", "gateway", [LoadResult(1000, errors, 1.0, 1000.0, 1.0, 2.0)], soak=flat)

    def run(errors: int) -> BenchResult:
        return BenchResult(
            scenario="soak", request="GET /x",
            settings={"connections": 8, "rounds": 1, "duration": 1, "warmup": 0, "requests": 1000},
            machine={"nproc": 2, "cpu_model": "cpu", "python": "3.11", "aiohttp": "3", "uvloop": True,
                     "load_generator": "wrk"},
            targets=[target(errors)], skipped={}, pids=[], mode="soak")

    assert target(0).soak_passed and not target(3).soak_passed
    assert "FAIL gw_token: 3 requests failed" in render(run(3)) and "FAIL" not in render(run(0))
    assert to_json(run(3))["targets"][0]["soak"]["passed"] is False
    assert to_json(run(0))["targets"][0]["soak"]["passed"] is True


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
