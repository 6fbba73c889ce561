"""The playground on the sandbox listener: the page and its assets, key sessions, signing, and the call proxy.

GET  /playground (and /playground/)               the page (plain HTML, JS and CSS from package files)
GET  /playground/static/{name}                    its assets
GET  /playground/api/config                       the URLs and defaults the page builds requests from
POST /playground/api/sessions                     a TPP key for this session; its public JWKS hosted here
POST /playground/api/sessions/{session_id}/sign   a compact JWS over the given claims, with that key
POST /playground/api/send                         make one allowed call (calls.py) and report request,
                                                  response and the same call as code in the bank page's
                                                  eight languages (samples.py)

The browser talks to this listener only: calls to the gateway (another origin) go through `send`, which
forwards them to `server.public_url`, so they pass the gateway's policies like any TPP's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import hdrs, web

from ...config import Settings
from ...errors import GatewayError
from ...observability.logging import get_logger
from ..credentials import base62
from ..crypto import ALLOWED_ALGS, CryptoError, decode_unverified, generate_key, jwks
from ..crypto import sign as sign_jws
from ..errors import bad_request, not_found
from ..pages import Asset, Handler, add_page, load_assets
from ..pages import api_response as _api_response
from ..pages import json_body as _json_body
from ..portal import TPP_JWKS_PATH
from ..samples import Call, json_languages, render_all
from ..service import REGISTRATION_PATH, SANDBOX, TOKEN_PATH
from .calls import allowed_call, canonical_header, header_problem
from .sessions import SessionStore

log = get_logger("sandbox.playground")

PAGE_PATH: Final = "/playground"
DEFAULT_REDIRECT_URI: Final = "https://tpp.example.com/callback"
_ASSETS: Final = {
    "index.html": "text/html",
    "playground.js": "text/javascript",
    "playground.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (compared, not bound)
_MAX_RESPONSE_BYTES: Final = 1 << 20
_CALL_TIMEOUT: Final = aiohttp.ClientTimeout(total=30, connect=5)


def _host_of(value: str) -> str | None:
    try:
        return urlsplit(value if "//" in value else "//" + value).hostname
    except ValueError:
        return None


class Playground:
    """The playground's compiled settings, assets and key sessions."""

    def __init__(self, settings: Settings) -> None:
        sandbox = settings.sandbox
        public = settings.server.public_url
        self.gateway_url = public
        self.token_endpoint = public + TOKEN_PATH
        self.registration_endpoint = public + REGISTRATION_PATH
        self.audience = sandbox.issuer or public
        self.portal_url = sandbox.portal_url
        hosts = set(_LOOPBACK_NAMES)
        if sandbox.listen.host not in _WILDCARDS:
            hosts.add(sandbox.listen.host)
        if sandbox.portal_url:
            portal_host = _host_of(sandbox.portal_url)
            if portal_host:
                hosts.add(portal_host)
        self.allowed_hosts = frozenset(hosts)
        self.sessions = SessionStore()
        self.assets: dict[str, Asset] = load_assets(__package__, _ASSETS)

    def sandbox_url(self, request: web.Request) -> str:
        """This listener's base URL: `sandbox.portal_url`, else the local address the request came in on.

        Never the Host header: it is the client's to choose, and the proxy forwards to this URL.
        """
        if self.portal_url:
            return self.portal_url
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            raise GatewayError(503, "temporarily_unavailable", "the connection has closed")
        host, port = str(sockname[0]), int(sockname[1])
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def host_allowed(self, request: web.Request) -> bool:
        """The Host (and Origin, when sent) name this listener: a loopback name, its own address or portal_url."""
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        own = {str(sockname[0])} if sockname else set()
        names = [request.host]
        if hdrs.ORIGIN in request.headers:
            names.append(request.headers[hdrs.ORIGIN])
        return all(_host_of(name) in self.allowed_hosts | own for name in names)


PLAYGROUND = web.AppKey("dcr_playground", Playground)
"""The playground in the sandbox app."""


def _guarded(handler: Handler) -> Handler:
    """Refuse requests for another host name (DNS rebinding) or from another site before `handler` runs."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        # SECURITY: a page on another site that rebinds its DNS name to 127.0.0.1 would be same-origin with
        # this listener; its Host is its own name, so the request is refused (the page never loads).
        if not request.app[PLAYGROUND].host_allowed(request):
            raise GatewayError(403, "access_denied", "the playground answers only to its own host name")
        return await handler(request)

    guarded.__doc__ = handler.__doc__
    return guarded


# The page's API ---------------------------------------------------------------------------------------


async def config(request: web.Request) -> web.Response:
    """GET /playground/api/config: the URLs and defaults the page builds its requests from, and the languages
    of the snippets `send` returns (key, label, file, how to run it; samples.LANGUAGES, in the page's order)."""
    pg = request.app[PLAYGROUND]
    return _api_response(
        {
            "gateway_url": pg.gateway_url,
            "sandbox_url": pg.sandbox_url(request),
            "token_endpoint": pg.token_endpoint,
            "registration_path": REGISTRATION_PATH,
            "token_path": TOKEN_PATH,
            "audience": pg.audience,
            "redirect_uri": DEFAULT_REDIRECT_URI,
            "algorithms": list(ALLOWED_ALGS),
            "languages": json_languages(),
        }
    )


# Key sessions ----------------------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    """POST /playground/api/sessions: a fresh TPP key, its public JWKS hosted here; the private key stays."""
    pg = request.app[PLAYGROUND]
    sandbox = request.app[SANDBOX]
    data = await _json_body(request)
    alg = data.get("alg", "PS256")
    if alg not in ALLOWED_ALGS:
        raise bad_request(f"alg must be one of {', '.join(ALLOWED_ALGS)}")
    key = await asyncio.to_thread(generate_key, alg)
    document = jwks([key])
    jwks_id = base62(22)
    await sandbox.resources.store.put_tpp_jwks(jwks_id, document, int(time.time()))
    jwks_uri = f"{pg.sandbox_url(request)}{TPP_JWKS_PATH}/{jwks_id}"
    session_id, session = pg.sessions.add(key, jwks_uri)
    log.info("playground_session_created", kid=key.kid, alg=alg, jwks_id=jwks_id)
    # SECURITY: only the public half is ever sent; the private key lives in `pg.sessions`, in memory.
    return _api_response(
        {
            "session_id": session_id,
            "kid": key.kid,
            "alg": alg,
            "jwks_uri": jwks_uri,
            "jwks": document,
            "expires_at": int(session.expires_at),
        },
        status=201,
    )


async def sign(request: web.Request) -> web.Response:
    """POST /playground/api/sessions/{session_id}/sign: `{"claims": {…}}` → the compact JWS, decoded."""
    pg = request.app[PLAYGROUND]
    session = pg.sessions.get(request.match_info["session_id"])
    if session is None:
        raise not_found("no such playground session (they last an hour and end with a restart): make a new key")
    data = await _json_body(request)
    claims = data.get("claims")
    if not isinstance(claims, dict):
        raise bad_request('the body must be {"claims": {…}} with a JSON object of claims')
    try:
        token = sign_jws(session.key, claims, typ="JWT")
        header, payload = decode_unverified(token)
    except CryptoError as exc:
        raise bad_request(exc.description) from None
    jti = claims.get("jti")
    log.info("playground_signed", kid=session.key.kid, jti=jti if isinstance(jti, str) else None)
    return _api_response({"jws": token, "header": header, "claims": payload})


# The call proxy --------------------------------------------------------------------------------------


def _headers(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise bad_request("headers must be a JSON object of strings")
    out: list[tuple[str, str]] = []
    for name, header_value in value.items():
        problem = header_problem(name, header_value)
        if problem is not None:
            raise bad_request(problem)
        canonical = canonical_header(name)
        assert canonical is not None and isinstance(header_value, str)  # header_problem said so
        out.append((canonical, header_value))
    return out


async def send(request: web.Request) -> web.Response:
    """POST /playground/api/send: make one allowed call; report the request, the response and the snippets."""
    pg = request.app[PLAYGROUND]
    sandbox = request.app[SANDBOX]
    data = await _json_body(request)
    target, method, path = data.get("target"), data.get("method"), data.get("path")
    if not (isinstance(target, str) and isinstance(method, str) and isinstance(path, str)):
        raise bad_request("target, method and path are required strings")
    allowed = allowed_call(target, method, path)
    if allowed is None:
        raise bad_request(f"the playground does not make {method} {path} calls to the {target}")
    headers = _headers(data.get("headers"))
    body = data.get("body")
    if body is not None and not isinstance(body, str):
        raise bad_request("body must be a string or null")
    base = pg.gateway_url if allowed.target == "gateway" else pg.sandbox_url(request)
    call = Call(method=method, url=base + path, headers=headers, body=body)
    report: dict[str, Any] = {
        "request": {"method": method, "url": call.url, "headers": headers, "body": body},
        "snippets": render_all(call),
    }
    if data.get("send", True) is False:
        return _api_response(report)
    try:
        async with sandbox.resources.session.request(
            method,
            call.url,
            headers=headers,
            data=body.encode() if body is not None else None,
            allow_redirects=False,
            timeout=_CALL_TIMEOUT,
        ) as response:
            raw = await response.content.read(_MAX_RESPONSE_BYTES + 1)
            if len(raw) > _MAX_RESPONSE_BYTES:
                raise GatewayError(502, "bad_gateway", f"the answer exceeds {_MAX_RESPONSE_BYTES} bytes")
            sent = list(response.request_info.headers.items())
            report["request"]["headers"] = sent
            report["response"] = {
                "status": response.status,
                "reason": response.reason or "",
                "headers": list(response.headers.items()),
                "body": raw.decode("utf-8", errors="replace"),
            }
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("playground_call_failed", target=target, method=method, route=allowed.route,
                 error=type(exc).__name__)
        raise GatewayError(502, "bad_gateway", f"the playground could not reach {base} ({type(exc).__name__})") \
            from None
    log.info("playground_call", target=target, method=method, route=allowed.route, status=response.status)
    return _api_response(report)


def add_routes(app: web.Application, settings: Settings) -> None:
    """Mount the playground on the sandbox app."""
    app[PLAYGROUND] = Playground(settings)
    r = app.router
    add_page(r, PAGE_PATH, app[PLAYGROUND].assets, _guarded)  # the page and its files
    r.add_get(PAGE_PATH + "/api/config", _guarded(config))
    r.add_post(PAGE_PATH + "/api/sessions", _guarded(create_session))
    r.add_post(PAGE_PATH + "/api/sessions/{session_id}/sign", _guarded(sign))
    r.add_post(PAGE_PATH + "/api/send", _guarded(send))
