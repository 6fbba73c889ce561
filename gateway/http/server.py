"""Builds the public and admin aiohttp apps and runs them: lifecycle, signals, graceful drain."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from ..checks.base import Denial, RequestView, denial_for
from ..checks.rate_limit import rate_limit_headers
from ..checks.registration import registration_claims_of
from ..checks.services import Services
from ..checks.token import token_of
from ..config import Settings
from ..errors import GatewayError, error_response, http_exception_response, refused, server_error_response
from ..jsonutil import dumps
from ..observability.audit import AuditLog
from ..observability.logging import get_logger
from ..observability.metrics import CONTENT_TYPE, Metrics
from ..policy.engine import CompiledPolicy, Decision
from ..policy.loader import load_policies
from ..policy.reload import PolicyHolder, PolicyReloader
from ..reasons import BodyRefusals, HttpRefusals
from ..runtime import build_runtime
from .addresses import ProxyTrust
from .context import CTX, RequestContext
from .inbound import BodyLimits, InboundRules, content_codings, encoding_refusal
from .listener import LIMITS, ClientSlots, ListenerLimits, ListenerRunner
from .proxy import INTERACTION_ID, Forwarder, body_chunks, read_body
from .upstream import safe_field

log = get_logger("server")


@dataclass(slots=True)
class Health:
    """Readiness: the gateway serves only when nothing is holding it back."""

    blockers: dict[str, str] = field(default_factory=lambda: {"starting": "gateway is starting"})

    def block(self, key: str, reason: str) -> None:
        """Mark the gateway not ready for `reason` until `unblock(key)`."""
        self.blockers[key] = reason

    def unblock(self, key: str) -> None:
        """Lift one reason for not being ready."""
        self.blockers.pop(key, None)

    @property
    def ready(self) -> bool:
        """True when no blocker is set."""
        return not self.blockers


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
FORWARDER = web.AppKey("forwarder", Forwarder)
HEALTH = web.AppKey("health", Health)
POLICIES = web.AppKey("policies", PolicyHolder)
AUDIT = web.AppKey("audit", AuditLog)
PROXIES = web.AppKey("proxies", ProxyTrust)
INBOUND = web.AppKey("inbound", InboundRules)
BODY_LIMITS = web.AppKey("body_limits", BodyLimits)
CLIENT_REQUESTS = web.AppKey("client_requests", ClientSlots)
"""Requests in flight per client address behind a trusted proxy (its connections are shared by clients)."""
NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
"""Methods whose requests carry no body unless their policy's `allow_body_on` names them."""


def _interaction_id(request: web.Request) -> str:
    """Keep the TPP's x-fapi-interaction-id when it is a UUID (FAPI 1.0 Part 1 §6.2.1), else make one."""
    raw = request.headers.get(INTERACTION_ID)
    if raw and len(raw) == 36:
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    return new_uuid4()


def new_uuid4() -> str:
    """A random (version 4) UUID string, as `str(uuid.uuid4())` makes it at a third of the cost."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Interaction/request ids bound to logs, timing, metrics, canonical log line, errors → JSON."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    interaction_id = _interaction_id(request)
    request_id = os.urandom(16).hex()
    ctx = RequestContext(interaction_id=interaction_id, request_id=request_id)
    request[CTX] = ctx
    structlog.contextvars.bind_contextvars(interaction_id=interaction_id, request_id=request_id)
    metrics.in_flight.inc()
    status = 500
    try:
        try:
            response = await handler(request)
        except GatewayError as err:
            if ctx.decision == "allow":
                ctx.decision = "error"
            response = error_response(err)
        except web.HTTPException as exc:
            response = http_exception_response(exc)
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception:
            log.exception("unhandled_error", method=request.method)
            response = server_error_response()
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = ctx.route
        metrics.in_flight.dec()
        metrics.request_done(route, request.method, status, ctx.decision, elapsed, ctx.upstream_status)
        audit = request.app.get(AUDIT)
        if audit is not None and ctx.policy_version:
            audit.emit(_audit_fields(request, ctx, status, elapsed))
        log.info(
            "request",
            method=request.method,
            route=route,
            status=status,
            upstream_status=ctx.upstream_status,
            duration_ms=round(elapsed * 1000, 3),
        )
        structlog.contextvars.clear_contextvars()


def _audit_fields(request: web.Request, ctx: RequestContext, status: int, elapsed: float) -> dict[str, Any]:
    """The decision event: ids, route, policy, outcome, verified identities — never a token or a body."""
    first = ctx.denials[0] if ctx.denials else None
    token = token_of(ctx.facts)
    facts = ctx.facts
    return {
        "interaction_id": ctx.interaction_id,
        "request_id": ctx.request_id,
        "method": request.method,
        "route": ctx.route,
        "policy": ctx.policy or None,
        "policy_version": ctx.policy_version,
        "mode": ctx.policy_mode or None,
        "decision": ctx.decision,
        "check": first.check if first else None,
        "reason": first.reason if first else None,
        "denials": [f"{d.check}:{d.reason}" for d in ctx.denials],
        "status": status,
        "client_id": token.client_id if token else None,
        "software_id": facts.get("software_id"),
        "org_id": facts.get("org_id"),
        "token_jti": token.jti if token else None,
        "token_kid": token.kid if token else None,
        "cert_s256": facts.get("client_cert_s256"),
        "registration_jti": _registration_jti(facts),
        "peer": request.remote,
        "upstream_status": ctx.upstream_status,
        "upstream_ms": round(ctx.upstream_seconds * 1000, 3) if ctx.upstream_seconds is not None else None,
        "duration_ms": round(elapsed * 1000, 3),
    }


def _registration_jti(facts: dict[str, Any]) -> str | None:
    claims = registration_claims_of(facts)
    return str(claims["jti"]) if claims is not None and "jti" in claims else None


async def _echo_interaction_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors included, carries the interaction id."""
    ctx = request.get(CTX)
    if ctx is not None:
        response.headers[INTERACTION_ID] = ctx.interaction_id


def denial_response(denial: Denial) -> web.Response:
    """The client's answer to a denial: spec-shaped JSON, never cached, with WWW-Authenticate etc."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **dict(denial.headers)}
    return web.Response(
        status=denial.status,
        body=dumps({"error": denial.error, "error_description": denial.description}),
        content_type="application/json",
        headers=headers,
    )


def _record(metrics: Metrics, ctx: RequestContext, decision: Decision) -> None:
    ctx.decision = decision.outcome
    ctx.policy_mode = decision.mode
    ctx.denials = decision.denials
    if not decision.denials:
        metrics.decided(decision.policy or "", decision.mode, "allow")
    for d in decision.denials:
        metrics.decided(decision.policy or "", decision.mode, decision.outcome, d.check, d.reason)


async def gateway_handler(request: web.Request) -> web.StreamResponse:
    """Route to a policy, evaluate it, then deny or forward (response hooks run before the relay)."""
    ctx = request[CTX]
    app = request.app
    policies = app[POLICIES].current
    ctx.policy_version = policies.version
    # SECURITY: the framing rule (inbound.py, docs/security.md) before any policy: nothing ambiguous is guessed.
    refusal = app[INBOUND].screen(request.headers)
    if refusal is not None:
        return _refuse(app[METRICS], ctx, refusal)
    match = policies.match(request.method, request.rel_url.raw_path)
    if match is None or match.value is None:
        ctx.route = match.template if match is not None and match.template else "unmatched"
        return _refuse(app[METRICS], ctx, policies.unmatched(request.method, match))
    policy = match.value
    ctx.route = policy.template
    ctx.policy = policy.name
    if request.body_exists and request.method in NO_BODY_METHODS and request.method not in policy.allow_body_on:
        return _refuse(app[METRICS], ctx, denial_for(HttpRefusals.body_not_allowed,
                                                  f"a {request.method} request has no body", HttpRefusals.check))
    codings = content_codings(request.headers)
    if codings and (refusal := encoding_refusal(codings, policy.content_codings)) is not None:
        return _refuse(app[METRICS], ctx, refusal)
    peer = request.remote
    proxies = app[PROXIES]
    if proxies and proxies.trusts(peer):
        client = proxies.client_address(peer, request.headers.getall("X-Forwarded-For", ()))
        slots = app[CLIENT_REQUESTS]
        if client is None or not slots.acquire(client):
            return _refuse(app[METRICS], ctx, denial_for(HttpRefusals.client_concurrency, "too many requests in flight",
                                                      HttpRefusals.check))
        try:
            return await _decide_and_forward(request, ctx, policy, match.params, peer, client)
        finally:
            slots.release(client)
    return await _decide_and_forward(request, ctx, policy, match.params, peer, peer)


def _refuse(metrics: Metrics, ctx: RequestContext, denial: Denial) -> web.Response:
    """A request refused before (or instead of) its policy: recorded and audited like any denial."""
    _record(metrics, ctx, Decision("deny", ctx.policy, "enforce", (denial,)))
    return denial_response(denial)


async def _decide_and_forward(
    request: web.Request,
    ctx: RequestContext,
    policy: CompiledPolicy,
    params: Mapping[str, str],
    peer: str | None,
    client: str | None,
) -> web.StreamResponse:
    app = request.app
    view = RequestView(
        method=request.method,
        path=request.rel_url.raw_path,
        headers=request.headers,
        params=params,
        peer=peer,
        client_address=client,
        facts=ctx.facts,
        dry_run=policy.mode == "audit",
    )
    limits = app[BODY_LIMITS]

    async def load_body() -> bytes:
        if "Content-Encoding" in request.headers and content_codings(request.headers):
            # An accepted coded body: the gateway does not decode it, so no check can read its plaintext.
            raise refused(BodyRefusals.plaintext_needed, "this route's checks read the body: send it unencoded")
        return await read_body(request, limits)

    decision = await policy.evaluate(view, load_body)
    _record(app[METRICS], ctx, decision)
    if not decision.forward:
        assert decision.denial is not None
        return denial_response(decision.denial)
    if decision.denials:
        log.warning("audit_would_deny", policy=policy.name, check=decision.denials[0].check,
                    reason=decision.denials[0].reason)

    async def before_relay(status: int) -> None:
        await policy.after_response(view, status)

    # SECURITY: facts only on allow. A request some check refused in audit mode still goes upstream, but
    # nothing it claimed goes as verified: a later failure can void what an earlier check established.
    extra = _fact_headers(ctx.facts, app[SETTINGS].policies.fact_headers) if not decision.denials else None
    body: bytes | AsyncIterator[bytes]
    if view.body is not None:
        body = view.body
    elif policy.stream_body is not None:  # an explicit per-route choice; no check of the policy reads the body
        body = body_chunks(request, policy.stream_body)
    else:
        body = await read_body(request, limits)
    return await app[FORWARDER].forward(request, ctx, body=body, extra_headers=extra,
                                        before_relay=before_relay, response_headers=rate_limit_headers(ctx.facts))


def _fact_headers(facts: dict[str, Any], names: Mapping[str, str]) -> dict[str, str]:
    """Verified facts as the headers configured for them (lists comma-joined); absent facts send nothing.

    A value with a line break (a signed claim can carry one) is not sent: it cannot be a header value, and
    the backend sees the fact as absent rather than a header split in two.
    """
    token = token_of(facts)
    out = {}
    for fact, header in names.items():
        value = facts.get(fact)
        if value is None and fact == "client_id" and token is not None:
            value = token.client_id
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if isinstance(value, str) and value and safe_field(value):
            out[header] = value
    return out


def build_public_app(
    settings: Settings, metrics: Metrics, health: Health, policies: PolicyHolder, audit: AuditLog | None = None
) -> web.Application:
    """The TPP-facing app: middleware, catch-all handler, pooled forwarder."""
    server = settings.server
    timeouts = server.timeouts
    app = web.Application(middlewares=[request_context], client_max_size=server.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HEALTH] = health
    app[POLICIES] = policies
    proxies = app[PROXIES] = ProxyTrust(server.trusted_proxies)
    app[LIMITS] = ListenerLimits(server, proxies)  # served by listener.ListenerRunner: no decompression
    app[CLIENT_REQUESTS] = ClientSlots(server.max_connections_per_client)
    app[BODY_LIMITS] = BodyLimits(server.max_body_bytes, timeouts.body_idle_seconds, timeouts.body_total_seconds)
    if audit is not None:
        app[AUDIT] = audit
    # SECURITY: the backend gets verified facts only: the fact headers are the gateway's, and the raw client
    # certificate header (the ingress's) stays at the gateway, whose check vetted its sender and its binding.
    cert_header = settings.trust.client_certificate.header
    rules = app[INBOUND] = InboundRules(
        [*settings.policies.fact_headers.values(), cert_header, *server.drop_request_headers], [cert_header])
    forwarder = Forwarder(settings.upstream, metrics, rules, proxies, timeouts.send_seconds)
    app[FORWARDER] = forwarder

    async def forwarder_ctx(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()

    app.cleanup_ctx.append(forwarder_ctx)
    app.on_response_prepare.append(_echo_interaction_id)
    # Expect: 100-continue is answered when the body is first read (proxy.read_body), so a request refused for
    # its token is never invited to send its body; any other expectation is refused by inbound.screen (417).
    app.router.add_route("*", "/{tail:.*}", gateway_handler, expect_handler=_no_early_continue)
    return app


async def _no_early_continue(_: web.Request) -> None:
    """aiohttp's expect handler, replaced: nothing is sent before the checks have run."""


async def healthz(_: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when serving, 503 with the reasons otherwise."""
    health = request.app[HEALTH]
    if health.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not_ready", "reasons": sorted(health.blockers.values())}, status=503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 404 / 405 as the JSON errors every listener answers."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_response(exc)


def build_admin_app(settings: Settings, metrics: Metrics, health: Health) -> web.Application:
    """Probes and metrics, on their own listener (with the connection limits of every listener)."""
    app = web.Application(middlewares=[_json_errors])
    app[LIMITS] = ListenerLimits(settings.server, ProxyTrust(settings.server.trusted_proxies))
    app[METRICS] = metrics
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


@dataclass(slots=True)
class Listener:
    """An app to serve on an address; `shutdown_timeout` is how long in-flight requests may drain."""

    name: str
    app: web.Application
    host: str
    port: int


async def _start(listener: Listener, shutdown_timeout: float, reuse_port: bool = False) -> tuple[web.AppRunner, int]:
    runner = ListenerRunner(listener.app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, listener.host, listener.port, backlog=1024, reuse_port=reuse_port or None)
    await site.start()
    port = listener.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port


async def _warm_keys(services: Services, holder: PolicyHolder, health: Health) -> None:
    """Prefetch every JWKS the policies need; readiness waits until all are warm (retrying with backoff)."""
    delay = 0.5
    while True:
        uris = holder.current.jwks_uris()
        failed = await services.prefetch(uris)
        if not failed:
            health.unblock("jwks")
            log.info("jwks_warm", uris=len(uris))
            return
        health.block("jwks", f"JWKS not yet fetched: {', '.join(failed)}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def serve(settings: Settings, extra: list[Listener] | None = None, *, worker_index: int | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT, then drain gracefully; return the exit code.

    As worker `worker_index` of `serve --workers N`, the listeners share their ports (SO_REUSEPORT) and a
    file audit trail goes to one file per worker (`audit.log` → `audit.w0.log`): one writer per file.
    """
    metrics = Metrics()
    health = Health()
    audit = None
    if settings.audit.sink != "off":
        path = settings.resolve_path(settings.audit.path)
        if worker_index is not None:
            path = path.with_name(f"{path.stem}.w{worker_index}{path.suffix}")
        audit = AuditLog(settings.audit.sink, str(path), on_write=metrics.audit_written)
    runtime = build_runtime(settings, metrics)
    services = runtime.services
    policy_dir = settings.resolve_path(settings.policies.dir)
    holder = PolicyHolder(load_policies(policy_dir, services, unmatched_status=settings.policies.unmatched_status))
    metrics.set_policy_version(holder.current.version, len(holder.current.policies))
    reloader = PolicyReloader(policy_dir, services, holder, metrics,
                              unmatched_status=settings.policies.unmatched_status,
                              interval=settings.policies.reload_interval_seconds)
    listeners = [
        *(extra or []),
        Listener("public", build_public_app(settings, metrics, health, holder, audit),
                 settings.server.public.host, settings.server.public.port),
    ]
    admin = Listener("admin", build_admin_app(settings, metrics, health), settings.server.admin.host,
                     settings.server.admin.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    background: list[asyncio.Task[None]] = []
    loop.add_signal_handler(signal.SIGHUP, lambda: background.append(loop.create_task(_forced(reloader))))

    drain = settings.shutdown.drain_timeout_seconds
    reuse_port = worker_index is not None
    runners: list[tuple[str, web.AppRunner]] = []
    await runtime.start()
    try:
        admin_runner, admin_port = await _start(admin, drain, reuse_port)
        runners.append(("admin", admin_runner))
        ports = {"admin": admin_port}
        for listener in listeners:
            runner, port = await _start(listener, drain, reuse_port)
            runners.append((listener.name, runner))
            ports[listener.name] = port
        health.block("jwks", "JWKS not yet fetched")
        health.unblock("starting")
        background.append(loop.create_task(_warm_keys(services, holder, health)))
        background.append(loop.create_task(reloader.run()))
        log.info("listening", policy_version=holder.current.version, worker=worker_index,
                 **{f"{name}_port": port for name, port in ports.items()})
        await stop.wait()
        log.info("shutdown_started", readiness_delay_s=settings.shutdown.readiness_delay_seconds,
                 drain_timeout_s=drain)
        health.block("draining", "shutting down")
        await asyncio.sleep(settings.shutdown.readiness_delay_seconds)
    finally:
        for task in background:
            task.cancel()
        # Public listeners first (stop accepting, drain in-flight), the admin listener last.
        for name, runner in reversed(runners):
            await runner.cleanup()
            log.info("listener_stopped", listener=name)
        await runtime.close()
        if audit is not None:
            audit.close()
    log.info("shutdown_complete")
    return 0


async def _forced(reloader: PolicyReloader) -> None:
    log.info("policy_reload_requested", signal="SIGHUP")
    await reloader.reload(force=True)
