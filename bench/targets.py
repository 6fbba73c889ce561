"""What a scenario measures: the kinds of target, and how each one is started for a run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .gateway import REPO, GatewayVariant, config_path, start_gateway
from .net import LOOPBACK, free_ports
from .nginx import start_nginx
from .procs import ProcessGroup
from .redis import shared_redis

GATEWAY = "gateway"
ANCHORS = ("bare", "floor", "direct", "nginx")
"""Kinds the gateway is compared with, in the order the ratios are printed."""


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target of a scenario: a unique name (the table row), a kind, and for a gateway its variant."""

    name: str
    kind: str
    gateway: GatewayVariant = field(default_factory=GatewayVariant)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A started target: where to send requests, and the process answering them."""

    name: str
    kind: str
    url: str
    pid: int
    config: Path | None = None
    """A gateway's config file, as it reads it."""


class Unavailable(Exception):
    """The target cannot run on this machine (e.g. nginx not installed); the run goes on without it."""


def _python_server(procs: ProcessGroup, name: str, module: str, *args: str) -> tuple[str, int]:
    (port,) = free_ports(1)
    proc = procs.spawn(name, [sys.executable, "-m", module, "--port", str(port), *args], cwd=REPO)
    return f"http://{LOOPBACK}:{port}", proc.pid


def start_upstream(procs: ProcessGroup, workdir: Path, lifetime: float | None = None) -> Endpoint:
    """Start the shared upstream (bench/upstream.py) every target forwards to; it also serves the key sets of
    the bench's token issuer, software directory and TPP. It exits by itself after `lifetime` seconds (default:
    `serving.DEFAULT_LIFETIME`)."""
    from . import registration, tokens

    args = []
    for route, content in (("/jwks", tokens.jwks_json()),
                           (registration.DIRECTORY_JWKS_PATH, registration.directory_jwks_json()),
                           (registration.SOFTWARE_JWKS_PATH, registration.software_jwks_json())):
        path = workdir / f"{route.strip('/').replace('/', '-')}.json"
        path.write_text(content)
        args += ["--serve", f"{route}={path}"]
    if lifetime is not None:
        args += ["--lifetime", str(lifetime)]
    url, pid = _python_server(procs, "upstream", "bench.upstream", *args)
    return Endpoint("upstream", "upstream", url, pid)


Starter = Callable[[TargetSpec, ProcessGroup, Path, Endpoint], tuple[str, int]]


def _nginx(spec: TargetSpec, procs: ProcessGroup, workdir: Path, upstream: Endpoint) -> tuple[str, int]:
    try:
        return start_nginx(procs, spec.name, workdir, upstream.url)
    except FileNotFoundError as exc:
        raise Unavailable(str(exc)) from None


def _gateway(spec: TargetSpec, procs: ProcessGroup, workdir: Path, upstream: Endpoint) -> tuple[str, int]:
    redis_url = None
    if spec.gateway.redis:
        try:
            redis_url = shared_redis(procs, workdir)
        except FileNotFoundError as exc:
            raise Unavailable(str(exc)) from None
    return start_gateway(procs, spec.name, workdir, upstream.url, spec.gateway, redis_url)


STARTERS: dict[str, Starter] = {
    "direct": lambda spec, procs, workdir, upstream: (upstream.url, upstream.pid),
    "bare": lambda spec, procs, workdir, upstream: _python_server(
        procs, spec.name, "bench.bare_proxy", "--upstream", upstream.url
    ),
    "floor": lambda spec, procs, workdir, upstream: _python_server(
        procs, spec.name, "bench.floor_proxy", "--upstream", upstream.url
    ),
    GATEWAY: _gateway,
    "nginx": _nginx,
}
"""Kind → how to start it; a new kind of target is one entry here."""


def start_target(spec: TargetSpec, procs: ProcessGroup, workdir: Path, upstream: Endpoint) -> Endpoint:
    """Start one target in front of `upstream` (readiness is checked by the caller)."""
    url, pid = STARTERS[spec.kind](spec, procs, workdir, upstream)
    return Endpoint(spec.name, spec.kind, url, pid, config_path(workdir, spec.name) if spec.kind == GATEWAY else None)
