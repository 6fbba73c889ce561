"""Result values: one load-generator measurement, a target's rounds, and a whole run with its ratios."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .targets import ANCHORS, GATEWAY


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measurement of one target by a load generator."""

    requests: int
    """Responses received (errors included)."""
    errors: int
    """Unexpected statuses, socket errors and timeouts."""
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_seconds: float | None = None
    """CPU time the target's own processes used meanwhile (not the upstream's, unless it is the target);
    None when not measured."""
    p999_ms: float | None = None
    """The 99.9th percentile (the Python load generators; wrk prints none)."""
    lag_p99_ms: float | None = None
    """Open loop: 99th percentile of how late the generator itself sent a request after it was due (its own
    timer granularity and load; not the target's doing)."""

    @property
    def per_core(self) -> float | None:
        """Responses per CPU-second of the target: what one fully used core of it would serve."""
        return self.requests / self.cpu_seconds if self.cpu_seconds else None


@dataclass(slots=True)
class TargetResult:
    """A target's measurements over the rounds of a run; the summary is the median round."""

    name: str
    kind: str
    runs: list[LoadResult] = field(default_factory=list)
    soak: SoakTrace | None = None
    """Soak mode: the target's memory and file descriptors over the run (its runs are the soak's chunks)."""

    @property
    def rps(self) -> float:
        """Median requests/s over the rounds."""
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        """Median over the rounds of the round's median latency."""
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        """Median over the rounds of the round's 99th percentile latency."""
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def p999_ms(self) -> float | None:
        """Median over the rounds of the round's 99.9th percentile latency (None when not measured)."""
        return _median_or_none([r.p999_ms for r in self.runs])

    @property
    def lag_p99_ms(self) -> float | None:
        """Open loop: the worst round's 99th percentile of the generator's own lateness (None: closed loop)."""
        lags = [r.lag_p99_ms for r in self.runs if r.lag_p99_ms is not None]
        return max(lags) if lags else None

    @property
    def per_core(self) -> float | None:
        """Median over the rounds of responses per CPU-second of the target (None when not measured)."""
        return _median_or_none([r.per_core for r in self.runs])

    @property
    def cpu_share(self) -> float | None:
        """Median over the rounds of the target's CPU seconds per second (1.0: one core busy all the time)."""
        return _median_or_none([r.cpu_seconds / r.seconds if r.cpu_seconds is not None and r.seconds else None
                                for r in self.runs])

    @property
    def errors(self) -> int:
        """Errors over all rounds."""
        return sum(r.errors for r in self.runs)

    @property
    def soak_passed(self) -> bool:
        """Soak mode: the trace's verdict (`SoakTrace.passed`), and every request answered as expected — memory
        judged over requests that failed is not the memory of the path the soak is for."""
        return self.soak is not None and self.soak.passed and self.errors == 0

    @property
    def spread(self) -> float:
        """(max - min) / median of requests/s over the rounds: how noisy the figure is."""
        values = [r.rps for r in self.runs]
        return (max(values) - min(values)) / self.rps if self.rps else 0.0


SOAK_WARMUP_SHARE = 0.1
"""Soak: the first tenth of the requests is warm-up; growth is measured from the sample after it."""
RSS_GROWTH_LIMIT = 0.05
"""Soak: resident memory may grow by less than this fraction between the end of the warm-up and the end."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A server the target keeps pooled connections to (the upstream, Redis), and how a soak judges them: those
    connections come and go with the load, so they are checked against what the target's config allows instead of
    against the count after the warm-up."""

    name: str
    port: int
    """The server's port on 127.0.0.1: the target's connections to it are the ones with this remote port."""
    bound: int | None = None
    """For a pool that keeps its connections however long they are idle (Redis): the most connections the target's
    config allows to this server at once, never to be exceeded in any sample."""
    idle_close_s: float | None = None
    """For connections the target closes once idle (the upstream pool's keep-alive): within how many seconds of
    the load's end they are all closed; the last sample waits for that, and any connection still open fails."""


@dataclass(frozen=True, slots=True)
class SoakSample:
    """The target's processes at one point of a soak, read from /proc between two load chunks."""

    requests: int
    """Requests sent to the target so far."""
    seconds: float
    """Since the soak of this target began."""
    rss_bytes: int
    """Resident memory of the target's processes (sum over its process group)."""
    fds: int
    """Open file descriptors of the target's processes (sum over its process group), every kind."""
    peers: Mapping[str, int] = field(default_factory=dict)
    """The target's connections to each of its `Peer`s (by name), counted within `fds`."""

    @property
    def own_fds(self) -> int:
        """`fds` but the connections to the peers: files, pipes, listeners, client connections, anything else."""
        return self.fds - sum(self.peers.values())


@dataclass(frozen=True, slots=True)
class SoakTrace:
    """A target's samples over a soak; `baseline` indexes the first sample after the warm-up; the last sample is
    taken once the target is idle (`Peer.idle_close_s`)."""

    samples: tuple[SoakSample, ...]
    baseline: int
    peers: tuple[Peer, ...] = ()

    @property
    def warm(self) -> SoakSample:
        """The sample the growth is measured from: the end of the warm-up."""
        return self.samples[self.baseline]

    @property
    def end(self) -> SoakSample:
        """The last sample, after the last request."""
        return self.samples[-1]

    @property
    def rss_growth(self) -> float:
        """Resident memory at the end over that at the end of the warm-up, minus 1 (0.01: grew by 1 %)."""
        return self.end.rss_bytes / self.warm.rss_bytes - 1 if self.warm.rss_bytes else 0.0

    @property
    def fd_growth(self) -> int:
        """The target's own descriptors (all but its connections to the peers) at the end minus those at the end
        of the warm-up."""
        return self.end.own_fds - self.warm.own_fds

    @property
    def peer_faults(self) -> list[str]:
        """What the connections to the peers did wrong: more than a pool's bound in any sample, or connections the
        target should have closed still open once it was idle."""
        faults = []
        for peer in self.peers:
            most = max(s.peers.get(peer.name, 0) for s in self.samples)
            if peer.bound is not None and most > peer.bound:
                faults.append(f"{most} connections to {peer.name}, above its bound of {peer.bound}")
            left = self.end.peers.get(peer.name, 0)
            if peer.idle_close_s is not None and left:
                faults.append(f"{left} connections to {peer.name} still open {peer.idle_close_s:g} s after the load")
        return faults

    @property
    def passed(self) -> bool:
        """Memory flat (growth under `RSS_GROWTH_LIMIT`), no more own descriptors than after the warm-up, and the
        connections to the peers within their rules."""
        return self.rss_growth < RSS_GROWTH_LIMIT and self.fd_growth <= 0 and not self.peer_faults


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def ratios(targets: list[TargetResult]) -> dict[str, float]:
    """requests/s of every gateway target divided by that of every anchor (bare, direct, nginx) and of every
    gateway target listed before it (a scenario lists its baseline variant first, e.g. the allow-all policy)."""
    out: dict[str, float] = {}
    gateways = [t for t in targets if t.kind == GATEWAY]
    for i, subject in enumerate(gateways):
        for baseline in gateways[:i]:
            out[f"{subject.name}/{baseline.name}"] = subject.rps / baseline.rps if baseline.rps else 0.0
        for kind in ANCHORS:
            for anchor in (t for t in targets if t.kind == kind):
                out[f"{subject.name}/{anchor.name}"] = subject.rps / anchor.rps if anchor.rps else 0.0
    return out


@dataclass(slots=True)
class BenchResult:
    """Everything one run measured, with what it ran on."""

    scenario: str
    request: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    targets: list[TargetResult]
    skipped: dict[str, str]
    pids: list[int]
    """Every child process the run started (all gone when `run_bench` returns)."""
    mode: str = "throughput"
    """throughput (closed loop, saturated), latency (open loop at a fixed rate) or soak (memory over a long run)."""
    open_loop: dict[str, Any] = field(default_factory=dict)
    """Latency mode: `rate` (offered requests/s), `saturation` (bare's closed-loop requests/s it came from, or
    None when given with --rate), `share` of it, and the generator's `processes`."""

    @property
    def p99_over_bare_ms(self) -> dict[str, float]:
        """Latency mode: each gateway target's p99 minus bare's, in ms (issue 19 asks for at most 1 ms)."""
        bare = next((t for t in self.targets if t.kind == "bare"), None)
        if self.mode != "latency" or bare is None:
            return {}
        return {t.name: t.p99_ms - bare.p99_ms for t in self.targets if t.kind == GATEWAY}

    @property
    def ratios(self) -> dict[str, float]:
        """See `ratios` (throughput mode only: at a fixed rate every target serves the same requests/s)."""
        return ratios(self.targets) if self.mode == "throughput" else {}
