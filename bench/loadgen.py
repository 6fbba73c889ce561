"""Choosing the closed-loop load generator: wrk when it is on PATH, else the bounded Python client. (The
open-loop generator of latency mode is `bench.openloop.OpenLoop`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .bodies import BodyStream
from .procs import ProcessGroup
from .pyclient import PythonClient
from .results import LoadResult
from .scenarios import RequestSpec
from .wrk import Wrk, find_wrk

CHOICES = ("auto", "wrk", "python")


class LoadGenerator(Protocol):
    """Sends `request` to a target over `connections` connections for `duration` seconds, or until it has sent
    `max_requests` if it can count (the Python generators can; wrk runs its whole duration); with a body stream,
    each request carries the stream's next body and the stream moves past every body sent."""

    @property
    def label(self) -> str:
        """Name and version, for the report."""
        ...

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None, max_requests: int | None = None) -> LoadResult:
        """Measure the target whose base URL is `url`."""
        ...


def choose(kind: str, procs: ProcessGroup, workdir: Path, counted: bool = False) -> LoadGenerator:
    """`auto`: wrk if installed, else Python; `wrk` fails when wrk is missing; `python` always works.
    `counted`: measurements end after a number of requests, which only the Python client can do."""
    if kind not in CHOICES:
        raise ValueError(f"unknown load generator {kind!r}; choose one of {', '.join(CHOICES)}")
    if counted:
        if kind == "wrk":
            raise ValueError("--requests needs the Python load generator (wrk only stops after a duration)")
        return PythonClient()
    binary = find_wrk() if kind != "python" else None
    if binary is not None:
        return Wrk(binary, procs, workdir)
    if kind == "wrk":
        raise RuntimeError("wrk not found on PATH (Debian: apt-get install wrk)")
    return PythonClient()
