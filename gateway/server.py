"""Builds the public and admin aiohttp apps and runs them: lifecycle, signals, graceful drain."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .config import Settings
from .context import CTX, RequestContext
from .errors import GatewayError, error_response
from .jsonutil import dumps
from .observability.logging import get_logger
from .observability.metrics import Metrics
from .proxy import INTERACTION_ID, Forwarder

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


def _interaction_id(request: web.Request) -> str:
    """Keep the TPP's x-fapi-interaction-id when it is a UUID (FAPI 1.0 Part 1 §6.2.1), else make one."""
    raw = request.headers.get(INTERACTION_ID)
    if raw and len(raw) == 36:
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    return str(uuid.uuid4())


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


@web.middleware
async def request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Interaction/request ids bound to logs, timing, metrics, canonical log line, errors → JSON."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    interaction_id = _interaction_id(request)
    request_id = uuid.uuid4().hex
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
            response = web.Response(
                status=exc.status,
                body=dumps({"error": "invalid_request", "error_description": exc.reason}),
                content_type="application/json",
            )
        except asyncio.CancelledError:
            status = 499
            raise
        except Exception:
            log.exception("unhandled_error", method=request.method)
            response = web.Response(
                status=500,
                body=dumps({"error": "server_error", "error_description": "internal error"}),
                content_type="application/json",
            )
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = ctx.route
        decision = ctx.decision
        metrics.in_flight.dec()
        metrics.requests.labels(route, request.method, _status_class(status), decision).inc()
        metrics.request_duration.labels(route, request.method).observe(elapsed)
        log.info(
            "request",
            method=request.method,
            route=route,
            status=status,
            upstream_status=ctx.upstream_status,
            duration_ms=round(elapsed * 1000, 3),
        )
        structlog.contextvars.clear_contextvars()


async def _echo_interaction_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, errors included, carries the interaction id."""
    ctx = request.get(CTX)
    if ctx is not None:
        response.headers[INTERACTION_ID] = ctx.interaction_id


async def proxy_handler(request: web.Request) -> web.StreamResponse:
    """Forward the request upstream."""
    ctx = request[CTX]
    ctx.route = "*"
    return await request.app[FORWARDER].forward(request, ctx)


def build_public_app(settings: Settings, metrics: Metrics, health: Health) -> web.Application:
    """The TPP-facing app: middleware, catch-all handler, pooled forwarder."""
    app = web.Application(middlewares=[request_context], client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HEALTH] = health
    forwarder = Forwarder(settings.upstream, settings.server.max_body_bytes, metrics)
    app[FORWARDER] = forwarder

    async def forwarder_ctx(_: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        yield
        await forwarder.close()

    app.cleanup_ctx.append(forwarder_ctx)
    app.on_response_prepare.append(_echo_interaction_id)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
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
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_admin_app(metrics: Metrics, health: Health) -> web.Application:
    """Probes and metrics, on their own listener."""
    app = web.Application()
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


async def _start(listener: Listener, shutdown_timeout: float) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(listener.app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, listener.host, listener.port, backlog=1024)
    await site.start()
    port = listener.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port


async def serve(settings: Settings, extra: list[Listener] | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT, then drain gracefully; return the exit code."""
    metrics = Metrics()
    health = Health()
    listeners = [
        *(extra or []),
        Listener("public", build_public_app(settings, metrics, health), settings.server.public.host,
                 settings.server.public.port),
    ]
    admin = Listener("admin", build_admin_app(metrics, health), settings.server.admin.host,
                     settings.server.admin.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    drain = settings.shutdown.drain_timeout_seconds
    runners: list[tuple[str, web.AppRunner]] = []
    try:
        admin_runner, admin_port = await _start(admin, drain)
        runners.append(("admin", admin_runner))
        ports = {"admin": admin_port}
        for listener in listeners:
            runner, port = await _start(listener, drain)
            runners.append((listener.name, runner))
            ports[listener.name] = port
        health.unblock("starting")
        log.info("listening", **{f"{name}_port": port for name, port in ports.items()})
        await stop.wait()
        log.info("shutdown_started", readiness_delay_s=settings.shutdown.readiness_delay_seconds,
                 drain_timeout_s=drain)
        health.block("draining", "shutting down")
        await asyncio.sleep(settings.shutdown.readiness_delay_seconds)
    finally:
        # Public listeners first (stop accepting, drain in-flight), the admin listener last.
        for name, runner in reversed(runners):
            await runner.cleanup()
            log.info("listener_stopped", listener=name)
    log.info("shutdown_complete")
    return 0
