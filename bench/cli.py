"""`python -m bench` (`make bench BENCH_ARGS=…`): options, signals, the printed table and the JSON file."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from .loadgen import CHOICES
from .report import render, to_json
from .runner import MODES, SOAK_REQUESTS, BenchOptions, run_bench
from .scenarios import SCENARIOS


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `python -m bench` argument parser."""
    d = BenchOptions()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default=d.scenario, help="what to measure")
    p.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    p.add_argument("--duration", type=_bounded(1, 600), default=d.duration,
                   help=f"seconds per measurement, per target and round (default {d.duration})")
    p.add_argument("--rounds", type=_bounded(1, 20), default=d.rounds,
                   help=f"interleaved measurements per target; the median is shown (default {d.rounds})")
    p.add_argument("--warmup", type=_bounded(0, 60), default=d.warmup,
                   help=f"seconds of unrecorded load per target first (default {d.warmup})")
    p.add_argument("--connections", type=_bounded(1, 1000), default=d.connections,
                   help=f"concurrent connections (default {d.connections})")
    p.add_argument("--loadgen", choices=CHOICES, default=d.loadgen,
                   help="auto: wrk when on PATH, else the Python client")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="throughput (closed loop, saturated), latency (open loop at half of bare's saturation: "
                        "p50/p99/p99.9) or soak (memory and descriptors over many requests); default: the "
                        "scenario's (soak for --scenario soak, else throughput)")
    p.add_argument("--rate", type=_bounded(1, 100_000), default=None,
                   help="latency mode at this many requests/s instead of half of bare's saturation (implies "
                        "--mode latency)")
    p.add_argument("--requests", type=_bounded(1, 100_000_000), default=None,
                   help="throughput: end each measurement after N requests (Python client); soak: N requests per "
                        f"target (default {SOAK_REQUESTS})")
    p.add_argument("--open-loop-processes", type=_bounded(1, 16), default=d.open_loop_processes,
                   help=f"latency: processes of the open-loop generator (default {d.open_loop_processes})")
    p.add_argument("--json", metavar="FILE", help="also write machine-readable results to FILE")
    return p


def _terminate(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the ProcessGroup, which stops every child


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench, print the table; 1 on a failed run, 2 when a soak target failed its criterion, 130 on
    Ctrl-C."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    options = BenchOptions(
        scenario=args.scenario,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        duration=args.duration,
        rounds=args.rounds,
        warmup=args.warmup,
        connections=args.connections,
        loadgen=args.loadgen,
        mode=args.mode,
        rate=args.rate,
        requests=args.requests,
        open_loop_processes=args.open_loop_processes,
    )
    try:
        result = run_bench(options)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; all bench processes stopped", file=sys.stderr)
        return 130
    print("\n" + render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(result), indent=2) + "\n")
        print(f"results written to {args.json}")
    return 2 if any(t.soak is not None and not t.soak_passed for t in result.targets) else 0
