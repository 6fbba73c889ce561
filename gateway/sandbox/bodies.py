"""Reading request bodies with a hard size limit, and writing JSON responses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import GatewayError
from ..http.inbound import BodyLimits
from ..http.listener import LIMITS
from ..http.proxy import read_body
from ..jsonutil import dumps
from .jsonvalues import JsonValueError, loads

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""Headers for responses that carry credentials (RFC 6749 §5.1, RFC 7591 §3.2.1)."""


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds `limit` bytes (declared or streamed); 408 when it stalls
    (the listener's `server.timeouts`), as the gateway reads bodies (`proxy.read_body`)."""
    listener = request.app.get(LIMITS)
    idle, total = (listener.body_idle, listener.body_total) if listener is not None else (10.0, 30.0)
    try:
        return await read_body(request, BodyLimits(limit, idle, total))
    except GatewayError as err:
        if err.status == 413:
            return None
        raise


def json_response(data: Any, *, status: int = 200, no_store: bool = False) -> web.Response:
    """A compact JSON response; `no_store` for anything carrying a token or secret."""
    return encoded_json_response(dumps(data), status=status, no_store=no_store)


def encoded_json_response(body: bytes, *, status: int = 200, no_store: bool = False) -> web.Response:
    """A JSON response from bytes `dumps` made earlier (before a write the answer must not fail after)."""
    return web.Response(
        status=status, body=body, content_type="application/json", headers=NO_STORE if no_store else None
    )


def json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; 400 with a clear description otherwise."""
    from .errors import bad_request

    try:
        value = loads(body)
    except JsonValueError as exc:
        raise bad_request(f"the body holds a value the sandbox refuses: {exc}") from None
    except ValueError:  # UnicodeDecodeError included
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object")
    return value
