"""Result values: one load-generator measurement, a target's rounds, and a whole run with its ratios."""

from __future__ import annotations

import statistics
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
    def spread(self) -> float:
        """(max - min) / median of requests/s over the rounds: how noisy the figure is."""
        values = [r.rps for r in self.runs]
        return (max(values) - min(values)) / self.rps if self.rps else 0.0


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

    @property
    def ratios(self) -> dict[str, float]:
        """See `ratios`."""
        return ratios(self.targets)
