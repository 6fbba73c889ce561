"""Playground fixtures: the real sandbox (with its playground) behind a real gateway running the shipped policies.

In process (`playground`): the sandbox tests' `bank_factory`, so the page's API is driven over HTTP on
127.0.0.1. As a process (`served`): `python -m gateway serve` on free loopback ports with a copy of the shipped
config.yaml, as `make run` starts it — what the browser test drives.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from gateway.sandbox import examples
from gateway.sandbox.examples import moved_config
from gateway.sandbox.samples import LANGUAGES, Language
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


TOOLCHAINS: Final = {
    "curl": ("curl", "curl"),
    "ruby": ("ruby", "ruby"),
    "python": (sys.executable, "python3"),
    "php": ("php", "php-cli php-curl"),
    "java": ("java", "default-jdk-headless"),
    "node": ("node", "nodejs"),
    "go": ("go", "golang-go"),
}
"""Per runnable language, its program and the Debian packages that bring it (.ci/run installs them). Swift has no
Debian toolchain: its sample is checked structurally (tests/playground/test_snippets.py)."""
RUNNABLE: Final = tuple(TOOLCHAINS)
SAMPLE_TIMEOUT = 120  # seconds for one run: Java compiles the file in memory, Go builds it; not a measurement


@functools.cache
def _php_has_curl() -> bool:
    done = subprocess.run(["php", "-r", 'exit(function_exists("curl_init") ? 0 : 1);'], capture_output=True,
                          timeout=30, check=False)
    return done.returncode == 0


def require_toolchain(lang: str) -> None:
    """Skip (fail in CI) when the program that runs `lang`'s samples is missing."""
    program, packages = TOOLCHAINS[lang]
    require(shutil.which(program) is not None, f"{program} (apt-get install {packages})")
    if lang == "php":
        require(_php_has_curl(), "PHP's curl extension (apt-get install php-curl)")


@functools.cache
def _go_dirs() -> Path:
    """A writable GOCACHE and GOPATH for the whole test run (removed at exit): `go run` builds into them."""
    root = Path(tempfile.mkdtemp(prefix="dcr-samples-go-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def snippet_env() -> dict[str, str]:
    """The environment samples run in: no proxy variables, so loopback calls stay on loopback; Go builds in a
    temporary cache with the local toolchain only and downloads nothing (GOTOOLCHAIN=local, GOPROXY=off)."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES and not k.startswith("DCRGW_")}
    go = _go_dirs()
    env.update(GOCACHE=str(go / "cache"), GOPATH=str(go / "path"), GOTOOLCHAIN="local", GOPROXY="off",
               GOFLAGS="", GOTELEMETRY="off")
    return env


def sample_language(lang: str) -> Language:
    """The `LANGUAGES` entry of `lang`."""
    return next(language for language in LANGUAGES if language.key == lang)


def snippet_command(lang: str, code: str, workdir: Path) -> list[str]:
    """How a developer runs a sample: curl lines in a POSIX shell; any other saved as `Language.file` in
    `workdir` and run with `Language.run` (its `python3` being this interpreter)."""
    if lang == "curl":
        return ["sh", "-c", code]
    language = sample_language(lang)
    assert language.file is not None and language.run.endswith(language.file)
    (workdir / language.file).write_text(code, encoding="utf-8")
    argv = shlex.split(language.run)
    return [sys.executable, *argv[1:]] if argv[0] == "python3" else argv


def run_sample(lang: str, code: str) -> str:
    """Run a sample as a developer would (blocking); asserts it exits 0 and returns its stdout."""
    require_toolchain(lang)
    with tempfile.TemporaryDirectory(prefix="dcr-sample-") as workdir:
        done = subprocess.run(snippet_command(lang, code, Path(workdir)), cwd=workdir, env=snippet_env(),
                              capture_output=True, timeout=SAMPLE_TIMEOUT, check=False)
    assert done.returncode == 0, (lang, done.stderr.decode(errors="replace"))
    return done.stdout.decode()


async def run_snippet(lang: str, code: str) -> tuple[int, str]:
    """Run a sample as a subprocess (without blocking the servers' event loop); returns (exit code, stdout)."""
    require_toolchain(lang)
    with tempfile.TemporaryDirectory(prefix="dcr-sample-") as workdir:
        proc = await asyncio.create_subprocess_exec(
            *snippet_command(lang, code, Path(workdir)), cwd=workdir, env=snippet_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=SAMPLE_TIMEOUT)
    assert proc.returncode == 0, (lang, err.decode(errors="replace"))
    return proc.returncode, out.decode()


def sample_output(lang: str, stdout: str) -> tuple[int, Any]:
    """(status, JSON body or text) from what any sample prints; curl's `-i` head is read for the status."""
    if lang != "curl":
        return python_output(stdout)
    head, _, body = stdout.partition("\r\n\r\n")
    while head.startswith("HTTP/1.1 100 "):  # an `Expect: 100-continue` curl sent with a large body
        head, _, body = body.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.strip()


def python_output(stdout: str) -> tuple[int, Any]:
    """(status, JSON body or text) from what a sample other than curl prints: the status line, then the body."""
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
