"""The printed table and the JSON document of a run."""

from __future__ import annotations

from typing import Any

from .results import BenchResult


def _or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def render(result: BenchResult) -> str:
    """The human-readable report: machine, settings, one row per target, then the ratios."""
    m, s = result.machine, result.settings
    w = max([12, *(len(t.name) + 1 for t in result.targets)])
    rw = max([22, *(len(name) for name in result.ratios)])
    lines = [
        f"scenario {result.scenario}: {result.request}",
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"uvloop {'yes' if m['uvloop'] else 'no'}",
        f"load: {m['load_generator']}, {s['connections']} connections, "
        f"{s['rounds']} round(s) x {s['duration']} s per target (median shown), warm-up {s['warmup']} s",
        "",
        f"{'target':<{w}} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'spread':>7} {'errors':>7} "
        f"{'cpu %':>6} {'req/cpu-s':>10}",
    ]
    for t in result.targets:
        lines.append(
            f"{t.name:<{w}} {t.rps:>11.0f} {t.p50_ms:>8.2f} {t.p99_ms:>8.2f} {t.spread:>7.1%} {t.errors:>7} "
            f"{_or_dash(t.cpu_share, '.0%'):>6} {_or_dash(t.per_core, '.0f'):>10}"
        )
    if result.ratios:
        lines += ["", "ratios (requests/s)"]
        lines += [f"  {name:<{rw}} {value:.2f}" for name, value in result.ratios.items()]
    for name, reason in result.skipped.items():
        lines.append(f"skipped {name}: {reason}")
    lines.append("cpu %: CPU the target's own processes used (100 % = one core); req/cpu-s: responses per CPU-second "
                 "of them, i.e. requests/s per core of the target")
    if any(t.errors for t in result.targets):
        lines.append("WARNING: some requests failed or got an unexpected status; those figures are suspect")
    return "\n".join(lines)


def to_json(result: BenchResult) -> dict[str, Any]:
    """Machine-readable results (everything in the table, plus every round)."""
    return {
        "scenario": result.scenario,
        "request": result.request,
        "settings": result.settings,
        "machine": result.machine,
        "targets": [
            {
                "name": t.name,
                "kind": t.kind,
                "requests_per_second": round(t.rps, 1),
                "p50_ms": round(t.p50_ms, 3),
                "p99_ms": round(t.p99_ms, 3),
                "spread": round(t.spread, 4),
                "errors": t.errors,
                "requests_per_cpu_second": _rounded(t.per_core, 1),
                "rounds": [
                    {"requests": r.requests, "errors": r.errors, "seconds": round(r.seconds, 3),
                     "requests_per_second": round(r.rps, 1), "p50_ms": round(r.p50_ms, 3),
                     "p99_ms": round(r.p99_ms, 3), "cpu_seconds": _rounded(r.cpu_seconds, 3)}
                    for r in t.runs
                ],
            }
            for t in result.targets
        ],
        "ratios": {name: round(value, 4) for name, value in result.ratios.items()},
        "skipped": result.skipped,
    }
