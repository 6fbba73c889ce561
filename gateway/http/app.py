"""The gateway's apps and their lifecycle: the public app (the handler in `handler.py`) and the admin app
(probes, metrics), served until SIGTERM/SIGINT, drained gracefully; SIGHUP reloads the policies."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..addresses import ProxyTrust
from ..config import FACTS_JWKS_PATH, ConfigError, Settings
from ..errors import http_exception_response
from ..jsonutil import dumps
from ..observability.audit import AuditLog
from ..observability.logging import get_logger
from ..observability.metrics import CONTENT_TYPE, Metrics
from ..policy import (
    BodyLimits,
    FactAssertion,
    FactAssertionError,
    FactHeaders,
    PolicyHolder,
    PolicyReloader,
    Services,
    load_policies,
)
from ..runtime import build_runtime, settle_heap
from .handler import PublicHandler
from .inbound import InboundRules
from .listener import ENTRY, LIMITS, ClientSlots, ListenerLimits, ListenerRunner
from .proxy import Forwarder
from .server import Handler

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
HEALTH = web.AppKey("health", Health)
METRICS = web.AppKey("metrics", Metrics)


def build_public_app(
    settings: Settings,
    metrics: Metrics,
    health: Health,
    policies: PolicyHolder,
    audit: AuditLog | None = None,
    assertion: FactAssertion | None = None,
) -> web.Application:
    """The TPP-facing app: one handler for every request (`PublicHandler`, served through aiohttp's low-level server
    by `ListenerRunner`), the pooled forwarder started and closed with the app. `assertion` signs the facts for
    the backend; it is required when `upstream.signed_facts` is enabled (the admin app publishes its key)."""
    if settings.upstream.signed_facts.enabled and assertion is None:
        raise ValueError("upstream.signed_facts is enabled: pass its FactAssertion (FactAssertion.from_settings)")
    server = settings.server
    timeouts = server.timeouts
    app = web.Application()
    app[SETTINGS] = settings
    app[HEALTH] = health
    proxies = ProxyTrust(server.trusted_proxies)
    app[LIMITS] = ListenerLimits(server, proxies)  # served by listener.ListenerRunner: no decompression
    # SECURITY: the backend gets verified facts only: the fact headers and the signed facts header are the
    # gateway's (an incoming copy is dropped, signed facts on or off), and the raw client certificate header
    # (the ingress's) stays at the gateway, whose check vetted its sender and its binding.
    cert_header = settings.trust.client_certificate.header
    own = [*settings.policies.fact_headers.values(), settings.upstream.signed_facts.header, cert_header]
    rules = InboundRules([*own, *server.drop_request_headers], [cert_header])
    forwarder = Forwarder(settings.upstream, metrics, rules, proxies)
    # Every request, whatever its target, goes to the one handler, where the policy router decides (and the
    # decision is audited); Expect: 100-continue is answered when the body is first read (proxy.read_body), so a
    # request refused for its token is never invited to send its body; any other expectation is refused by
    # inbound.screen (417).
    entry: Handler = PublicHandler(
        metrics=metrics, policies=policies, forwarder=forwarder, inbound=rules, proxies=proxies,
        body_limits=BodyLimits(server.max_body_bytes, timeouts.body_idle_seconds, timeouts.body_total_seconds),
        fact_headers=FactHeaders(settings.policies.fact_headers),
        client_requests=ClientSlots(server.max_connections_per_client), audit=audit,
        assertion=assertion)
    app[ENTRY] = entry

    async def forwarder_ctx(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()

    app.cleanup_ctx.append(forwarder_ctx)
    return app


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


def build_admin_app(
    settings: Settings, metrics: Metrics, health: Health, assertion: FactAssertion | None = None
) -> web.Application:
    """Probes and metrics, on their own listener (with the connection limits of every listener); with signed
    facts, the public key that signs them (`/facts/jwks.json`)."""
    app = web.Application(middlewares=[_json_errors])
    app[LIMITS] = ListenerLimits(settings.server, ProxyTrust(settings.server.trusted_proxies))
    app[METRICS] = metrics
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if assertion is not None:
        body = dumps(assertion.jwks())

        async def facts_jwks(_: web.Request) -> web.Response:
            # Cached for a minute only: a restart without key_file makes a new key.
            return web.Response(body=body, content_type="application/jwk-set+json",
                                headers={"Cache-Control": "max-age=60"})

        app.router.add_get(FACTS_JWKS_PATH, facts_jwks)
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


async def serve(
    settings: Settings,
    extra: list[Listener] | None = None,
    *,
    worker_index: int | None = None,
    assertion: FactAssertion | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT, then drain gracefully; return the exit code. `assertion`: the
    signer of `upstream.signed_facts` when the caller built it (to hand its key to an in-process sandbox).

    As worker `worker_index` of `serve --workers N`, the listeners share their ports (SO_REUSEPORT) and a
    file audit trail goes to one file per worker (`audit.log` → `audit.w0.log`): one writer per file.
    """
    fact_problems = FactHeaders.problems(settings.policies.fact_headers)
    if fact_problems:  # before anything is built: a typo would otherwise send nothing, silently
        raise ConfigError(fact_problems)
    if assertion is None:
        try:
            assertion = FactAssertion.from_settings(settings)  # the caller's, when it shares it (the sandbox)
        except FactAssertionError as exc:
            raise ConfigError([str(exc)]) from None
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
        Listener("public", build_public_app(settings, metrics, health, holder, audit, assertion),
                 settings.server.public.host, settings.server.public.port),
    ]
    admin = Listener("admin", build_admin_app(settings, metrics, health, assertion), settings.server.admin.host,
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
        settle_heap()
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
