"""`serve --workers N`: N gateway processes sharing the listening ports, under one parent.

The parent binds nothing and serves nothing: it makes a fresh PROMETHEUS_MULTIPROC_DIR, starts N workers
(`python -m gateway serve … --worker-index i`, each binding the public and admin ports with SO_REUSEPORT, so
the kernel spreads connections over them), forwards SIGTERM/SIGINT (graceful drain) and SIGHUP (policy
reload) to every worker, and exits 0 only when every worker exited 0 after a stop signal (or, still starting
and without its handler, was ended by that SIGTERM). A worker that
dies on its own stops the others and the parent exits 1: the orchestrator restarts the whole pod rather
than the parent hiding a crash loop. On Linux each worker also gets SIGTERM if the parent is killed
(PR_SET_PDEATHSIG), so no worker outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from .observability.logging import get_logger
from .observability.metrics import MULTIPROC_ENV

log = get_logger("supervisor")

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the worker between fork and exec: SIGTERM it when the parent dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


Spawn = Callable[[list[str], dict[str, str]], "subprocess.Popen[bytes]"]


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - this interpreter and package, an argv list, no shell
        argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )


def run_workers(serve_args: Sequence[str], workers: int, spawn: Spawn = _spawn) -> int:
    """Start `workers` copies of `python -m gateway serve <serve_args>`, supervise them; the exit code."""
    base = os.environ.get(MULTIPROC_ENV) or None  # a writable volume the operator chose, else the temp dir
    metrics_dir = tempfile.mkdtemp(prefix="dcrgw-metrics-", dir=base)  # fresh: no stale counters
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}
    live: set[int] = set()
    # Kept until reaped: a collected Popen that is still running is polled (and may be reaped) by the next
    # Popen() call, which would hide its exit from os.wait() below.
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False
    failed = False

    def signal_all(sig: signal.Signals) -> None:
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP:
            signal_all(signal.SIGHUP)
            return
        if not stopping:
            log.info("workers_stopping", signal=signal.Signals(signum).name)
        stopping = True
        signal_all(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        for index in range(workers):
            if stopping:
                break
            argv = [sys.executable, "-m", "gateway", "serve", *serve_args, "--worker-index", str(index)]
            proc = spawn(argv, env)
            procs[proc.pid] = proc
            live.add(proc.pid)
            if stopping:  # the stop signal came while Popen ran: signal_all did not know this worker yet
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        log.info("workers_started", workers=len(live), pids=sorted(live))
        while live:
            pid, status = os.wait()  # PEP 475: resumed after each signal handler
            if pid not in live:
                continue
            live.discard(pid)
            mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]  # drop its live gauges
            code = os.waitstatus_to_exitcode(status)
            procs.pop(pid).returncode = code
            # A worker still starting has no handler yet, so our SIGTERM ends it outright: a clean stop too.
            if (code != 0 and not (stopping and code == -signal.SIGTERM)) or not stopping:
                failed = True
                log.error("worker_exited", pid=pid, exit_code=code, expected=stopping)
                if not stopping:
                    stopping = True
                    signal_all(signal.SIGTERM)
    finally:
        signal_all(signal.SIGTERM)  # only on an unexpected error above: `live` is empty otherwise
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("workers_stopped", ok=not failed)
    return 1 if failed else 0
