"""Errors that become spec-shaped HTTP responses (RFC 6750 / RFC 7591 / gateway JSON)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from .jsonutil import dumps
from .reasons import BodyRefusals, Reason


class GatewayError(Exception):
    """A refusal or upstream failure with the status, protocol error code and a safe description."""

    __slots__ = ("close", "description", "error", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(description)
        self.close = close
        """The connection cannot carry another request (its body was not read to the end)."""
        self.status = status
        self.error = error
        self.description = description
        self.reason = reason or error
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        """RFC 7591 §3.2.2 / RFC 6749 §5.2 shaped body."""
        return {"error": self.error, "error_description": self.description}


def error_response(err: GatewayError) -> web.Response:
    """The JSON response for an error; never cached (RFC 7591 §3.2.2 examples)."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **err.headers}
    response = web.Response(
        status=err.status, body=dumps(err.body()), content_type="application/json", headers=headers
    )
    if err.close:
        response.force_close()
    return response


def refused(reason: Reason, description: str, *, close: bool = False) -> GatewayError:
    """The error for a refusal of `gateway.reasons.BodyRefusals`, answered as it declares."""
    return GatewayError(reason.status, reason.error, description, reason=reason.name, close=close)


def payload_too_large(limit: int) -> GatewayError:
    """413 for a body over the configured limit."""
    return refused(BodyRefusals.body_too_large, f"request body exceeds {limit} bytes", close=True)


def body_timeout() -> GatewayError:
    """408 when the client's body stalls (`server.timeouts.body_idle_seconds`) or is too slow in all
    (`server.timeouts.body_total_seconds`); the connection is closed (RFC 9110 §15.5.9)."""
    return refused(BodyRefusals.body_timeout, "request body not received in time", close=True)


def body_incomplete() -> GatewayError:
    """400 when the client's body breaks off or is malformed (a short chunked body, a dropped connection)."""
    return refused(BodyRefusals.body_incomplete, "request body incomplete or malformed", close=True)


def bad_gateway(description: str = "upstream unavailable") -> GatewayError:
    """502 when the upstream cannot be reached or answers garbage."""
    return refused(BodyRefusals.upstream_unavailable, description)


def gateway_timeout() -> GatewayError:
    """504 when the upstream does not answer in time."""
    return refused(BodyRefusals.upstream_timeout, "upstream did not answer in time")


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP errors (404, 405, 413…) as JSON error bodies, keeping `Allow`."""
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
    return web.Response(
        status=exc.status,
        body=dumps({"error": error, "error_description": exc.reason}),
        content_type="application/json",
        headers=headers,
    )


def server_error_response() -> web.Response:
    """A 500 that says nothing about the fault (the details are logged, never sent)."""
    return web.Response(
        status=500,
        body=dumps({"error": "server_error", "error_description": "internal error"}),
        content_type="application/json",
    )
