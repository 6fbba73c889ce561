"""Choosing the load generator: wrk when it is on PATH, else the bounded Python client."""

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
    """Sends `request` to a target over `connections` connections for `duration` seconds; with a body stream,
    each request carries the stream's next body and the stream moves past every body sent."""

    @property
    def label(self) -> str:
        """Name and version, for the report."""
        ...

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None) -> LoadResult:
        """Measure the target whose base URL is `url`."""
        ...


def choose(kind: str, procs: ProcessGroup, workdir: Path, rate: float | None = None) -> LoadGenerator:
    """`auto`: wrk if installed, else Python; `wrk` fails when wrk is missing; `python` always works.
    A fixed `rate` (open loop) is the Python client's: wrk has no rate control."""
    if kind not in CHOICES:
        raise ValueError(f"unknown load generator {kind!r}; choose one of {', '.join(CHOICES)}")
    if rate is not None:
        if kind == "wrk":
            raise ValueError("--rate needs the Python load generator (wrk has no rate control)")
        return PythonClient(rate)
    binary = find_wrk() if kind != "python" else None
    if binary is not None:
        return Wrk(binary, procs, workdir)
    if kind == "wrk":
        raise RuntimeError("wrk not found on PATH (Debian: apt-get install wrk)")
    return PythonClient()
