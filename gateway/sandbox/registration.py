"""The DCR backend: `POST /open-banking/v3.1/register` and `GET|PUT|DELETE …/register/{ClientId}`.

Status codes are the bank page's: POST 201/400, GET 200/401/403, PUT 200/400/401/403,
DELETE 204/401/403/405 — plus 401 on POST when it is not authenticated.
POST is authenticated per `sandbox.registration_auth`: by a sandbox access token (RFC 6750; the bank's page),
or by the TPP's transport certificate alone (the OB standard profile), which the sandbox believes only as the
gateway's signed facts assert it, for this request and for the software the request's SSA names. GET, PUT and
DELETE take a sandbox access token; a certificate-bound one (RFC 8705 §3) only over its certificate. An unknown
ClientId is 401 and the presented token is revoked at once; another client's ClientId is 403; DELETE also
invalidates the client's tokens. The request JWS signatures are NOT verified here: the gateway in front does
that (and says so in its signed facts).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import hdrs, web

from ..errors import GatewayError
from ..jsonutil import dumps
from ..observability.logging import get_logger
from .bodies import encoded_json_response, json_response, read_limited
from .client_auth import CertificateError, ClientCertificate
from .credentials import hash_secret, new_client_id, new_client_secret
from .crypto import CryptoError, decode_unverified
from .errors import forbidden, invalid_token, method_not_allowed, registration_error
from .gateway_facts import GatewayFacts
from .jsonvalues import loads
from .metadata import INVALID_METADATA, MetadataError, Registration, validate_registration
from .service import SANDBOX, Sandbox
from .store import Client
from .tokens import AccessToken

log = get_logger("sandbox.registration")

JWS_TYPES: Final = frozenset({"application/jose", "application/jwt"})
CLIENT_ID_HEADER: Final = "client_id"
_MAX_ID: Final = 256


async def _bearer(request: web.Request, sandbox: Sandbox) -> AccessToken:
    """The caller's access token; the optional `client_id` header, when sent, must name its client; a
    certificate-bound token must come over its certificate (RFC 8705 §3)."""
    res = sandbox.resources
    token = await res.tokens.authenticate(request.headers.get(hdrs.AUTHORIZATION))
    claimed = request.headers.get(CLIENT_ID_HEADER)
    if claimed is not None and claimed != token.client_id:
        raise invalid_token("the client_id header does not name the client the access token was issued to")
    if token.cert_thumbprint is not None:
        certificate, _ = await _certificate(request, sandbox)
        if certificate is None or certificate.thumbprint != token.cert_thumbprint:
            log.info("access_token_rejected", reason="cert_binding_mismatch", client_id=token.client_id,
                     jti=token.jti)
            raise invalid_token("the access token is bound to another client certificate")
    return token


async def _certificate(
    request: web.Request, sandbox: Sandbox, refuse: Callable[[str], GatewayError] = invalid_token
) -> tuple[ClientCertificate | None, GatewayFacts | None]:
    try:
        return await sandbox.resources.certificates.read(request)
    except CertificateError as exc:
        raise refuse(str(exc)) from None


def _unauthenticated_client(description: str) -> GatewayError:
    """401 for a registration not authenticated by its certificate (no Bearer challenge: no token is asked)."""
    return GatewayError(401, "invalid_client", description)


async def _registrant(request: web.Request, sandbox: Sandbox) -> tuple[str, str | None]:
    """Who may register (`sandbox.registration_auth`): ("client", its client id) by access token, or
    ("certificate", its thumbprint) by the certificate the gateway's signed facts assert, with the software id
    the gateway verified (the request's SSA must name the same)."""
    if sandbox.config.registration_auth == "bearer":
        return "client", (await _bearer(request, sandbox)).client_id
    certificate, facts = await _certificate(request, sandbox, _unauthenticated_client)
    if facts is None or certificate is None:
        raise _unauthenticated_client("registration needs the TPP's transport certificate, as the gateway's "
                                      "signed facts assert it (mutual TLS)")
    return "certificate", facts.text("software_id")


async def _request_jws(request: web.Request, sandbox: Sandbox) -> str:
    """The compact JWS body: application/jose, application/jwt, or application/json with the JWS string."""
    ctype = request.content_type
    if ctype not in JWS_TYPES and ctype != "application/json":
        raise registration_error(
            INVALID_METADATA, "the body must be a JWS (application/jose or application/jwt)"
        )
    body = await read_limited(request, sandbox.config.max_body_bytes)
    if body is None:
        raise registration_error(INVALID_METADATA, f"the body exceeds {sandbox.config.max_body_bytes} bytes")
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise registration_error(INVALID_METADATA, "the body is not UTF-8") from None
    if ctype == "application/json" and text.startswith('"'):
        try:
            decoded = loads(body)
        except ValueError:
            raise registration_error(INVALID_METADATA, "the body is not a JSON string") from None
        text = decoded.strip() if isinstance(decoded, str) else ""
    if not text:
        raise registration_error(INVALID_METADATA, "registration request entity is missing or malformed")
    return text


async def _validated(request: web.Request, sandbox: Sandbox) -> Registration:
    jws = await _request_jws(request, sandbox)
    try:
        _, claims = decode_unverified(jws)
    except CryptoError as exc:
        raise registration_error(
            INVALID_METADATA, f"registration request is not a JWS the sandbox accepts: {exc.description}"
        ) from None
    try:
        return validate_registration(claims, now=time.time(), leeway=sandbox.config.leeway)
    except MetadataError as exc:
        log.info("registration_refused", error=exc.error, description=exc.description)
        raise registration_error(exc.error, exc.description) from None


async def create(request: web.Request) -> web.Response:
    """POST: register a client; 201 with client_id, client_secret and the registration (OB DCR §5)."""
    sandbox = request.app[SANDBOX]
    res = sandbox.resources
    by, who = await _registrant(request, sandbox)
    reg = await _validated(request, sandbox)
    if by == "certificate" and who != reg.software_id:
        # SECURITY: the gateway vouched for the certificate of the software it verified; nothing else.
        raise _unauthenticated_client("the gateway's signed facts are for another software_id")
    client_id = new_client_id()
    secret = new_client_secret()
    now = int(time.time())
    document = reg.document(client_id, now)
    # Everything that can fail happens before the client is stored, the answer included: a client its TPP
    # never heard of (and whose secret nobody received) must not exist. The store writes it in one SQLite
    # transaction, which rolls back on any error; after it, only the log line and the prepared answer remain.
    # The secret is returned once, here; only its hash is stored.
    answer = dumps({"client_id": client_id, "client_secret": secret, **document})
    client = Client(
        client_id=client_id,
        kind="dcr",
        secret_hash=await asyncio.to_thread(hash_secret, secret),
        created_at=now,
        updated_at=now,
        name=_client_name(reg),
        software_id=reg.software_id,
        auth_method=reg.auth_method,
        jwks_uri=reg.jwks_uri,
        registration=document,
    )
    await res.store.add_client(client)
    log.info(
        "client_registered",
        client_id=client_id,
        software_id=reg.software_id,
        auth_method=reg.auth_method,
        authenticated_by=by,
        by_client_id=who if by == "client" else None,
    )
    return encoded_json_response(answer, status=201, no_store=True)


def _client_name(reg: Registration) -> str | None:
    name = reg.ssa_claims.get("software_client_name")
    return name if isinstance(name, str) else None


async def _target(request: web.Request, sandbox: Sandbox, token: AccessToken) -> Client:
    """The client named in the path: unknown → 401 and the token revoked; someone else's → 403."""
    client_id = request.match_info["client_id"]
    client = await sandbox.resources.store.get_client(client_id) if len(client_id) <= _MAX_ID else None
    if client is None:
        # OB DCR §3 / RFC 7592 §2: unknown client ⇒ 401 and the access token is revoked immediately.
        await sandbox.resources.tokens.revoke(token, "unknown_client_id")
        raise invalid_token("unknown client_id; the access token has been revoked")
    if client.client_id != token.client_id:
        log.info("registration_access_denied", client_id=client.client_id, by_client_id=token.client_id)
        raise forbidden("the access token was issued to another client")
    return client


def _app_view(client: Client) -> dict[str, Any]:
    """A developer-portal app described like a registration (it was not created by DCR)."""
    return {
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at,
        "client_secret_expires_at": 0,
        "client_name": client.name,
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["client_credentials"],
        "sandbox_app": True,
    }


async def read(request: web.Request) -> web.Response:
    """GET: the registration of the caller's own client."""
    sandbox = request.app[SANDBOX]
    client = await _target(request, sandbox, await _bearer(request, sandbox))
    body = _app_view(client) if client.kind == "app" else client.registration
    return json_response(body, no_store=True)


async def update(request: web.Request) -> web.Response:
    """PUT: replace the metadata with a full new request (same validation as POST); the client_id stays."""
    sandbox = request.app[SANDBOX]
    client = await _target(request, sandbox, await _bearer(request, sandbox))
    if client.kind == "app":
        raise forbidden("developer-portal apps cannot be modified through DCR")
    reg = await _validated(request, sandbox)
    if reg.software_id != client.software_id:
        raise registration_error(INVALID_METADATA, "software_id cannot change; register a new client instead")
    if reg.requested_client_id is not None and reg.requested_client_id != client.client_id:
        raise registration_error(
            INVALID_METADATA, "client_id in the request differs from the ClientId in the path"
        )
    now = int(time.time())
    document = reg.document(client.client_id, client.created_at)
    answer = dumps(document)  # before the write, as in `create`
    if not await sandbox.resources.store.update_registration(
        client.client_id, registration=document, auth_method=reg.auth_method, jwks_uri=reg.jwks_uri, now=now
    ):
        raise invalid_token("unknown client_id")  # deleted concurrently
    log.info(
        "client_updated", client_id=client.client_id, software_id=reg.software_id, auth_method=reg.auth_method
    )
    return encoded_json_response(answer, no_store=True)


async def delete(request: web.Request) -> web.Response:
    """DELETE: remove the client and invalidate every token issued to it; 405 for developer-portal apps."""
    sandbox = request.app[SANDBOX]
    client = await _target(request, sandbox, await _bearer(request, sandbox))
    if client.kind == "app":
        raise method_not_allowed("developer-portal apps cannot be deleted through DCR", "GET")
    if not await sandbox.resources.store.delete_registration(client.client_id, int(time.time())):
        raise invalid_token("unknown client_id")  # deleted concurrently
    log.info("client_deleted", client_id=client.client_id, software_id=client.software_id)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})
