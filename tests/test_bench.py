"""The bench machinery: wrk output parsing, percentiles and ratios, and a 1-second end-to-end smoke run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import pytest

from bench.pyclient import percentile
from bench.report import render, to_json
from bench.results import BenchResult, LoadResult, TargetResult, ratios
from bench.runner import BenchOptions, run_bench
from bench.scenarios import RequestSpec
from bench.wrk import lua_string, parse, script

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:40001/open-banking/v3.1/register/abc
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    24.10ms    3.20ms  60.00ms   90.00%
    Req/Sec     2.00k   100.00     2.20k    80.00%
  Latency Distribution
     50%  850.00us
     75%   25.00ms
     90%   27.00ms
     99%    1.20s
  10000 requests in 5.01s, 4.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:   1996.01
Transfer/sec:    817.00KB
"""


def test_wrk_output_is_parsed_with_units_and_errors() -> None:
    """Requests/s, p50 in µs and p99 in s, socket errors plus non-2xx responses are all read."""
    result = parse(WRK_OUTPUT)
    expected = LoadResult(requests=10000, errors=6, seconds=5.01, rps=1996.01, p50_ms=0.85, p99_ms=1200.0)
    assert result == expected


def test_wrk_output_without_latency_lines_is_an_error() -> None:
    """Output from a wrk run without --latency (or a crashed one) is refused, not misread."""
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse("Requests/sec: 10\n")


@pytest.mark.parametrize(
    ("request_spec", "expected"),
    [
        (RequestSpec("GET", "/x"), None),
        (
            RequestSpec("POST", "/x", body=b'{"a":"\\\n"}'),
            'wrk.method = "POST"\nwrk.body = "{\\034a\\034:\\034\\092\\010\\034}"\n',
        ),
    ],
)
def test_wrk_script_only_when_needed(request_spec: RequestSpec, expected: str | None) -> None:
    """A plain GET needs no Lua script; a POST gets one with its body safely escaped."""
    assert script(request_spec) == expected
    assert lua_string(b"") == '""'


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, 0.0),
        ([1.0], 99, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    """Nearest-rank percentiles of sorted latencies."""
    assert percentile(values, q) == expected


def _target(name: str, kind: str, rps: float) -> TargetResult:
    return TargetResult(name, kind, [LoadResult(1, 0, 1.0, rps, 1.0, 2.0)])


def test_ratios_compare_every_gateway_with_every_anchor() -> None:
    """Each gateway target is divided by bare, direct and nginx, in that order."""
    targets = [_target("direct", "direct", 1000), _target("bare", "bare", 400), _target("gw", "gateway", 200),
               _target("nginx", "nginx", 800)]
    assert ratios(targets) == {"gw/bare": 0.5, "gw/direct": 0.2, "gw/nginx": 0.25}


@contextlib.contextmanager
def _hard_deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (the bench then stops its children on the way out)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"bench smoke run took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_get_scenario_smoke_run_measures_each_target_and_leaves_no_process() -> None:
    """A 1 s `get` run (Python client) measures each target with a real token, then leaves no process behind."""
    before = set(_children_of(os.getpid()))
    options = BenchOptions(scenario="get", targets=("direct", "floor", "bare", "gw_open", "gw_token"), duration=1,
                           rounds=1, warmup=0, connections=8, loadgen="python")
    with _hard_deadline(40):
        result = run_bench(options, progress=lambda line: None)

    assert [t.name for t in result.targets] == ["direct", "floor", "bare", "gw_open", "gw_token"]
    for target in result.targets:
        assert target.rps > 0, target
        assert target.errors == 0, target  # the token policy accepted every request: 200, not 401
    assert set(result.ratios) == {"gw_open/bare", "gw_open/floor", "gw_open/direct", "gw_token/gw_open",
                                  "gw_token/bare", "gw_token/floor", "gw_token/direct"}
    assert "gw_token/gw_open" in render(result)
    json.dumps(to_json(result))

    assert len(result.pids) == 5  # upstream, floor, bare proxy, two gateways
    for pid in result.pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # neither the process nor anything in its group is left
    assert set(_children_of(os.getpid())) <= before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_open_loop_rate_sends_exactly_rate_times_duration() -> None:
    """`--rate R` (latency mode) sends R requests per second of measurement on a timetable, whatever the answers,
    from the open-loop generator's own process, and reports p99.9 and the generator's lag."""
    options = BenchOptions(scenario="get", targets=("direct",), duration=2, rounds=1, warmup=0, connections=8,
                           loadgen="python", rate=40)
    with _hard_deadline(40):
        result = run_bench(options, progress=lambda line: None)
    (target,) = result.targets
    assert result.mode == "latency" and result.open_loop["rate"] == 40 and result.open_loop["saturation"] is None
    assert target.runs[0].requests == 80
    assert target.errors == 0
    assert target.p999_ms is not None and target.lag_p99_ms is not None
    assert "open loop at 40 req/s" in render(result)
    assert result.ratios == {}  # at one fixed rate every target serves the same requests/s
    assert len(result.pids) == 2  # the upstream (direct) and the generator's one worker process


def run_one_target(scenario: str, target: str, deadline: float = 40, requests: int = 200) -> BenchResult:
    """One round of `requests` requests to one target of `scenario` (Python client, 4 connections); it must serve
    every one without an error. Bounded by count, not time, so the run does the same work on any machine (a
    scenario with distinct bodies gets exactly the bodies it sends)."""
    options = BenchOptions(scenario=scenario, targets=(target,), duration=deadline, rounds=1, warmup=0,
                           connections=4, loadgen="python", requests=requests)
    with _hard_deadline(deadline):
        result = run_bench(options, progress=lambda line: None)
    (measured,) = result.targets
    assert measured.runs[0].requests == requests and measured.errors == 0
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_floor_forwards_bodies_and_answers_as_the_upstream_did() -> None:
    """The floor proxy (bench/floor_proxy.py) sends each POST's body upstream: every registration answered 201."""
    run_one_target("post", "floor")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_policies_scenario_loads_107_policies_and_serves() -> None:
    """The 1-vs-100-policies scenario's gateway loads its extra policies and answers the token request."""
    run_one_target("policies", "gw_token_100")
