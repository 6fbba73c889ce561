"""Scenarios: a set of targets, the request sent to each, and the gateway config variants.

A new scenario is one function returning a `Scenario`, added to `SCENARIOS`. Later ones, for example:
a full token policy vs an empty allow-all policy (two gateway targets with different `GatewayVariant`s),
1 vs 100 policies, POST with a signed JWS body (`RequestSpec(method="POST", body=…)`), multi-worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .targets import GATEWAY, TargetSpec
from .upstream import REGISTER


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The one request a scenario sends, over and over, to every target."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    expect_status: int = 200
    """Any other status counts as an error (wrk can only tell non-2xx/3xx)."""

    def describe(self) -> str:
        """`METHOD path (header names)` for the report."""
        names = ", ".join(name for name, _ in self.headers)
        body = f", {len(self.body)} B body" if self.body else ""
        return f"{self.method} {self.path}" + (f" ({names}{body})" if names or body else "")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one bench run measures."""

    name: str
    description: str
    request: RequestSpec
    targets: tuple[TargetSpec, ...]


def _anchors_and(*gateways: TargetSpec) -> tuple[TargetSpec, ...]:
    """The standard line-up: direct upstream, bare proxy, the given gateway targets, nginx."""
    direct, bare, nginx = (TargetSpec(kind, kind) for kind in ("direct", "bare", "nginx"))
    return (direct, bare, *gateways, nginx)


def get_scenario() -> Scenario:
    """GET a registration with a bearer token and a client_id header; the gateway with its default config."""
    return Scenario(
        name="get",
        description="GET /register/{id} through each target; gateway with its default config (no policy)",
        request=RequestSpec(
            method="GET",
            path=f"{REGISTER}/abc",
            headers=(("Authorization", "Bearer x"), ("client_id", "x")),
        ),
        targets=_anchors_and(TargetSpec(GATEWAY, GATEWAY)),
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "get": get_scenario,
}
"""Scenario name (`--scenario`) → the function building it."""
