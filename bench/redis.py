"""redis-server for the gateway targets that keep their state in Redis: one per run, loopback, no disk."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from .net import LOOPBACK, free_ports
from .procs import ProcessGroup

_STARTED: dict[Path, tuple[str, int]] = {}
"""Run directory → (URL, pid) of the redis-server started for that run."""


def _pong(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def shared_redis(procs: ProcessGroup, workdir: Path) -> str:
    """The run's redis-server URL, started on first use; FileNotFoundError when redis-server is not installed."""
    started = _STARTED.get(workdir)
    if started is not None and procs.alive(started[1]):
        return started[0]
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not installed (Debian: apt-get install redis-server)")
    (port,) = free_ports(1)
    argv = [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"]
    proc = procs.spawn("redis", argv)
    deadline = time.monotonic() + 10
    while not _pong(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start\n{procs.tail('redis')}")
        time.sleep(0.02)
    url = f"redis://{LOOPBACK}:{port}/0"
    _STARTED[workdir] = (url, proc.pid)
    return url
