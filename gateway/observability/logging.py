"""structlog, configured once: JSON lines in production, console on a TTY; secrets never rendered."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, Literal

import structlog

from ..jsonutil import dumps
from .clock import utc_now

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# SECURITY: defence in depth — keys whose values are secrets are masked even if a caller passes them.
_SECRET_KEYS = frozenset(
    {"authorization", "token", "access_token", "client_secret", "password", "private_key", "assertion",
     "client_assertion", "software_statement", "body", "cookie", "set-cookie"}
)
# A compact JWS/JWT anywhere in a string value (header.payload.signature, base64url).
_JWS_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_PEM_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_PEM_PREFIX = "-----BEGIN "
"""The fixed start of `_PEM_RE`: a string without it cannot match."""




def _json_line(event: Any, **_: Any) -> str:
    # orjson, as structlog's performance guide recommends; anything it cannot encode is rendered with str(),
    # and client text it refuses (a lone surrogate, a huge integer) is escaped, never raised.
    return dumps(event, default=str).decode("utf-8")


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask secret-named keys and JWS/PEM-looking strings in every log event.

    Every line passes here (the request line with every request at `info`): a value is only rewritten when it is
    masked, and the private-key pattern is searched for only in a string holding its fixed prefix (a plain
    substring test, much cheaper than the search that must follow it)."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            if _PEM_PREFIX in value and _PEM_RE.search(value):
                event_dict[key] = "[redacted: private key]"
            elif "eyJ" in value:
                event_dict[key] = _JWS_RE.sub("[redacted: jws]", value)
    return event_dict


def add_timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`timestamp`: the current UTC time as structlog's `TimeStamper(fmt="iso", utc=True)` writes it
    (`datetime.isoformat()`, `Z` for `+00:00`: `2026-12-06T14:54:06.572268Z`, no fraction in a whole second), at
    a third of its cost (the request line with every request at `info`)."""
    text, micro = utc_now()
    event_dict["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
    return event_dict


REQUEST_IDS: ContextVar[tuple[str, str] | None] = ContextVar("dcr_gateway_request_ids", default=None)
"""The (interaction_id, request_id) of the request being handled: set by the public handler for the request's
duration, added to every line logged meanwhile (`merge_request_ids`). One variable set and reset per request, where
structlog's `bind_contextvars` would set and reset one per key; structlog's own context variables still work."""


def merge_request_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`interaction_id` and `request_id` of the request being handled, unless the line names its own."""
    ids = REQUEST_IDS.get()
    if ids is not None:
        event_dict.setdefault("interaction_id", ids[0])
        event_dict.setdefault("request_id", ids[1])
    return event_dict


def configure_logging(fmt: Literal["json", "console", "auto"] = "auto", level: str = "info") -> None:
    """Configure structlog (and route stdlib logging through the same output) once per process."""
    if fmt == "auto":
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_request_ids,
            structlog.processors.add_log_level,
            add_timestamp,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write per line (message + newline together): workers sharing stdout never interleave halves.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Library loggers (aiohttp, asyncio) at warning and above, as one line each on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").disabled = True


class _Logger:
    """structlog's lazy logger for one component (`structlog.get_logger(component=name)`), with one shortcut.

    Once structlog caches the logger it assembles (`cache_logger_on_first_use`, as configure_logging sets it), a
    method looked up on the proxy is the cached logger's for good; it is kept here, so later calls find it as an
    attribute instead of going through the proxy's `__getattr__` and `bind()` every time (about 10k instructions
    a call, filtered levels included: one request line per request). Before configuration (or with caching off)
    nothing is kept and every call asks the proxy, as structlog does, so a later configuration applies."""

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(component=name)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._proxy, name)
        # `bind` itself is the proxy's own method until its first use replaces it: never kept.
        if name != "bind" and structlog.get_config()["cache_logger_on_first_use"]:
            setattr(self, name, value)
        return value


def get_logger(name: str) -> Any:
    """A structlog logger bound to a component name."""
    return _Logger(name)  # stays lazy: configuration may come later
