"""Child processes of a bench run: each in its own process group, all stopped when the run ends.

Belt and braces: `ProcessGroup` stops every group it started on exit (normal, error or Ctrl-C), and on
Linux each child also gets SIGTERM from the kernel if the bench process itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGTERM me when my parent dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessGroup:
    """Starts named child processes (output to `<log_dir>/<name>.log`) and stops all of them on exit."""

    def __init__(self, log_dir: Path, grace: float = 3.0) -> None:
        self.log_dir = log_dir
        self.grace = grace
        self.pids: list[int] = []
        """Every pid ever started, for callers that check nothing is left behind."""
        self._live: dict[str, subprocess.Popen[bytes]] = {}
        self._names: dict[int, str] = {}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def log_path(self, name: str) -> Path:
        """Where the output of child `name` goes."""
        return self.log_dir / f"{name}.log"

    def spawn(
        self, name: str, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in a new session (its own process group), stdout and stderr to its log file."""
        if name in self._live:
            raise ValueError(f"a child named {name!r} is already running")
        with open(self.log_path(name), "wb") as log:
            proc = subprocess.Popen(  # argv built by the bench, never a shell string
                list(argv), cwd=cwd, env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
        self._live[name] = proc
        self._names[proc.pid] = name
        self.pids.append(proc.pid)
        return proc

    def run(self, name: str, argv: Sequence[str], timeout: float) -> str:
        """Run `argv` to completion within `timeout` seconds and return its output (killed on timeout)."""
        return self.run_all([(name, argv)], timeout)[0]

    def run_all(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float, cwd: Path | None = None) -> list[str]:
        """Run every `(name, argv)` at once (in `cwd`), all within `timeout` seconds; their outputs, in order (all
        are killed when one is still running at the deadline)."""
        started = [(name, self.spawn(name, argv, cwd=cwd)) for name, argv in jobs]
        deadline = time.monotonic() + timeout
        try:
            for name, proc in started:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"{name} still running after {timeout:.0f} s; killed") from None
        finally:
            for name, _ in started:
                self.stop(name)
        return [self.log_path(name).read_text(errors="replace") for name, _ in started]

    def name_of(self, pid: int) -> str:
        """The name a child was started under."""
        return self._names[pid]

    def alive(self, pid: int) -> bool:
        """True while the child `pid` runs."""
        proc = self._live.get(self._names.get(pid, ""))
        return proc is not None and proc.poll() is None

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a child's output, for error messages."""
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str) -> None:
        """Stop one child and its whole process group."""
        proc = self._live.pop(name, None)
        if proc is not None:
            _stop([proc], self.grace)

    def stop_all(self) -> None:
        """Stop every live child: SIGTERM to each group, then SIGKILL to whatever is left after `grace`."""
        procs = list(self._live.values())
        self._live.clear()
        _stop(procs, self.grace)


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        # Also reaches grandchildren (nginx workers) left in the group after the leader exited.
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _group_members(pgid: int) -> Iterator[tuple[str, list[str]]]:
    """(pid, /proc/<pid>/stat fields from `state` on) of every live process in group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # pgrp is the 3rd field from `state` on
            yield entry, fields


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU time (user + system) used so far by the live processes of process group `pgid` (a child started by
    `ProcessGroup.spawn` leads its own group: with a multi-process server, the workers count too), from
    /proc; None where there is no /proc."""
    if not os.path.isdir("/proc"):
        return None
    # utime and stime are the 12th and 13th fields from `state` on
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group_members(pgid))
    return ticks / _CLOCK_TICKS


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class GroupMemory:
    """A process group's resident memory and descriptors at one moment, read from /proc."""

    rss_bytes: int
    fds: int
    """Open file descriptors, every kind (files, pipes, sockets, epoll…), summed over the group."""
    peers: Mapping[int, int] = field(default_factory=dict)
    """Remote port → the group's outgoing TCP connections to it (descriptors of sockets it connected, in any
    state: a connection the peer closed and the group did not is still a descriptor)."""
    accepted: int = 0
    """TCP connections on a port the group listens on: clients' connections it has not closed yet."""


_LISTEN = "0A"


def _tcp_sockets(pid: str) -> dict[str, tuple[int, int, str]]:
    """Socket inode → (local port, remote port, state) of the TCP sockets of `pid`'s network namespace."""
    table: dict[str, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            table[fields[9]] = (local, remote, fields[3])
    return table


def group_memory(pgid: int) -> GroupMemory | None:
    """Resident memory and open descriptors summed over the live processes of group `pgid` (/proc/<pid>/statm,
    /proc/<pid>/fd), with its TCP connections by remote port (/proc/<pid>/net/tcp*); None where there is no
    /proc."""
    if not os.path.isdir("/proc"):
        return None
    rss = fds = 0
    sockets: dict[str, tuple[int, int, str]] | None = None
    connections: list[tuple[int, int]] = []
    listening: set[int] = set()
    for pid, _ in _group_members(pgid):
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * _PAGE_SIZE
            if sockets is None:
                sockets = _tcp_sockets(pid)
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{name}")
                except OSError:
                    continue  # closed meanwhile
                fds += 1
                # A socket missing from the table (created or reset after it was read) is an own descriptor.
                if target.startswith("socket:[") and target[8:-1] in sockets:
                    local, remote, state = sockets[target[8:-1]]
                    if state == _LISTEN:
                        listening.add(local)
                    else:
                        connections.append((local, remote))
        except OSError:
            continue  # gone meanwhile
    peers: dict[int, int] = {}
    accepted = 0
    for local, remote in connections:
        if local in listening:
            accepted += 1
        else:
            peers[remote] = peers.get(remote, 0) + 1
    return GroupMemory(rss, fds, peers, accepted)
