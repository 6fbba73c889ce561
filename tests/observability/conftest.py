"""Observability fixtures: promtool, and a scrape of real gateways after mixed traffic."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.app import Health, build_admin_app, build_public_app
from gateway.jose import generate_signing_key
from gateway.observability.audit import AuditLog
from gateway.observability.metrics import Metrics
from gateway.policy.loader import load_policies
from gateway.policy.reload import PolicyHolder, PolicyReloader
from gateway.runtime import build_runtime
from tests.conftest import OPEN_POLICIES, ROOT, SHIPPED_POLICIES, StartServer, free_port, make_settings
from tests.policy.test_enforcement import ISSUER, REGISTER, Bank, auth

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dcr-gateway.json"
ALERTS = MONITORING / "prometheus" / "alerts.yaml"
ALERTS_TEST = MONITORING / "prometheus" / "alerts_test.yaml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# An audit-mode policy beside the shipped ones: a would-be denial that is forwarded.
AUDIT_POLICY = """\
policies:
  - name: dcr_status_preview
    description: Audit mode - what a token requirement on the status page would refuse.
    mode: audit
    match: {methods: [GET], path: /open-banking/v3.1/status}
    checks:
      - bearer_token: {issuers: [bank]}
"""

# Beside gateway B's forwarding policies: a budget of one request, so the second is refused with 429.
LIMITED_POLICY = """\
policies:
  - name: limited
    match: {methods: [GET], path: /limited}
    checks:
      - rate_limit: {limit: 1, window_seconds: 3600, key: route}
"""

# Gateway C's policy: its Redis is down, and the budget is passed over (fail_open) rather than refused.
SHARED_LIMIT_POLICY = """\
policies:
  - name: shared_limit
    match: {methods: [GET], path: /shared}
    checks:
      - rate_limit: {limit: 100, key: route, on_store_error: fail_open}
"""


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary (Debian package `prometheus`); required in CI, skipped locally without it."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not found: CI installs Debian's `prometheus` package (PACKAGES in .ci/run)")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); CI runs this test")
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    """Run promtool; return its exit code and combined output."""
    proc = subprocess.run([promtool, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)


def exported_families(scrape: str) -> dict[str, str]:
    """Metric family name → type, from the `# TYPE` lines of a text exposition."""
    return dict(_TYPE.findall(scrape))


def sampled_names(scrape: str) -> set[str]:
    """Names of the series with at least one sample, _bucket/_sum/_count/_created folded into the family."""
    return {strip_suffix(name) for name, _, _ in _SAMPLE.findall(scrape)}


def strip_suffix(name: str) -> str:
    """A series name without the histogram (and created) suffix: the family name a query refers to."""
    return re.sub(r"_(bucket|sum|count|created)$", "", name)


@dataclass
class Observed:
    """What the mixed traffic left behind: the /metrics text, the metrics object and what was sent."""

    scrape: str
    metrics: Metrics
    routes: set[str]
    sent_secrets: list[str] = field(default_factory=list)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample value (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def _get(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with session.request(method, url, **kwargs) as resp:
        await resp.read()
        return resp.status


@pytest.fixture
async def mixed_traffic(tmp_path: Path, start_server: StartServer) -> AsyncIterator[Callable[[], Awaitable[Observed]]]:
    """Two in-process gateways wired as `serve()` wires them, sharing one Metrics; mixed traffic; a scrape.

    Gateway A fronts a real bank (JWKS + registration backend) with the shipped policies plus an audit-mode
    policy; gateway B fronts a closed port (upstream down) and a JWKS URL nobody serves, with a rate limit of
    one request; gateway C keeps its state in a Redis that is down (a closed port): its circuit breaker opens
    and its `fail_open` rate limit is passed over.
    """
    closers: list[Callable[[], Awaitable[None]]] = []

    async def run() -> Observed:
        metrics = Metrics()
        bank = Bank()
        bank_server = await start_server(bank.app)
        base = str(bank_server.make_url("")).rstrip("/")
        policy_dir = tmp_path / "policies"
        policy_dir.mkdir()
        for source in SHIPPED_POLICIES.glob("*.yaml"):
            if not source.name.endswith("_test.yaml"):
                shutil.copy(source, policy_dir / source.name)
        (policy_dir / "audit.yaml").write_text(AUDIT_POLICY)
        trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "audiences": ["dcr"],
                                            "token_types": ["at+jwt"]}},
                 "jwks": {"min_refetch_interval_seconds": 60}}
        settings = make_settings(base, policies={"dir": str(policy_dir), "reload_interval_seconds": 0}, trust=trust)
        runtime = build_runtime(settings, metrics)
        services = runtime.services
        await runtime.start()
        closers.append(runtime.close)
        holder = PolicyHolder(load_policies(policy_dir, services, unmatched_status=404))
        metrics.set_policy_version(holder.current.version, len(holder.current.policies))
        audit = AuditLog("file", str(tmp_path / "audit.log"), on_write=metrics.audit_written)
        health = Health(blockers={})
        gw_a = await start_server(build_public_app(settings, metrics, health, holder, audit))
        a = str(gw_a.make_url("")).rstrip("/")

        dead = f"http://127.0.0.1:{free_port()}"
        policy_dir_b = tmp_path / "policies_b"
        shutil.copytree(OPEN_POLICIES, policy_dir_b)
        (policy_dir_b / "limited.yaml").write_text(LIMITED_POLICY)
        settings_b = make_settings(dead, policies={"dir": str(policy_dir_b), "reload_interval_seconds": 0},
                                   trust={"token_issuers": {"nobody": {"issuer": "https://nobody.test",
                                                                       "jwks_uri": dead + "/jwks"}}})
        runtime_b = build_runtime(settings_b, metrics)
        services_b = runtime_b.services
        await runtime_b.start()
        closers.append(runtime_b.close)
        holder_b = PolicyHolder(load_policies(policy_dir_b, services_b, unmatched_status=404))
        gw_b = await start_server(build_public_app(settings_b, metrics, health, holder_b))
        b = str(gw_b.make_url("")).rstrip("/")

        policy_dir_c = tmp_path / "policies_c"
        policy_dir_c.mkdir()
        (policy_dir_c / "shared.yaml").write_text(SHARED_LIMIT_POLICY)
        redis_down = {"backend": "redis", "redis": {"url": f"redis://127.0.0.1:{free_port()}/0", "timeout_seconds": 1,
                                                    "breaker": {"failure_threshold": 2, "open_seconds": 600}}}
        settings_c = make_settings(base, policies={"dir": str(policy_dir_c), "reload_interval_seconds": 0},
                                   state=redis_down)
        runtime_c = build_runtime(settings_c, metrics)
        await runtime_c.start()  # its ping fails: the first connection error
        closers.append(runtime_c.close)
        holder_c = PolicyHolder(load_policies(policy_dir_c, runtime_c.services, unmatched_status=404))
        gw_c = await start_server(build_public_app(settings_c, metrics, health, holder_c))
        c = str(gw_c.make_url("")).rstrip("/")
        admin = await start_server(build_admin_app(settings_b, metrics, health))

        token_a, token_b, token_z = bank.token(), bank.token("client-b"), bank.token("client-z")
        stranger = bank.token(key=generate_signing_key("RSA", kid="k9"))
        nowhere = f"/nowhere/{uuid.uuid4()}"
        async with aiohttp.ClientSession() as s:
            assert await _get(s, "GET", f"{a}{REGISTER}/client-a", headers=auth(token_a)) == 200  # allow
            assert await _get(s, "GET", f"{a}{REGISTER}/client-a", headers=auth(token_a)) == 200  # cache hit
            assert await _get(s, "GET", f"{a}{REGISTER}/client-a", headers={"client_id": "client-a"}) == 401
            assert await _get(s, "GET", a + nowhere) == 404  # unmatched
            assert await _get(s, "GET", f"{a}{REGISTER}/client-a", headers=auth(stranger)) == 401  # unknown kid
            assert await _get(s, "GET", f"{a}/open-banking/v3.1/status") == 404  # audit_deny, forwarded
            assert await _get(s, "GET", f"{a}{REGISTER}/client-a", headers=auth(token_b, "client-b")) == 401
            assert await _get(s, "GET", f"{a}{REGISTER}/client-z", headers=auth(token_z, "client-z")) == 401
            assert await _get(s, "DELETE", f"{a}{REGISTER}/client-b", headers=auth(bank.token("client-b"),
                                                                                   "client-b")) == 204
            assert await _get(s, "GET", f"{b}/echo") == 502  # upstream down
            assert await _get(s, "POST", f"{b}/sink", data=b"x") == 502
            assert await services_b.prefetch([dead + "/jwks"]) == [dead + "/jwks"]  # JWKS fetch fails
            assert await _get(s, "GET", f"{b}/limited") == 502  # within the budget: forwarded (upstream down)
            assert await _get(s, "GET", f"{b}/limited") == 429  # over it
            for _ in range(3):  # Redis down: the ping and a connection error open the breaker, then circuit_open
                assert await _get(s, "GET", f"{c}/shared") == 404  # fail_open: forwarded to the bank (no route)

            reloader = PolicyReloader(policy_dir, services, holder, metrics, unmatched_status=404, interval=0)
            (policy_dir / "broken.yaml").write_text("policies:\n  - name: broken\n    unknown_key: 1\n")
            assert not await reloader.reload()
            (policy_dir / "broken.yaml").unlink()
            (policy_dir / "audit.yaml").write_text(AUDIT_POLICY.replace("dcr_status_preview", "dcr_status"))
            assert await reloader.reload()

            # A proxied response reaches the client before the middleware's `finally` counts it; in one
            # process, in-flight back at 0 means every request's accounting has run.
            deadline = time.monotonic() + 30
            while metrics.registry.get_sample_value("dcr_gateway_requests_in_flight") != 0:
                assert time.monotonic() < deadline, "requests still in flight"
                await asyncio.sleep(0.01)
            audit.close()  # flush: written events are counted once the sink has them
            async with s.get(str(admin.make_url("/metrics"))) as resp:
                assert resp.status == 200
                scrape = await resp.text()
        routes = {p.template for h in (holder, holder_b, holder_c) for p in h.current.policies}
        return Observed(scrape, metrics, routes | {"unmatched"},
                        [token_a, token_b, token_z, stranger, nowhere, "client-a", "client-b", "client-z"])

    yield run
    for close in reversed(closers):
        await close()


@pytest.fixture
def bank_gw_metrics(start_server: StartServer, running_gateway: Any) -> Callable[[Path], Awaitable[tuple[Bank, Any]]]:
    """A gateway with its own Metrics in front of a real bank, with the policies of a directory."""

    async def make(policies: Path) -> tuple[Bank, Any]:
        bank = Bank()
        server = await start_server(bank.app)
        base = str(server.make_url("")).rstrip("/")
        trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "audiences": ["dcr"],
                                            "token_types": ["at+jwt"]}}}
        return bank, await running_gateway(base, policy_dir=policies, trust=trust)

    return make
