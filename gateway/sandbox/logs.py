"""Lazy loggers for the sandbox: configuration is looked up at first use, not at import time.

(`gateway.observability.logging.get_logger` binds at import, which freezes structlog's default
configuration into loggers of modules imported before `configure_logging` — e.g. by the CLI parser.)
"""

from __future__ import annotations

from typing import Any

import structlog


def get_logger(name: str) -> Any:
    """A structlog logger named `name`, with `component=name` on every event."""
    return structlog.get_logger(name, component=name)
