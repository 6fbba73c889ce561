"""UTC time as the audit trail and the log lines write it, its date and time text made once a second."""

from __future__ import annotations

import time

_second: tuple[int, str] = (-1, "")
"""The last whole second formatted, and its `YYYY-MM-DDTHH:MM:SS` text (one tuple: swapped whole, so a thread
never reads one second's number with another's text)."""


def utc_now() -> tuple[str, int]:
    """The current UTC time as (`YYYY-MM-DDTHH:MM:SS`, microseconds), the microseconds truncated as
    `datetime.now()` truncates them: strftime once a second, not once a call (one per request and per line)."""
    global _second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1], micro
