"""The sandbox's aiohttp application: routes, error middleware, lifecycle."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ..addresses import ProxyTrust
from ..config import Settings
from ..errors import GatewayError, error_response, http_exception_response, server_error_response
from ..http.handler import interaction_id_of
from ..http.inbound import INTERACTION_ID
from ..http.listener import LIMITS, ListenerLimits
from ..observability.logging import get_logger
from . import apidocs, discovery, openapi, portal, qtsp, registration, token_endpoint
from .service import REGISTRATION_PATH, SANDBOX, TOKEN_PATH, Sandbox

log = get_logger("sandbox.http")

_INTERACTION = web.RequestKey("dcr_sandbox_interaction_id", str)


@web.middleware
async def sandbox_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Interaction id, one log line per request, and every error as a JSON body (never a bare 500)."""
    started = time.perf_counter()
    interaction_id = interaction_id_of(request)  # the gateway's rule (FAPI 1.0 Part 1 §6.2.1)
    request[_INTERACTION] = interaction_id
    structlog.contextvars.bind_contextvars(interaction_id=interaction_id)
    status = 500
    try:
        try:
            response = await handler(request)
        except GatewayError as err:
            response = error_response(err)
        except web.HTTPException as exc:
            response = http_exception_response(exc)
        except Exception:
            log.exception("sandbox_unhandled_error", method=request.method)
            response = server_error_response()
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        log.info(
            "sandbox_request",
            method=request.method,
            route=resource.canonical if resource else "unmatched",
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        structlog.contextvars.unbind_contextvars("interaction_id")


async def _echo_interaction_id(request: web.Request, response: web.StreamResponse) -> None:
    interaction_id = request.get(_INTERACTION)
    if interaction_id is not None:
        response.headers[INTERACTION_ID] = interaction_id


def build_sandbox_app(settings: Settings, gateway_jwks: dict[str, Any] | None = None) -> web.Application:
    """The sandbox bank as an aiohttp app; keys, store and HTTP client open in its cleanup context.
    `gateway_jwks`: the key of the gateway's signed facts, when the gateway runs in this process."""
    sandbox = Sandbox(settings, gateway_jwks)
    app = web.Application(middlewares=[sandbox_middleware], client_max_size=sandbox.config.max_body_bytes)
    # The connection limits and body timeouts of every listener (served by listener.ListenerRunner).
    app[LIMITS] = ListenerLimits(settings.server, ProxyTrust(settings.server.trusted_proxies))
    app[SANDBOX] = sandbox
    app.cleanup_ctx.append(sandbox.lifecycle)
    app.on_response_prepare.append(_echo_interaction_id)
    r = app.router
    # Reached through the gateway (public URL) as well as on the sandbox port.
    r.add_post(TOKEN_PATH, token_endpoint.token)
    r.add_get("/.well-known/openid-configuration", discovery.discovery)
    r.add_get("/jwks", discovery.token_jwks)
    r.add_post(REGISTRATION_PATH, registration.create)
    r.add_get(REGISTRATION_PATH + "/{client_id}", registration.read)
    r.add_put(REGISTRATION_PATH + "/{client_id}", registration.update)
    r.add_delete(REGISTRATION_PATH + "/{client_id}", registration.delete)
    # Developer portal: the sandbox port only.
    r.add_post("/sandbox/apps", portal.create_app)
    r.add_post("/sandbox/ssa", portal.create_ssa)
    r.add_get("/directory/jwks", portal.directory_jwks)
    r.add_post(portal.TPP_JWKS_PATH, portal.host_tpp_jwks)
    r.add_get(portal.TPP_JWKS_PATH + "/{jwks_id}", portal.serve_tpp_jwks)
    qtsp.add_routes(app)  # the test CA's CRL and OCSP responder
    openapi.add_routes(app, settings)  # the API's OpenAPI 3.1 document: /openapi.json, /openapi.yaml
    apidocs.add_routes(app, settings)  # its documentation page (/docs) and Postman collection, from that document
    if settings.sandbox.playground:
        from .playground import add_routes as add_playground_routes

        add_playground_routes(app, settings)  # the playground page and its API: sandbox port only
    return app
