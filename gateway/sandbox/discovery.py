"""`GET /.well-known/openid-configuration` (OIDC Discovery §3, RFC 8414) and `GET /jwks`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .bodies import json_response
from .client_auth import AUTH_METHODS
from .crypto import ALLOWED_ALGS, jwks
from .metadata import GRANT_TYPES, RESPONSE_TYPES, SCOPES
from .service import SANDBOX, SandboxConfig


def openid_configuration(cfg: SandboxConfig) -> dict[str, Any]:
    """The discovery document; token and registration endpoints are the gateway's public URL."""
    algs = list(ALLOWED_ALGS)
    return {
        "issuer": cfg.issuer,
        "token_endpoint": cfg.token_endpoint,
        "registration_endpoint": cfg.registration_endpoint,
        "jwks_uri": cfg.jwks_uri,
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),  # what client_auth implements
        "tls_client_certificate_bound_access_tokens": True,  # RFC 8705 §3.3: cnf.x5t#S256 over mutual TLS
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "id_token_signing_alg_values_supported": algs,
        "request_object_signing_alg_values_supported": algs,
        "response_types_supported": list(RESPONSE_TYPES),
        "grant_types_supported": list(GRANT_TYPES),
        "scopes_supported": list(SCOPES),
        "subject_types_supported": ["public"],
    }


async def discovery(request: web.Request) -> web.Response:
    """The OpenID Provider metadata."""
    return json_response(openid_configuration(request.app[SANDBOX].config))


async def token_jwks(request: web.Request) -> web.Response:
    """The public keys that verify the sandbox's access tokens."""
    return json_response(jwks([request.app[SANDBOX].resources.keys.token]))
