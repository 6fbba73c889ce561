"""The bench's `post` scenario: distinct signed registration bodies, the streams that hand them out (Python
client and wrk's Lua script), CPU per target, and a short run through the shipped policies."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bench import registration
from bench.bodies import (
    MAX_BODIES,
    OUT_OF_BODIES_PATH,
    RATE_CEILING,
    BodyFile,
    BodyStream,
    bodies_needed,
    prepare,
)
from bench.procs import ProcessGroup, group_cpu_seconds
from bench.pyclient import PythonClient, next_request
from bench.report import render, to_json
from bench.scenarios import SCENARIOS, RequestSpec
from bench.targets import start_target, start_upstream
from bench.wrk import Wrk, bodies_used, find_wrk
from gateway.jose import JwkSet, parse_compact, verify_signature
from tests.test_bench import _hard_deadline, run_one_target

PS256 = frozenset({"PS256"})


def test_bodies_cover_warmup_and_every_round_at_the_ceiling_plus_the_probe() -> None:
    """Defaults: (2 s + 3 x 5 s) at 4000 req/s, and one more for the readiness probe."""
    assert bodies_needed(warmup=2, rounds=3, duration=5) == 17 * RATE_CEILING + 1 == 68_001
    assert bodies_needed(warmup=0, rounds=1, duration=1) == RATE_CEILING + 1


def test_a_run_bounded_by_count_gets_exactly_its_bodies_whatever_the_duration() -> None:
    """With --requests every measurement (the warm-up too) ends after that many: the bodies do not depend on
    how fast the machine is, or on the duration, which is then only a bound."""
    assert bodies_needed(warmup=2, rounds=3, duration=600, requests=500) == 4 * 500 + 1
    assert bodies_needed(warmup=0, rounds=1, duration=1, requests=5000) == 5001


def test_registration_bodies_are_distinct_and_verify_with_the_served_keys() -> None:
    """Every body is a PS256 JWS by the TPP key of the served software JWKS, with its own jti, carrying the same
    directory-signed SSA that names the upstream's key set."""
    upstream = "http://127.0.0.1:40000"
    bodies = list(registration.RegistrationBodies(processes=2).generate(1200, upstream, lambda line: None))
    assert len(bodies) == 1200
    software = JwkSet.from_json(registration.software_jwks_json())
    directory = JwkSet.from_json(registration.directory_jwks_json())
    ssas: set[str] = set()
    for body in bodies[::37]:  # a sample from every chunk: verifying is slower than signing
        jws = parse_compact(body)
        assert jws.kid is not None
        key = software.get(jws.kid)
        assert key is not None
        verify_signature(jws, key, PS256)
        claims = jws.claims or {}
        assert claims["iss"] == registration.SOFTWARE_ID and claims["exp"] - claims["iat"] <= 3600
        ssas.add(claims["software_statement"])
    jtis = {(parse_compact(b).claims or {})["jti"] for b in bodies}
    assert len(jtis) == len(bodies)
    (ssa_text,) = ssas
    ssa = parse_compact(ssa_text)
    assert ssa.kid is not None
    verify_signature(ssa, directory.get(ssa.kid), PS256)  # type: ignore[arg-type]
    assert (ssa.claims or {})["software_jwks_endpoint"] == upstream + registration.SOFTWARE_JWKS_PATH


class _Counting:
    """A body source that counts how often it generates (and may generate one body too few)."""

    name = "counting"

    def __init__(self, short: bool = False) -> None:
        self.calls = 0
        self.short = short

    def generate(self, count: int, upstream_url: str, progress: object) -> Iterable[str]:
        self.calls += 1
        return (f"body-{i}" for i in range(count - self.short))


def test_prepare_generates_once_per_run_and_refuses_too_many(tmp_path: Path) -> None:
    source = _Counting()
    first = prepare(source, 10, tmp_path, "http://127.0.0.1:1", lambda line: None)
    again = prepare(source, 10, tmp_path, "http://127.0.0.1:1", lambda line: None)
    assert source.calls == 1 and first.path == again.path
    assert first.load() == [f"body-{i}".encode() for i in range(10)]
    with pytest.raises(ValueError, match="distinct bodies"):
        prepare(source, MAX_BODIES + 1, tmp_path, "http://127.0.0.1:1", lambda line: None)
    with pytest.raises(RuntimeError, match="generated 4 bodies, expected 5"):
        prepare(_Counting(short=True), 5, tmp_path, "http://127.0.0.1:1", lambda line: None)


def _body_file(tmp_path: Path, count: int) -> BodyFile:
    path = tmp_path / "bodies.txt"
    path.write_text("".join(f"body-{i}\n" for i in range(count)))
    return BodyFile(path, count)


def test_a_stream_runs_out_and_then_sends_to_the_out_of_bodies_path(tmp_path: Path) -> None:
    file = _body_file(tmp_path, 3)
    stream = BodyStream(file)
    nxt = next_request("http://127.0.0.1:9", RequestSpec("POST", "/r"), stream)
    assert [nxt() for _ in range(4)] == [("http://127.0.0.1:9/r", b"body-0"), ("http://127.0.0.1:9/r", b"body-1"),
                                         ("http://127.0.0.1:9/r", b"body-2"),
                                         ("http://127.0.0.1:9" + OUT_OF_BODIES_PATH, b"")]
    wrapping = BodyStream(file, wrap=True)
    assert [wrapping.take() for _ in range(4)] == [b"body-0", b"body-1", b"body-2", b"body-0"]
    wrapping.advance(5)
    assert wrapping.next == 0  # (1 + 5) % 3
    stream.advance(2)
    assert stream.next == 5 and stream.take() is None


# -- wrk's Lua script ---------------------------------------------------------------------------------------


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server recording every POST /r body (200); anything else is 404."""
    seen: list[bytes] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/r", record)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


needs_wrk = pytest.mark.skipif(find_wrk() is None, reason="wrk not installed")


def test_bodies_used_reads_the_scripts_report() -> None:
    assert bodies_used("Requests/sec: 1.0\nbench bodies per thread: 21\n", threads=2) == 42
    with pytest.raises(ValueError, match="did not report"):
        bodies_used("Requests/sec: 1.0\n", threads=1)


@needs_wrk
def test_wrk_threads_never_send_the_same_body_and_the_stream_moves_past_them(
        tmp_path: Path, recorder: tuple[str, list[bytes]]) -> None:
    """Two wrk threads (two Lua states) share a stream over two runs: no body is ever sent twice."""
    url, seen = recorder
    file = _body_file(tmp_path, 200_000)
    stream = BodyStream(file)
    with ProcessGroup(tmp_path) as procs:
        wrk = Wrk(find_wrk() or "wrk", procs, tmp_path, threads=2)
        first = wrk.measure(url, RequestSpec("POST", "/r"), 1, 4, stream)
        after_first = stream.next
        second = wrk.measure(url, RequestSpec("POST", "/r"), 1, 4, stream)
    assert first.requests > 0 and second.requests > 0 and first.errors == second.errors == 0
    assert len(seen) == len(set(seen)) >= first.requests + second.requests
    indices = sorted(int(body.removeprefix(b"body-")) for body in seen)
    assert indices[-1] < stream.next
    assert sum(i < after_first for i in indices) >= first.requests  # the second run started past the first


@needs_wrk
def test_wrk_out_of_bodies_shows_as_errors(tmp_path: Path, recorder: tuple[str, list[bytes]]) -> None:
    url, seen = recorder
    with ProcessGroup(tmp_path) as procs:
        result = Wrk(find_wrk() or "wrk", procs, tmp_path, threads=2).measure(
            url, RequestSpec("POST", "/r"), 1, 2, BodyStream(_body_file(tmp_path, 6)))
    # wrk calls request() once before the run to check the script: that body (thread 0's first) is never sent.
    assert sorted(seen) == sorted(f"body-{i}".encode() for i in range(1, 6))
    assert result.errors == result.requests - 5 > 0  # every other request went to the 404 path


# -- CPU per target and the post scenario end to end --------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_group_cpu_seconds_counts_this_process_group() -> None:
    before = group_cpu_seconds(os.getpgrp())
    sum(i * i for i in range(2_000_000))
    after = group_cpu_seconds(os.getpgrp())
    assert before is not None and after is not None and after > before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_post_scenario_smoke_run_passes_every_check_and_reports_cpu() -> None:
    """200 POSTs through the shipped policies, each with its own body: every one verified and answered 201. The
    run is bounded by count, so it gets exactly the bodies it sends: on a fast machine it cannot run out of them
    (a 1 s run once did, with bodies for 2000 req/s), on a slow one it just takes longer."""
    result = run_one_target("post", "gw_post", deadline=60)
    (target,) = result.targets
    assert target.per_core is not None and target.per_core > 0
    assert "req/cpu-s" in render(result)
    assert to_json(result)["targets"][0]["requests_per_cpu_second"] > 0
    assert "distinct registration body" in result.request


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_gateway_refuses_every_body_a_second_time(tmp_path: Path) -> None:
    """The bodies really are checked: sent again from the start, every one is a replay (400, an error)."""
    request = SCENARIOS["post"]().request
    assert request.bodies is not None
    post = next(t for t in SCENARIOS["post"]().targets if t.name == "gw_post")
    with _hard_deadline(60), ProcessGroup(tmp_path) as procs:
        upstream = start_upstream(procs, tmp_path)
        file = prepare(request.bodies, 300, tmp_path, upstream.url, lambda line: None)
        gateway = start_target(post, procs, tmp_path, upstream)
        client = PythonClient()
        fresh = client.measure(gateway.url, request, 50, 4, BodyStream(file), max_requests=100)
        replayed = client.measure(gateway.url, request, 50, 4, BodyStream(file), max_requests=100)
    assert fresh.requests == replayed.requests == 100
    assert fresh.errors == 0
    assert replayed.errors == 100
