"""The bench upstream: a tiny DCR backend answering with small, realistic (~300 B) JSON registrations."""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .serving import server_main

REGISTER = "/open-banking/v3.1/register"


def _template() -> tuple[bytes, bytes]:
    """A registration response (RFC 7591 §3.2.1) split around the client_id value."""
    marker = "\x00"
    body = json.dumps(
        {
            "client_id": marker,
            "client_id_issued_at": 1735689600,
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "PS256",
            "grant_types": ["client_credentials", "authorization_code"],
            "response_types": ["code id_token"],
            "redirect_uris": ["https://tpp.example.com/cb"],
            "scope": "openid accounts payments",
        },
        separators=(",", ":"),
    )
    before, after = body.split(json.dumps(marker))
    return before.encode(), after.encode()


_BEFORE, _AFTER = _template()


def registration_body(client_id: str) -> bytes:
    """The JSON registration the upstream returns for `client_id`."""
    return _BEFORE + json.dumps(client_id).encode() + _AFTER


async def get_registration(request: web.Request) -> web.Response:
    """GET /register/{id}: the stored registration."""
    body = registration_body(request.match_info["client_id"])
    return web.Response(body=body, content_type="application/json")


def build_app(args: argparse.Namespace | None = None) -> web.Application:
    """The upstream app: GET /register/{id} → 200, POST /register → 201, both with a JSON registration;
    GET ROUTE serves FILE for every `--serve ROUTE=FILE` (the bench's key sets: issuer, directory, TPP)."""
    ids = itertools.count(1)

    async def create_registration(request: web.Request) -> web.Response:
        """POST /register: read the request body, answer 201 with a new registration."""
        await request.read()
        return web.Response(status=201, body=registration_body(f"bench-{next(ids)}"),
                            content_type="application/json")

    app = web.Application()
    app.router.add_get(REGISTER + "/{client_id}", get_registration)
    app.router.add_post(REGISTER, create_registration)
    for route, path in (served.split("=", 1) for served in getattr(args, "serve", None) or ()):
        app.router.add_get(route, _static_json(Path(path).read_bytes()))
    return app


def _static_json(body: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handler


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve", action="append", metavar="ROUTE=FILE", help="serve FILE (JSON) at GET ROUTE")


if __name__ == "__main__":
    raise SystemExit(server_main(__doc__ or "", build_app, add_arguments=_arguments))
