"""The developer portal (sandbox port only): apps, test SSAs, the directory's keys, hosted TPP key sets."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from aiohttp import web

from ..observability.logging import get_logger
from .bodies import json_object, json_response, read_limited
from .credentials import base62, hash_secret, new_client_id, new_client_secret
from .crypto import CryptoError, KeySet, jwks
from .directory import mint_ssa, ssa_claims
from .errors import bad_request, not_found
from .service import SANDBOX, Sandbox
from .store import Client

log = get_logger("sandbox.portal")

TPP_JWKS_PATH: Final = "/sandbox/tpp-jwks"
_MAX_NAME: Final = 100


async def _json_object(request: web.Request, sandbox: Sandbox) -> dict[str, Any]:
    """An optional JSON object body ({} when empty)."""
    body = await read_limited(request, sandbox.config.max_body_bytes)
    if body is None:
        raise bad_request(f"the body exceeds {sandbox.config.max_body_bytes} bytes")
    if not body.strip():
        return {}
    if request.content_type != "application/json":
        raise bad_request("the body must be application/json")
    return json_object(body)


async def create_app(request: web.Request) -> web.Response:
    """POST /sandbox/apps: a developer app with client credentials (the secret is shown once)."""
    sandbox = request.app[SANDBOX]
    data = await _json_object(request, sandbox)
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME):
        raise bad_request(f"name must be a string of 1 to {_MAX_NAME} characters")
    client_id, secret = new_client_id(), new_client_secret()
    now = int(time.time())
    secret_hash = await asyncio.to_thread(hash_secret, secret)
    await sandbox.resources.store.add_client(
        Client(
            client_id=client_id,
            kind="app",
            secret_hash=secret_hash,
            created_at=now,
            updated_at=now,
            name=name,
        )
    )
    log.info("app_created", client_id=client_id)
    return json_response({"client_id": client_id, "client_secret": secret}, status=201, no_store=True)


async def create_ssa(request: web.Request) -> web.Response:
    """POST /sandbox/ssa: a Software Statement Assertion signed by the sandbox directory key."""
    sandbox = request.app[SANDBOX]
    data = await _json_object(request, sandbox)
    if "iss" in data:
        raise bad_request("iss is set by the directory (sandbox.directory_issuer) and cannot be given")
    claims = ssa_claims(data, issuer=sandbox.config.directory_issuer)
    ssa = mint_ssa(sandbox.resources.keys.directory, claims)
    log.info("ssa_minted", software_id=claims["software_id"], org_id=claims["org_id"], jti=claims.get("jti"))
    return json_response({"software_statement": ssa}, status=201)


async def directory_jwks(request: web.Request) -> web.Response:
    """GET /directory/jwks: the directory's public keys (verify SSAs with these)."""
    return json_response(jwks([request.app[SANDBOX].resources.keys.directory]))


def _portal_base(request: web.Request, sandbox: Sandbox) -> str:
    if sandbox.config.portal_url:
        return sandbox.config.portal_url
    return str(request.url.origin())


async def host_tpp_jwks(request: web.Request) -> web.Response:
    """POST /sandbox/tpp-jwks: host a TPP's public JWKS; 201 with its jwks_uri. Private keys are refused."""
    sandbox = request.app[SANDBOX]
    data = await _json_object(request, sandbox)
    try:
        KeySet.from_document(data)
    except CryptoError as exc:
        raise bad_request(exc.description) from None
    jwks_id = base62(22)
    await sandbox.resources.store.put_tpp_jwks(jwks_id, {"keys": data["keys"]}, int(time.time()))
    kids = [k.get("kid") for k in data["keys"]]
    log.info("tpp_jwks_hosted", jwks_id=jwks_id, kids=kids)
    return json_response(
        {"jwks_uri": f"{_portal_base(request, sandbox)}{TPP_JWKS_PATH}/{jwks_id}"}, status=201
    )


async def serve_tpp_jwks(request: web.Request) -> web.Response:
    """GET /sandbox/tpp-jwks/{jwks_id}: a hosted TPP JWKS."""
    sandbox = request.app[SANDBOX]
    jwks_id = request.match_info["jwks_id"]
    doc = await sandbox.resources.store.get_tpp_jwks(jwks_id) if len(jwks_id) <= 64 else None
    if doc is None:
        raise not_found("no hosted JWKS with this id")
    return json_response(doc)
