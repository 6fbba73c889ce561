"""Distinct request bodies: a scenario whose target refuses a repeated body (a registration JWS's `jti` is
accepted once) sends a different one with every request.

The bodies are generated once per run (`prepare`), one per line in a file of the run's directory, and every
target walks them with its own `BodyStream`: each gateway keeps its own replay state (per process, or under
its own Redis key prefix), so targets may share the file but a gateway that refuses replays never sees a body
twice. Targets that check nothing (direct, bare, nginx, the allow-all gateway) wrap around instead of running
out. A stream that runs out sends
`OUT_OF_BODIES_PATH` (404 from every target), so exhaustion shows up as errors, never silently.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

RATE_CEILING = 4000.0
"""Requests/s one target is assumed never to exceed with a fresh body each in a closed loop bounded by time:
bodies are generated for this rate over the whole run of a target. A faster target runs out, and its extra
requests are errors. Runs bounded by request count (`--requests`, the tests) and open loops (a known rate)
need no such guess: they get exactly the bodies they send."""
MAX_BODIES = 100_000
"""Refuse runs needing more (signing takes about 1 ms of CPU a body; a body is about 3 kB)."""
OUT_OF_BODIES_PATH = "/bench/out-of-bodies"
"""Where a stream that has run out sends its requests instead: no target serves it, so they count as errors."""


class BodySource(Protocol):
    """Makes the distinct bodies of a run (`RequestSpec.bodies`)."""

    @property
    def name(self) -> str:
        """Short name: the body file's name and the report's description."""
        ...

    def generate(self, count: int, upstream_url: str, progress: Callable[[str], None]) -> Iterable[str]:
        """`count` distinct bodies, each one line of ASCII, for targets in front of `upstream_url`."""
        ...


def bodies_needed(warmup: int, rounds: int, duration: int, requests: int | None = None) -> int:
    """Bodies one target may use in a closed-loop run, plus one for the readiness probe: with `requests` (each
    measurement ends after that many), exactly the warm-up's and every round's, whatever the machine's speed;
    else its warm-up and every round at `RATE_CEILING`."""
    if requests is not None:
        return ((warmup > 0) + rounds) * requests + 1
    seconds = max(0, warmup) + rounds * max(1, duration)
    return math.ceil(RATE_CEILING * seconds) + 1


@dataclass(slots=True)
class BodyFile:
    """Generated bodies, one per line; `load` reads them once (for the in-process Python client)."""

    path: Path
    count: int
    _lines: list[bytes] | None = field(default=None, repr=False)

    def load(self) -> list[bytes]:
        """Every body, in file order."""
        if self._lines is None:
            self._lines = self.path.read_bytes().splitlines()
        return self._lines


def prepare(source: BodySource, count: int, workdir: Path, upstream_url: str,
            progress: Callable[[str], None]) -> BodyFile:
    """The run's body file for `source` with `count` bodies: generated on first use, then reused."""
    if count > MAX_BODIES:
        raise ValueError(f"this scenario needs {count} distinct bodies per target (more than {MAX_BODIES}); "
                         "use a shorter --duration, fewer --rounds, fewer --requests or a lower --rate")
    path = workdir / f"bodies-{source.name}-{count}.txt"
    if not path.exists():
        started = time.monotonic()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as out:
            written = 0
            for body in source.generate(count, upstream_url, progress):
                out.write(body + "\n")
                written += 1
        if written != count:
            raise RuntimeError(f"{source.name}: generated {written} bodies, expected {count}")
        os.replace(tmp, path)
        progress(f"{count} {source.name} bodies generated in {time.monotonic() - started:.1f} s")
    return BodyFile(path, count)


@dataclass(slots=True)
class BodyStream:
    """One target's walk through a body file: the index of the next unused body."""

    file: BodyFile
    wrap: bool = False
    """Start again at the first body when all are used (targets that do not refuse a repeated body)."""
    next: int = 0

    def take(self) -> bytes | None:
        """The next body, or None when none is left (never when wrapping)."""
        if self.next >= self.file.count:
            if not self.wrap:
                return None
            self.next = 0
        body = self.file.load()[self.next]
        self.next += 1
        return body

    def advance(self, used: int) -> None:
        """Mark `used` more bodies as sent by someone else (wrk reports how many it took)."""
        self.next += used
        if self.wrap:
            self.next %= self.file.count
