"""The printed table and the JSON document of a run."""

from __future__ import annotations

from typing import Any

from .results import RSS_GROWTH_LIMIT, SOAK_WARMUP_SHARE, BenchResult, TargetResult

FELL_BEHIND = 0.95
"""Latency mode: a target answering less than this share of the offered rate was saturated (noted)."""


def _or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _header(result: BenchResult) -> list[str]:
    m, s = result.machine, result.settings
    if result.mode == "soak":
        shape = f"{s['requests'] or 'default'} requests per target in chunks of {s['duration']} s"
    elif result.mode == "latency":
        shape = f"{s['rounds']} round(s) x {s['duration']} s per target (median shown), warm-up {s['warmup']} s"
    else:
        bound = f"{s['requests']} requests or {s['duration']} s" if s["requests"] else f"{s['duration']} s"
        shape = f"{s['rounds']} round(s) x {bound} per target (median shown), warm-up {s['warmup']} s"
    return [
        f"scenario {result.scenario} ({result.mode}): {result.request}",
        f"machine: nproc {m['nproc']}, {m['cpu_model']}, Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"uvloop {'yes' if m['uvloop'] else 'no'}",
        f"load: {m['load_generator']}, {s['connections']} connections, {shape}",
        "",
    ]


def _load_table(result: BenchResult) -> list[str]:
    """One row per target: the closed loop's throughput, or the open loop's latency at its fixed rate."""
    w = max([12, *(len(t.name) + 1 for t in result.targets)])
    p999 = any(t.p999_ms is not None for t in result.targets)
    lag = result.mode == "latency"
    lines = [f"{'target':<{w}} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8}" + (f" {'p99.9 ms':>9}" if p999 else "")
             + f" {'spread':>7} {'errors':>7} {'cpu %':>6} {'req/cpu-s':>10}" + (f" {'lag p99':>8}" if lag else "")]
    for t in result.targets:
        lines.append(
            f"{t.name:<{w}} {t.rps:>11.0f} {t.p50_ms:>8.2f} {t.p99_ms:>8.2f}"
            + (f" {_or_dash(t.p999_ms, '.2f'):>9}" if p999 else "")
            + f" {t.spread:>7.1%} {t.errors:>7} {_or_dash(t.cpu_share, '.0%'):>6} {_or_dash(t.per_core, '.0f'):>10}"
            + (f" {_or_dash(t.lag_p99_ms, '.2f'):>8}" if lag else "")
        )
    return lines


def _soak_table(result: BenchResult) -> list[str]:
    """One row per target: requests sent, memory and the target's own descriptors after the warm-up and at the end,
    its connections to its pooled peers at the end, the verdict; then what failed."""
    w = max([12, *(len(t.name) + 1 for t in result.targets)])
    lines = [f"{'target':<{w}} {'requests':>10} {'requests/s':>11} {'errors':>7} {'rss warm MiB':>13} "
             f"{'rss end MiB':>12} {'growth':>7} {'fds warm':>9} {'fds end':>8}  {'pools at end':<22} verdict"]
    notes = []
    for t in result.targets:
        soak = t.soak
        if soak is None:
            continue
        pools = ", ".join(f"{p.name} {soak.end.peers.get(p.name, 0)}" + (f"/{p.bound}" if p.bound is not None else "")
                          for p in soak.peers) or "-"
        lines.append(
            f"{t.name:<{w}} {soak.end.requests:>10} {t.rps:>11.0f} {t.errors:>7} "
            f"{soak.warm.rss_bytes / 2**20:>13.1f} {soak.end.rss_bytes / 2**20:>12.1f} {soak.rss_growth:>+7.1%} "
            f"{soak.warm.own_fds:>9} {soak.end.own_fds:>8}  {pools:<22} {'pass' if t.soak_passed else 'FAIL'}"
        )
        notes += [f"FAIL {t.name}: {fault}" for fault in soak.peer_faults]
        if t.errors:
            notes.append(f"FAIL {t.name}: {t.errors} requests failed (a soak judges the memory of a path that answers)")
    lines.append(f"growth is from the sample after the warm-up (the first {SOAK_WARMUP_SHARE:.0%} of the requests) to "
                 f"the last, each read once the target had closed its clients' connections; pass: resident memory "
                 f"grew by less than {RSS_GROWTH_LIMIT:.0%}, no own descriptor more (fds: all but the connections to "
                 f"the pools), no pool above its bound (n/bound) in any sample, no upstream connection left "
                 f"open once the target was idle, and no request failed")
    return lines + notes


def render(result: BenchResult) -> str:
    """The human-readable report: machine, settings, one row per target, then the ratios or the verdicts."""
    lines = _header(result)
    if result.mode == "soak":
        lines += _soak_table(result)
    else:
        lines += _load_table(result)
    if result.mode == "latency":
        o = result.open_loop
        came_from = (f"{o['share']:.0%} of bare's closed-loop saturation ({o['saturation']:.0f} req/s)"
                     if o.get("saturation") else "given with --rate")
        lines += ["", f"open loop at {o['rate']:.0f} req/s, {came_from}; latency counted from when each request was "
                  "due; lag p99: how late the generator itself sent (in every latency, alike for every target)"]
        behind = [t for t in result.targets if t.rps < FELL_BEHIND * o["rate"]]
        for t in behind:
            lines.append(f"NOTE: {t.name} answered {t.rps:.0f} of the {o['rate']:.0f} req/s offered: it was saturated, "
                         "so its latencies are mostly its queue")
        if result.p99_over_bare_ms:
            rw = max(len(name) for name in result.p99_over_bare_ms) + 12
            lines += ["", "p99 over bare's (ms)"]
            lines += [f"  {name + ' - bare':<{rw}} {value:+.2f}" for name, value in result.p99_over_bare_ms.items()]
    elif result.mode == "throughput" and result.ratios:
        rw = max([22, *(len(name) for name in result.ratios)])
        lines += ["", "ratios (requests/s)"]
        lines += [f"  {name:<{rw}} {value:.2f}" for name, value in result.ratios.items()]
    for name, reason in result.skipped.items():
        lines.append(f"skipped {name}: {reason}")
    if result.mode != "soak":
        lines.append("cpu %: CPU the target's own processes used (100 % = one core); req/cpu-s: responses per "
                     "CPU-second of them, i.e. requests/s per core of the target")
    if any(t.errors for t in result.targets):
        lines.append("WARNING: some requests failed or got an unexpected status; those figures are suspect")
    return "\n".join(lines)


def to_json(result: BenchResult) -> dict[str, Any]:
    """Machine-readable results (everything in the table, plus every round)."""
    return {
        "scenario": result.scenario,
        "mode": result.mode,
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
                "p999_ms": _rounded(t.p999_ms, 3),
                "lag_p99_ms": _rounded(t.lag_p99_ms, 3),
                "rounds": [
                    {"requests": r.requests, "errors": r.errors, "seconds": round(r.seconds, 3),
                     "requests_per_second": round(r.rps, 1), "p50_ms": round(r.p50_ms, 3),
                     "p99_ms": round(r.p99_ms, 3), "p999_ms": _rounded(r.p999_ms, 3),
                     "lag_p99_ms": _rounded(r.lag_p99_ms, 3), "cpu_seconds": _rounded(r.cpu_seconds, 3)}
                    for r in t.runs
                ],
                **({"soak": _soak_json(t)} if t.soak is not None else {}),
            }
            for t in result.targets
        ],
        "ratios": {name: round(value, 4) for name, value in result.ratios.items()},
        "open_loop": result.open_loop,
        "p99_over_bare_ms": {name: round(value, 3) for name, value in result.p99_over_bare_ms.items()},
        "skipped": result.skipped,
    }


def _soak_json(target: TargetResult) -> dict[str, Any]:
    soak = target.soak
    assert soak is not None
    return {
        "passed": target.soak_passed,
        "errors": target.errors,
        "rss_growth": round(soak.rss_growth, 5),
        "fd_growth": soak.fd_growth,
        "fd_growth_of": "own descriptors: all but the connections to the peers",
        "rss_growth_limit": RSS_GROWTH_LIMIT,
        "warmup_requests": soak.warm.requests,
        "peers": [{"name": p.name, "port": p.port, "bound": p.bound, "idle_close_s": p.idle_close_s}
                  for p in soak.peers],
        "peer_faults": soak.peer_faults,
        "samples": [{"requests": x.requests, "seconds": round(x.seconds, 3), "rss_bytes": x.rss_bytes, "fds": x.fds,
                     "own_fds": x.own_fds, "peers": dict(x.peers)}
                    for x in soak.samples],
    }
