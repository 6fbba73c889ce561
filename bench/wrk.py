"""The wrk load generator (Debian `wrk`): one thread, N connections, fixed duration, parsed output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .net import require_loopback
from .procs import ProcessGroup
from .results import LoadResult
from .scenarios import RequestSpec

REQUEST_TIMEOUT_S = 5
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def find_wrk() -> str | None:
    """The wrk binary on PATH, or None."""
    return shutil.which("wrk")


def version(binary: str) -> str:
    """`wrk 4.1.0`-style version string of `binary`."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=5, check=False).stdout
    match = re.search(r"wrk\s+(?:\S+/)?(\d+(?:\.\d+)+)", out)
    return f"wrk {match.group(1)}" if match else "wrk"


def lua_string(data: bytes) -> str:
    """`data` as a Lua string literal (decimal escapes for anything but printable ASCII)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in data) + '"'


def script(request: RequestSpec) -> str | None:
    """A wrk Lua script setting method and body, or None for a plain GET (headers go on the command line)."""
    if request.method == "GET" and not request.body:
        return None
    return f"wrk.method = {lua_string(request.method.encode())}\nwrk.body = {lua_string(request.body)}\n"


def parse(output: str) -> LoadResult:
    """Requests/s, the 50 % and 99 % latency lines and the error counts of `wrk --latency` output."""
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    latency = {q: float(v) * _UNITS[u] for q, v, u in _LATENCY.findall(output)}
    if rps is None or total is None or set(latency) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    sock = _SOCKET_ERRORS.search(output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return LoadResult(
        requests=int(total.group(1)),
        errors=errors,
        seconds=float(total.group(2)) * _UNITS[total.group(3)] / 1000,
        rps=float(rps.group(1)),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
    )


class Wrk:
    """Runs `wrk -t1 -c<N> -d<secs> --latency` as a child of the run's process group."""

    def __init__(self, binary: str, procs: ProcessGroup, workdir: Path) -> None:
        self.binary = binary
        self.procs = procs
        self.workdir = workdir
        self.label = f"{version(binary)} (-t1)"
        self._runs = 0

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int) -> LoadResult:
        """Load the target at base `url` for `duration` (whole seconds, >= 1); parse wrk's output."""
        seconds = max(1, round(duration))
        argv = [self.binary, "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={REQUEST_TIMEOUT_S}s",
                "--latency"]
        for name, value in request.headers:
            argv += ["-H", f"{name}: {value}"]
        lua = script(request)
        if lua is not None:
            path = self.workdir / "wrk-request.lua"
            path.write_text(lua)
            argv += ["-s", str(path)]
        argv.append(require_loopback(url) + request.path)
        self._runs += 1
        return parse(self.procs.run(f"wrk-{self._runs}", argv, timeout=seconds + REQUEST_TIMEOUT_S + 10))
