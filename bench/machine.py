"""What the run ran on: CPUs, CPU model, Python, aiohttp, uvloop, load generator."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import aiohttp

from .loop import HAVE_UVLOOP


def cpu_model() -> str:
    """The `model name` of /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    """CPUs this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def describe(load_generator: str) -> dict[str, Any]:
    """The machine facts printed above the table and stored in the JSON results."""
    return {
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "aiohttp": aiohttp.__version__,
        "uvloop": HAVE_UVLOOP,
        "load_generator": load_generator,
    }
