"""Playground fixtures: the real sandbox (with its playground) behind a real gateway running the shipped policies.

In process (`playground`): the sandbox tests' `bank_factory`, so the page's API is driven over HTTP on
127.0.0.1. As a process (`served`): `python -m gateway serve` on free loopback ports with a copy of the shipped
config.yaml, as `make run` starts it — what the browser test drives.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.sandbox import examples
from gateway.sandbox.examples import moved_config
from tests.conftest import ROOT, free_port
from tests.sandbox.conftest import Bank, BankFactory, bank_factory, seeded_keys, tpp_jwks  # noqa: F401 (fixtures)

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def require(available: bool, what: str) -> None:
    """Skip when `what` is missing on a developer's machine; fail in CI (CI=true), where it must be installed."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing, and CI must run this test (.ci/run installs it)")
    pytest.skip(f"{what} is missing")


def snippet_env() -> dict[str, str]:
    """The environment snippets run in: no proxy variables, so loopback calls stay on loopback."""
    return {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES and not k.startswith("DCRGW_")}


def snippet_command(lang: str, code: str) -> list[str]:
    """How a developer runs a snippet: curl lines in a POSIX shell, Python with this interpreter."""
    return ["sh", "-c", code] if lang == "curl" else [sys.executable, "-c", code]


async def run_snippet(lang: str, code: str) -> tuple[int, str]:
    """Run a snippet as a subprocess (without blocking the servers' event loop); returns (exit code, stdout)."""
    if lang == "curl":
        require(shutil.which("curl") is not None, "curl")
    proc = await asyncio.create_subprocess_exec(
        *snippet_command(lang, code), env=snippet_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out.decode()


def python_output(stdout: str) -> tuple[int, Any]:
    """(status, JSON body or text) from what a Python snippet prints: the status line, then the body."""
    status, _, rest = stdout.partition("\n")
    try:
        return int(status), json.loads(rest)
    except ValueError:
        return int(status), rest.strip()


@dataclass
class Report:
    """What /playground/api/send answered: the request, the response and the snippets."""

    data: dict[str, Any]

    @property
    def status(self) -> int:
        """The status the called service answered."""
        return int(self.data["response"]["status"])

    @property
    def json(self) -> Any:
        """The called service's body as JSON (None when empty)."""
        body = self.data["response"]["body"]
        return json.loads(body) if body else None

    def header(self, name: str) -> str | None:
        """A response header of the called service."""
        for key, value in self.data["response"]["headers"]:
            if key.lower() == name.lower():
                return str(value)
        return None


@dataclass
class PlaygroundClient:
    """Speaks to the playground's API as its page does."""

    bank: Bank

    @property
    def url(self) -> str:
        """The sandbox listener (the playground's origin)."""
        return self.bank.sandbox_url

    async def api(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """Call the playground itself; returns (status, JSON body, headers)."""
        data = json.dumps(body) if body is not None else None
        async with self.bank.http.request(
            method, self.url + path, data=data, headers={**JSON_HEADERS, **(headers or {})}
        ) as r:
            raw = await r.read()
            return r.status, json.loads(raw) if raw else None, dict(r.headers)

    async def send(
        self, target: str, method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None,
        *, send: bool = True,
    ) -> Report:
        """One call through the playground's proxy (asserting the playground itself accepted it)."""
        status, data, _ = await self.api("POST", "/playground/api/send", {
            "target": target, "method": method, "path": path, "headers": headers or {}, "body": body, "send": send,
        })
        assert status == 200, data
        return Report(data)


@pytest.fixture
async def playground(bank_factory: BankFactory) -> PlaygroundClient:  # noqa: F811 (the imported fixture)
    """The sandbox and its playground behind a gateway with the shipped policies."""
    return PlaygroundClient(await bank_factory(shipped_policies=True))


# The whole thing as a process, like `make run` ---------------------------------------------------------


@dataclass
class Served:
    """A running `python -m gateway serve` with the sandbox and its playground."""

    gateway_url: str
    sandbox_url: str
    admin_url: str
    log: Path


def served_config(state_dir: Path, public: int, admin: int, sandbox: int) -> dict[str, Any]:
    """The shipped config.yaml on other loopback ports, with a fresh state directory and the shipped policies."""
    data = moved_config(ROOT / "config.yaml", state_dir, public, admin, sandbox)
    data["policies"]["dir"] = str(ROOT / "policies")
    data["logging"] = {"format": "json", "level": "info"}
    assert data["sandbox"]["enabled"] is True and data["sandbox"].get("playground", True) is True
    assert ":8080" not in json.dumps(data) and ":8081" not in json.dumps(data)
    return data


def status_of(url: str) -> int:
    """The HTTP status of a GET of `url` (no proxy; 0 when nothing answers)."""
    return examples.status_of(url)


@contextmanager
def serving(config: Path, log: Path, ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m gateway serve --config CONFIG` (output appended to `log`, no DCRGW_ variables) until `ready()`
    (bounded: 60 s); SIGTERM at exit, then kill if it has not stopped within 30 s."""
    with examples.running(config, log, ready, cwd=ROOT) as proc:
        yield proc


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`python -m gateway serve` with the shipped config and policies on free loopback ports."""
    tmp = tmp_path_factory.mktemp("served")
    public, admin, sandbox = free_port(), free_port(), free_port()
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(served_config(tmp / "state", public, admin, sandbox)))
    running = Served(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{sandbox}", f"http://127.0.0.1:{admin}",
                     tmp / "gateway.log")
    with serving(config, running.log, lambda: status_of(running.admin_url + "/readyz") == 200
                 and status_of(running.sandbox_url + "/playground/api/config") == 200):
        yield running
