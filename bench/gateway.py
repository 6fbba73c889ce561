"""The gateway as a bench target: `python -m gateway serve` with a config file written for the run."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import LOOPBACK, free_ports, wait_until
from .procs import ProcessGroup
from .registration import CERT_HEADER, DIRECTORY_ISSUER, DIRECTORY_JWKS_PATH
from .tokens import ISSUER

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class GatewayVariant:
    """How a scenario configures its gateway: config overrides, and files written beside the config."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Deep-merged into the base config (e.g. a `policies` section, pool sizes)."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Relative path → content, written in the config's directory (e.g. policy files)."""
    redis: bool = False
    """Keep security state in the run's redis-server (`state.backend: redis`); skipped when not installed."""
    workers: int = 1
    """`server.workers`: more than one needs `redis` (the gateway refuses per-process state with workers)."""
    refuses_replays: bool = False
    """Its policies refuse a registration JWS seen before (`replay`), so a run with distinct bodies must never
    send it one twice; targets without it (anchors, the allow-all gateway) cycle through the bodies."""


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def base_config(upstream_url: str, public_port: int, admin_port: int) -> dict[str, Any]:
    """The bench's gateway config: loopback ports, warning-level JSON logs, no sandbox, no shutdown delay, and
    the bench's trust anchors (bench/tokens.py, bench/registration.py), all served by the upstream: the token
    issuer, the software directory, TPP key sets on the upstream's loopback address, and the bench itself
    (a 127.0.0.1 peer) as the TLS-terminating proxy forwarding the TPP's certificate. Only the bench's config
    allows loopback key sets; the product defaults stay as they are."""
    return {
        "server": {
            "public": {"host": LOOPBACK, "port": public_port},
            "admin": {"host": LOOPBACK, "port": admin_port},
            "public_url": f"http://{LOOPBACK}:{public_port}",
        },
        "upstream": {"url": upstream_url},
        "shutdown": {"readiness_delay_seconds": 0, "drain_timeout_seconds": 1},
        "logging": {"format": "json", "level": "warning"},
        "sandbox": {"enabled": False},
        "policies": {"dir": "policies", "reload_interval_seconds": 0},
        "trust": {
            "token_issuers": {
                "bank": {"issuer": ISSUER, "jwks_uri": f"{upstream_url}/jwks", "audiences": ["dcr"],
                         "token_types": ["at+jwt"]},
            },
            "directories": {
                "bench": {"issuer": DIRECTORY_ISSUER, "jwks_uri": f"{upstream_url}{DIRECTORY_JWKS_PATH}",
                          "algorithms": ["PS256"]},
            },
            "software_jwks": {"allowed_hosts": [LOOPBACK], "allow_http": True, "allow_loopback": True},
            "registration_audiences": [ISSUER],
            "client_certificate": {"header": CERT_HEADER, "format": "nginx", "trusted_proxies": [f"{LOOPBACK}/32"]},
        },
    }


def config_path(workdir: Path, name: str) -> Path:
    """Where `start_gateway` writes the config of the gateway target `name`."""
    return workdir / name / "config.yaml"


def gateway_env() -> dict[str, str]:
    """The gateway's environment: this one without DCRGW_* (inherited overrides would silently change what is
    measured: the config file is the whole truth)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}


def write_config(directory: Path, config: Mapping[str, Any], variant: GatewayVariant) -> Path:
    """Write the variant's files and the config (JSON, which is YAML) into `directory`; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, content in variant.files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    path = directory / "config.yaml"
    path.write_text(json.dumps(_merge(dict(config), variant.overrides), indent=2) + "\n")
    return path


def start_gateway(
    procs: ProcessGroup, name: str, workdir: Path, upstream_url: str, variant: GatewayVariant,
    redis_url: str | None = None,
) -> tuple[str, int]:
    """Start a gateway in front of `upstream_url`, wait for its admin /readyz; return (public URL, pid)."""
    public_port, admin_port = free_ports(2)
    base = base_config(upstream_url, public_port, admin_port)
    if redis_url is not None:
        base["state"] = {"backend": "redis", "redis": {"url": redis_url, "key_prefix": f"bench:{name}:"}}
    if variant.workers > 1:
        base["server"]["workers"] = variant.workers
    config = write_config(config_path(workdir, name).parent, base, variant)
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    proc = procs.spawn(name, argv, cwd=REPO, env=gateway_env())
    try:
        wait_until(f"http://{LOOPBACK}:{admin_port}/readyz", alive=lambda: proc.poll() is None)
    except RuntimeError as exc:
        raise RuntimeError(f"{name}: {exc}\n{procs.tail(name)}") from None
    return f"http://{LOOPBACK}:{public_port}", proc.pid
