"""Loopback-only networking helpers: free ports, the loopback guard, and readiness polling."""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
"""Every bench server binds here and every request goes here."""

_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
# No proxies from the environment: a bench request must never leave the machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (held open together, so never the same twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def require_loopback(url: str) -> str:
    """Return `url` unchanged if its host is a literal 127.0.0.0/8 address, else raise ValueError."""
    host = urlsplit(url).hostname or ""
    try:
        if ipaddress.ip_address(host) in _LOOPBACK_NET:
            return url
    except ValueError:
        pass
    raise ValueError(f"bench refuses a non-loopback address: {url!r}")


def fetch(
    url: str, method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """One HTTP request to a loopback URL; returns (status, body), HTTP errors included."""
    req = urllib.request.Request(require_loopback(url), data=body, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def wait_until(
    url: str,
    *,
    expect: int = 200,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    alive: Callable[[], bool] = lambda: True,
    timeout: float = 20.0,
) -> None:
    """Poll `url` until it answers `expect`; raise RuntimeError when `alive()` turns false or on timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process exited before {url} was ready ({last})")
        try:
            status, _ = fetch(url, method, headers, body, timeout=1.0)
        except (OSError, urllib.error.URLError) as exc:
            last = str(getattr(exc, "reason", exc))
        else:
            if status == expect:
                return
            last = f"status {status}, expected {expect}"
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s ({last})")
