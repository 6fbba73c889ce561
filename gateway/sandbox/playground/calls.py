"""The calls the playground may make for the page: an explicit list, so its proxy is no open relay.

Gateway calls go to `server.public_url` — through the gateway and its policies, never straight to the
backend. Sandbox calls (developer portal, the playground's own key sessions) go to the sandbox itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Target = Literal["gateway", "sandbox"]

_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a field value may hold SP and HTAB, no other CTL

FORWARDED_HEADERS: Final = ("Authorization", "client_id", "Content-Type", "Accept", "x-fapi-interaction-id")
"""The request headers a developer may set (case-insensitive); anything else is refused, not dropped, so the
request shown and its snippets are exactly what is sent."""


@dataclass(frozen=True, slots=True)
class AllowedCall:
    """A target, the methods and the path (a full-match pattern) of a call the page may make."""

    target: Target
    methods: frozenset[str]
    pattern: re.Pattern[str]
    route: str
    """The path template, for logs (never the concrete path: it may hold a session id)."""


def _call(target: Target, methods: str, pattern: str, route: str) -> AllowedCall:
    return AllowedCall(target, frozenset(methods.split()), re.compile(pattern), route)


# SECURITY: ids in paths are restricted to unreserved characters (RFC 3986 §2.3) and bounded, so a path can
# never climb (`..`), carry a query or reach another route.
ALLOWED_CALLS: Final = (
    _call("sandbox", "POST", r"/sandbox/apps", "/sandbox/apps"),
    _call("sandbox", "POST", r"/sandbox/ssa", "/sandbox/ssa"),
    _call("sandbox", "POST", r"/playground/api/sessions", "/playground/api/sessions"),
    _call("sandbox", "POST", r"/playground/api/sessions/[A-Za-z0-9_-]{1,64}/sign",
          "/playground/api/sessions/{session_id}/sign"),
    _call("gateway", "POST", r"/oauth2/token", "/oauth2/token"),
    _call("gateway", "POST", r"/open-banking/v3\.1/register", "/open-banking/v3.1/register"),
    _call("gateway", "GET PUT DELETE", r"/open-banking/v3\.1/register/[A-Za-z0-9._~-]{1,256}",
          "/open-banking/v3.1/register/{ClientId}"),
)


def allowed_call(target: str, method: str, path: str) -> AllowedCall | None:
    """The allowed call matching target, method and path, or None."""
    for call in ALLOWED_CALLS:
        if call.target == target and method in call.methods and call.pattern.fullmatch(path):
            return call
    return None


def canonical_header(name: str) -> str | None:
    """The allowed spelling of a request header name, or None when the page may not set it."""
    lowered = name.lower()
    for allowed in FORWARDED_HEADERS:
        if allowed.lower() == lowered:
            return allowed
    return None


def header_problem(name: str, value: object) -> str | None:
    """Why the header `name: value` cannot be set from a sandbox page (None when it can)."""
    if canonical_header(name) is None:
        return f"header {name!r} cannot be set from the playground"
    if not isinstance(value, str) or _CONTROL.search(value):
        return f"header {name!r} must be a string without control characters (RFC 9110 §5.5)"
    return None
