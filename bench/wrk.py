"""The wrk load generator (Debian `wrk`): one thread, N connections, fixed duration, parsed output.

With distinct bodies (`BodyStream`), a Lua script reads them from the run's body file; each wrk thread runs its
own Lua state, so thread `i` of `n` takes bodies `start + i`, `start + i + n`, … and never one another thread
takes. At the end the script prints how many each thread took, and the stream moves past all of them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .bodies import OUT_OF_BODIES_PATH, BodyStream
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
_BODIES_USED = re.compile(r"^bench bodies per thread: (\d+)$", re.M)

BODIES_SCRIPT = """\
-- Distinct bodies: args are <body file> <first index> <threads> <wrap|once> <out-of-bodies path>.
local threads, next_id = {}, 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local first, n = tonumber(args[2]), tonumber(args[3])
  wrap, out_path, used, bodies = args[4] == "wrap", args[5], 0, {}
  local i = 0
  for line in io.lines(args[1]) do
    -- this thread's share: every n-th body from `first` on (wrapping: every n-th body of the file)
    local from = wrap and 0 or first
    if i >= from and (i - from) % n == id then
      bodies[#bodies + 1] = line
    end
    i = i + 1
  end
end

-- wrk calls request() once more, in thread 0 before the run, to check the script: that body is never sent,
-- but counted as used, so it is never sent later either.
function request()
  used = used + 1
  if used > #bodies then
    if not wrap or #bodies == 0 then
      return wrk.format(nil, out_path, nil, "")
    end
    return wrk.format(nil, nil, nil, bodies[(used - 1) % #bodies + 1])
  end
  return wrk.format(nil, nil, nil, bodies[used])
end

function done(summary, latency, requests)
  local most = 0
  for _, thread in ipairs(threads) do
    most = math.max(most, thread:get("used"))
  end
  io.write(string.format("bench bodies per thread: %d\\n", most))
end
"""


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


def bodies_used(output: str, threads: int) -> int:
    """How far a run with `BODIES_SCRIPT` got into its stream: threads times the most bodies one thread took."""
    match = _BODIES_USED.search(output)
    if match is None:
        raise ValueError(f"wrk did not report the bodies it used:\n{output}")
    return threads * int(match.group(1))


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
    """Runs `wrk -t<threads> -c<N> -d<secs> --latency` as a child of the run's process group."""

    def __init__(self, binary: str, procs: ProcessGroup, workdir: Path, threads: int = 1) -> None:
        self.binary = binary
        self.procs = procs
        self.workdir = workdir
        self.threads = threads
        self.label = f"{version(binary)} (-t{threads})"
        self._runs = 0

    def _script(self, name: str, lua: str) -> list[str]:
        path = self.workdir / name
        path.write_text(lua)
        return ["-s", str(path)]

    def measure(self, url: str, request: RequestSpec, duration: float, connections: int,
                bodies: BodyStream | None = None, max_requests: int | None = None) -> LoadResult:
        """Load the target at base `url` for `duration` (whole seconds, >= 1); parse wrk's output. With
        `bodies`, each request takes the next body of the stream, which then moves past every body taken.
        `max_requests` is not honoured: wrk cannot stop after a number of requests (its `thread:stop()` ends the
        thread, but wrk still waits out the whole duration)."""
        seconds = max(1, round(duration))
        argv = [self.binary, f"-t{self.threads}", f"-c{max(connections, self.threads)}", f"-d{seconds}s",
                f"--timeout={REQUEST_TIMEOUT_S}s", "--latency"]
        for name, value in request.headers:
            argv += ["-H", f"{name}: {value}"]
        lua = script(request)
        if bodies is not None:
            argv += self._script("wrk-bodies.lua", f"wrk.method = {lua_string(request.method.encode())}\n"
                                 + BODIES_SCRIPT)
        elif lua is not None:
            argv += self._script("wrk-request.lua", lua)
        argv.append(require_loopback(url) + request.path)
        if bodies is not None:
            argv += ["--", str(bodies.file.path), str(bodies.next), str(self.threads),
                     "wrap" if bodies.wrap else "once", OUT_OF_BODIES_PATH]
        self._runs += 1
        output = self.procs.run(f"wrk-{self._runs}", argv, timeout=seconds + REQUEST_TIMEOUT_S + 10)
        if bodies is not None:
            bodies.advance(bodies_used(output, self.threads))
        return parse(output)
