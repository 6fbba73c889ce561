"""Refusals the sandbox answers with, shaped by protocol (RFC 6749 §5.2, RFC 6750 §3, RFC 7591 §3.2.2)."""

from __future__ import annotations

from typing import Final

from ..errors import GatewayError

REALM: Final = "dcr-sandbox"
BASIC_CHALLENGE: Final = f'Basic realm="{REALM}"'


def _quoted(text: str) -> str:
    """A safe RFC 9110 quoted-string body: no quotes, backslashes or control characters."""
    return "".join(c for c in text if c not in '"\\' and c.isprintable())


def oauth_error(error: str, description: str, *, status: int = 400) -> GatewayError:
    """A token endpoint error (RFC 6749 §5.2): invalid_request, unsupported_grant_type, invalid_scope…"""
    return GatewayError(status, error, description)


def invalid_client(description: str) -> GatewayError:
    """401 invalid_client with a Basic challenge (RFC 6749 §5.2; RFC 9110 §11.6.1 requires the header)."""
    return GatewayError(401, "invalid_client", description, headers={"WWW-Authenticate": BASIC_CHALLENGE})


def registration_error(error: str, description: str) -> GatewayError:
    """400 with an RFC 7591 §3.2.2 error code (invalid_client_metadata, invalid_redirect_uri, …)."""
    return GatewayError(400, error, description[:500])


def invalid_token(description: str, *, missing: bool = False) -> GatewayError:
    """401 with an RFC 6750 §3 Bearer challenge; no error code in the header when no token was sent (§3.1)."""
    challenge = f'Bearer realm="{REALM}"'
    if not missing:
        challenge += f', error="invalid_token", error_description="{_quoted(description)}"'
    return GatewayError(401, "invalid_token", description, headers={"WWW-Authenticate": challenge})


def forbidden(description: str) -> GatewayError:
    """403: a valid token that may not act on this client (RFC 7592 §2, OB 403Error)."""
    return GatewayError(403, "access_denied", description)


def method_not_allowed(description: str, allow: str) -> GatewayError:
    """405 with an Allow header (RFC 9110 §15.5.6)."""
    return GatewayError(405, "method_not_allowed", description, headers={"Allow": allow})


def bad_request(description: str) -> GatewayError:
    """400 invalid_request for the developer portal."""
    return GatewayError(400, "invalid_request", description)


def not_found(description: str) -> GatewayError:
    """404 for an unknown portal resource."""
    return GatewayError(404, "not_found", description)
