"""Scenarios: a set of targets, the request sent to each, and the gateway config variants.

A new scenario is one function returning a `Scenario`, added to `SCENARIOS`: e.g. a full token policy vs an
empty allow-all policy (two gateway targets with different `GatewayVariant`s), 1 vs 100 policies, or a POST
whose every request carries a different signed body (`RequestSpec(method="POST", bodies=…)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .bodies import BodySource
from .gateway import REPO, GatewayVariant
from .registration import RegistrationBodies, client_certificate_header
from .targets import GATEWAY, TargetSpec
from .tokens import CLIENT_ID, access_token
from .upstream import REGISTER


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The one request a scenario sends, over and over, to every target."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    """The same body with every request."""
    bodies: BodySource | None = None
    """Instead of `body`: a different body with every request, generated for the run (bench/bodies.py)."""
    expect_status: int = 200
    """Any other status counts as an error (wrk can only tell non-2xx/3xx)."""

    def describe(self) -> str:
        """`METHOD path (header names)` for the report."""
        names = ", ".join(name for name, _ in self.headers)
        body = f", {len(self.body)} B body" if self.body else ""
        if self.bodies is not None:
            body = f", a distinct {self.bodies.name} body per request"
        return f"{self.method} {self.path}" + (f" ({names}{body})" if names or body else "")


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one bench run measures."""

    name: str
    description: str
    request: RequestSpec
    targets: tuple[TargetSpec, ...]
    mode: str = "throughput"
    """How it is measured unless `--mode` says otherwise (bench/runner.py: throughput, latency, soak)."""


def _anchors_and(*gateways: TargetSpec) -> tuple[TargetSpec, ...]:
    """The standard line-up: direct upstream, the floor, bare proxy, the given gateway targets, nginx."""
    direct, floor, bare, nginx = (TargetSpec(kind, kind) for kind in ("direct", "floor", "bare", "nginx"))
    return (direct, floor, bare, *gateways, nginx)


_OPEN_POLICY = """policies:
  - name: open_read
    match: {methods: [GET], path: "/open-banking/v3.1/register/{ClientId}"}
  - name: open_create
    match: {methods: [POST], path: /open-banking/v3.1/register}
"""


def _shipped_policies() -> dict[str, str]:
    return {f"policies/{p.name}": p.read_text() for p in sorted((REPO / "policies").glob("*.yaml"))
            if not p.name.endswith("_test.yaml")}


def _filler_policies(count: int) -> str:
    """`count` extra policies on other routes: routing must not slow down as they grow."""
    lines = ["policies:"]
    for i in range(count):
        lines += [f"  - name: filler_{i}", f"    match: {{methods: [GET, POST], path: '/filler/v{i}/{{Id}}/items'}}",
                  "    checks:", "      - bearer_token: {issuers: [bank]}"]
    return "\n".join(lines) + "\n"


OPEN = TargetSpec("gw_open", GATEWAY, GatewayVariant(files={"policies/open.yaml": _OPEN_POLICY}))
"""The gateway with an allow-all policy: forwarding cost only."""
TOKEN = TargetSpec("gw_token", GATEWAY, GatewayVariant(files=_shipped_policies()))
"""The gateway with the shipped DCR policies: PS256 token, client_id header, ownership."""
TOKEN_REDIS = TargetSpec("gw_token_redis", GATEWAY, GatewayVariant(files=_shipped_policies(), redis=True))
"""The same with `state.backend: redis`: the revocation lookups (EXISTS + GET) go to a local redis-server."""
OPEN_W2 = TargetSpec("gw_open_w2", GATEWAY,
                     GatewayVariant(files={"policies/open.yaml": _OPEN_POLICY}, redis=True, workers=2))
"""The allow-all gateway as `serve --workers 2` (Redis state, as workers require)."""
TOKEN_W2 = TargetSpec("gw_token_w2", GATEWAY, GatewayVariant(files=_shipped_policies(), redis=True, workers=2))
"""The shipped token policy as `serve --workers 2` on Redis: the issue's target is >= 50 % of nginx here."""


POST = TargetSpec("gw_post", GATEWAY, GatewayVariant(files=_shipped_policies(), refuses_replays=True))
"""The shipped policies on the POST path: token, SSA, request JWS, replay, metadata, client certificate."""
POST_REDIS = TargetSpec("gw_post_redis", GATEWAY,
                        GatewayVariant(files=_shipped_policies(), redis=True, refuses_replays=True))
"""The same with `state.backend: redis`: revocation lookups and the replay SET NX go to a local redis-server."""


def _token_headers() -> tuple[tuple[str, str], ...]:
    return ("Authorization", f"Bearer {access_token()}"), ("client_id", CLIENT_ID)


def _token_request() -> RequestSpec:
    return RequestSpec(method="GET", path=f"{REGISTER}/{CLIENT_ID}", headers=_token_headers())


def _registration_request() -> RequestSpec:
    return RequestSpec(
        method="POST",
        path=REGISTER,
        headers=(*_token_headers(), ("Content-Type", "application/jose"), client_certificate_header()),
        bodies=RegistrationBodies(),
        expect_status=201,
    )


def get_scenario() -> Scenario:
    """GET a registration with a real PS256 token: allow-all policy, token policy, on Redis, with 2 workers."""
    return Scenario(
        name="get",
        description="GET /register/{id}: gateway with an allow-all policy (1 and 2 workers) and with the shipped "
                    "token policy (memory and Redis state, 1 and 2 workers)",
        request=_token_request(),
        targets=_anchors_and(OPEN, OPEN_W2, TOKEN, TOKEN_REDIS, TOKEN_W2),
    )


def policies_scenario() -> Scenario:
    """The shipped token policy alone vs with 100 more policies: matching must stay flat."""
    hundred = TargetSpec("gw_token_100", GATEWAY,
                         GatewayVariant(files={**_shipped_policies(), "policies/filler.yaml": _filler_policies(100)}))
    return Scenario(
        name="policies",
        description="GET /register/{id} through the token policy with 7 vs 107 policies loaded",
        request=_token_request(),
        targets=(TargetSpec("bare", "bare"), TOKEN, hundred),
    )


def post_scenario() -> Scenario:
    """POST /register with a fresh signed registration request each time: allow-all vs the shipped policies."""
    return Scenario(
        name="post",
        description="POST /register with full SSA and request-JWS verification (a distinct jti per request): "
                    "gateway with an allow-all policy and with the shipped policies (memory and Redis state)",
        request=_registration_request(),
        targets=_anchors_and(OPEN, POST, POST_REDIS),
    )


def soak_scenario() -> Scenario:
    """A million GETs through the full token policy: resident memory and open descriptors must stay flat."""
    return Scenario(
        name="soak",
        description="GET /register/{id} through the shipped token policy, 1 000 000 requests per target, memory "
                    "and file descriptors sampled (memory and Redis state)",
        request=_token_request(),
        targets=(TOKEN, TOKEN_REDIS),
        mode="soak",
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "get": get_scenario,
    "policies": policies_scenario,
    "post": post_scenario,
    "soak": soak_scenario,
}
"""Scenario name (`--scenario`) → the function building it."""
