"""`POST /oauth2/token`: the client_credentials grant (RFC 6749 §4.4) with JWT access tokens (RFC 9068)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl

from aiohttp import hdrs, web

from ..observability.logging import get_logger
from .bodies import json_response, read_limited
from .client_auth import CertificateError
from .errors import invalid_client, oauth_error
from .metadata import SCOPES, scope_tokens
from .service import SANDBOX
from .store import Client

log = get_logger("sandbox.token")

FORM: Final = "application/x-www-form-urlencoded"
GRANT: Final = "client_credentials"
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(body: bytes) -> dict[str, str]:
    """Form parameters (RFC 6749 Appendix B); malformed, non-UTF-8 or repeated ones are invalid_request, and one
    sent without a value is left out: RFC 6749 §3.1 treats it as omitted (`scope=` is no scope)."""
    if _BAD_ESCAPE.search(body):  # parse_qsl would keep "%zz" as it is
        raise oauth_error("invalid_request", "the body has a % not followed by two hex digits (RFC 3986 §2.1)")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            errors="strict",
            max_num_fields=50,
        )
    except (UnicodeDecodeError, ValueError):
        raise oauth_error(
            "invalid_request", "the body is not a valid application/x-www-form-urlencoded form"
        ) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise oauth_error("invalid_request", f"parameter {name!r} is repeated (RFC 6749 §3.2)")
        form[name] = value
    return {name: value for name, value in form.items() if value}


def allowed_scopes(client: Client) -> tuple[str, ...]:
    """Developer-portal apps may ask for any scope; DCR clients for the scope they registered."""
    if client.kind == "app" or client.registration is None:
        return SCOPES
    return scope_tokens(client.registration.get("scope"))


def granted_scope(requested: str | None, allowed: tuple[str, ...]) -> str:
    """The requested scope if allowed (RFC 6749 §3.3), else every allowed scope when none was asked for."""
    if requested is None:
        return " ".join(allowed)
    tokens = requested.split(" ")
    if not requested or any(not t for t in tokens):
        raise oauth_error("invalid_scope", "scope must be space-separated scope tokens")
    denied = [t for t in tokens if t not in allowed]
    if denied:
        raise oauth_error("invalid_scope", f"scope {denied[0]!r} is not allowed for this client")
    return " ".join(dict.fromkeys(tokens))


def _check_grant(form: Mapping[str, str]) -> None:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise oauth_error("invalid_request", "grant_type is required")
    if grant_type != GRANT:
        raise oauth_error(
            "unsupported_grant_type", "the sandbox issues tokens for the client_credentials grant only"
        )


async def token(request: web.Request) -> web.Response:
    """Authenticate the client and issue an access token (RFC 6749 §5.1), or an RFC 6749 §5.2 error."""
    sandbox = request.app[SANDBOX]
    res = sandbox.resources
    if request.content_type != FORM:
        raise oauth_error("invalid_request", f"the body must be {FORM}")
    body = await read_limited(request, sandbox.config.max_body_bytes)
    if body is None:
        raise oauth_error("invalid_request", f"the body exceeds {sandbox.config.max_body_bytes} bytes")
    form = parse_form(body)
    _check_grant(form)
    try:
        certificate, _ = await res.certificates.read(request)
    except CertificateError as exc:
        log.info("client_auth_failed", reason="client_certificate_refused")
        raise invalid_client(str(exc)) from None
    authenticated = await res.clients.authenticate(request.headers.get(hdrs.AUTHORIZATION), form, certificate)
    client = authenticated.client
    if client.kind == "dcr" and GRANT not in (client.registration or {}).get("grant_types", ()):
        raise oauth_error("unauthorized_client", "this client did not register the client_credentials grant")
    scope = granted_scope(form.get("scope"), allowed_scopes(client))
    # RFC 8705 §3: a token issued over mutual TLS is bound to that certificate, whatever the client's method.
    thumbprint = certificate.thumbprint if certificate is not None else None
    access_token, issued = res.tokens.issue(client.client_id, scope, cert_thumbprint=thumbprint)
    log.info(
        "access_token_issued",
        client_id=client.client_id,
        jti=issued.jti,
        kid=res.tokens.kid,
        auth_method=authenticated.method,
        client_cert_s256=thumbprint,
    )
    return json_response(
        {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": res.tokens.lifetime,
            "scope": scope,
        },
        no_store=True,
    )
