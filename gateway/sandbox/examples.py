"""The OpenAPI document's examples, recorded from real exchanges with the product as `make run` starts it.

`python -m gateway.sandbox.examples [--config config.yaml] [--out FILE]` starts `python -m gateway serve` with a
copy of the config on free 127.0.0.1 ports and a fresh sandbox state directory, walks the bank's DCR flow through
the gateway (a developer app and its token, a TPP key the sandbox hosts, an SSA, a signed registration request)
and records every request and response of the four operations: the successes (201, 200, 204) and the main
refusals (400 invalid_redirect_uri / invalid_client_metadata / invalid_software_statement, 401 with its
WWW-Authenticate challenge, 405, 413, 415). The shipped policies answer another client's ClientId with 401
(`client_ownership`'s default status), so the page's 403 has no recorded example. It writes
`reference/examples.json` (package data), which `openapi.document` embeds for the profile it was recorded with.
The secrets, tokens and keys in it are the sandbox's own, generated for the run and worthless elsewhere.

`tests/sandbox/test_examples.py` records again and compares (`shape`): the status, the header names and the
body's shape (values such as client ids, timestamps and jti differ from run to run), so the committed examples
cannot drift from what the servers answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

from ..config import load_settings
from .cli import registration_claims
from .crypto import SigningKey, generate_key, jwks, sign
from .openapi import EXAMPLES_FILE
from .portal import TPP_JWKS_PATH
from .service import REGISTRATION_PATH, TOKEN_PATH

ITEM_PATH: Final = REGISTRATION_PATH + "/{ClientId}"
REDIRECT: Final = "https://tpp.example.com/callback"
JOSE: Final = "application/jose"
VOLATILE_HEADERS: Final = frozenset({"date", "server", "content-length", "connection", "keep-alive"})
"""Response headers left out of a recording: the server's framing and clock, not the API's."""
LARGE_BODY: Final = 65_537
"""One byte past the shipped policies' body_size limit for POST and PUT (65536): 413."""


@dataclass
class Recorder:
    """Calls the running product and keeps each exchange under its operation and a name."""

    http: aiohttp.ClientSession
    gateway: str
    sandbox: str
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, name: str, summary: str, method: str, path: str, *, token: str | None = None,
                   client_id: str | None = None, body: str | bytes | None = None, content_type: str = JOSE,
                   headers: Mapping[str, str] | None = None, expect: int) -> dict[str, Any]:
        """One call through the gateway, recorded; `path` has the ClientId filled in, `expect` its status."""
        sent: dict[str, str] = {"Accept": "application/json"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if client_id is not None:
            sent["client_id"] = client_id
        if body is not None:
            sent["Content-Type"] = content_type
        sent.update(headers or {})
        async with self.http.request(method, self.gateway + path, data=body, headers=sent,
                                     allow_redirects=False) as r:
            raw = await r.read()
            got = {k: v for k, v in r.headers.items() if k.lower() not in VOLATILE_HEADERS}
            status = r.status
        parsed: Any = json.loads(raw) if raw else None
        if status != expect:
            raise RuntimeError(f"{name}: {method} {path} answered {status}, not {expect}: {raw[:500]!r}")
        operation = method.lower(), REGISTRATION_PATH if path == REGISTRATION_PATH else ITEM_PATH
        request: dict[str, Any] = {"method": method, "path": path, "headers": sent}
        if isinstance(body, str):
            request["body"] = body
        elif body is not None:
            request["body_bytes"] = len(body)  # a body shown by its size (too large, or not text)
        exchange = {"name": name, "summary": summary, "method": operation[0], "path": operation[1],
                    "request": request, "response": {"status": status, "headers": got, "body": parsed}}
        self.exchanges.append(exchange)
        return exchange

    async def _json(self, url: str, **kwargs: Any) -> dict[str, Any]:
        async with self.http.post(url, **kwargs) as r:
            body: dict[str, Any] = await r.json(content_type=None)
            if r.status not in (200, 201):
                raise RuntimeError(f"POST {url} answered {r.status}: {body}")
            return body

    async def app(self, name: str) -> tuple[str, str]:
        """A developer app on the portal (the sandbox port) and a client_credentials token for it."""
        app = await self._json(self.sandbox + "/sandbox/apps", json={"name": name})
        basic = base64.b64encode(f"{app['client_id']}:{app['client_secret']}".encode()).decode()
        token = await self._json(self.gateway + TOKEN_PATH, data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"})
        return str(app["client_id"]), str(token["access_token"])

    async def tpp(self) -> tuple[SigningKey, str]:
        """A TPP signing key whose public JWKS the sandbox hosts, and an SSA naming it."""
        key = generate_key("PS256")
        hosted = await self._json(self.sandbox + TPP_JWKS_PATH, json=jwks([key]))
        ssa = await self._json(self.sandbox + "/sandbox/ssa", json={
            "software_jwks_endpoint": hosted["jwks_uri"], "software_redirect_uris": [REDIRECT],
            "software_client_name": "Example TPP app"})
        return key, str(ssa["software_statement"])

    async def client_token(self, key: SigningKey, client_id: str) -> str:
        """A registered client's own token (a private_key_jwt client assertion)."""
        now = int(time.time())
        assertion = sign(key, {"iss": client_id, "sub": client_id, "aud": self.gateway + TOKEN_PATH, "iat": now,
                               "exp": now + 300, "jti": os.urandom(16).hex()}, typ="JWT")
        token = await self._json(self.gateway + TOKEN_PATH, data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        return str(token["access_token"])


async def walk(gateway: str, sandbox: str, aud: str) -> list[dict[str, Any]]:
    """The recorded flow against a running gateway (`gateway`) and sandbox portal (`sandbox`)."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
        rec = Recorder(http, gateway, sandbox)
        app_id, app_token = await rec.app("example")
        key, ssa = await rec.tpp()

        def request(**overrides: Any) -> str:
            claims = registration_claims(key, ssa, aud=aud)
            claims.update(overrides)
            return sign(key, claims, typ="JWT")

        post = REGISTRATION_PATH
        created = await rec.call(
            "created", "A signed registration request (private_key_jwt): the client, its secret and metadata",
            "POST", post, token=app_token, client_id=app_id, body=request(), expect=201)
        client_id = created["response"]["body"]["client_id"]
        await rec.call(
            "invalid_redirect_uri", "A redirect URI that is not https (and not in the SSA)",
            "POST", post, token=app_token, client_id=app_id,
            body=request(redirect_uris=["http://tpp.example.com/callback"]), expect=400)
        await rec.call(
            "invalid_client_metadata", "A token_endpoint_auth_method the FAPI policy does not allow",
            "POST", post, token=app_token, client_id=app_id,
            body=request(token_endpoint_auth_method="client_secret_basic"), expect=400)  # noqa: S106 (a method)
        forged = sign(key, {"iss": "OpenBanking Ltd", "software_id": "forged"}, typ="JWT")
        await rec.call(
            "invalid_software_statement", "A software statement not signed by a trusted directory",
            "POST", post, token=app_token, client_id=app_id, body=request(software_statement=forged), expect=400)
        await rec.call(
            "no_token", "No access token", "POST", post, client_id=app_id, body=request(), expect=401)
        await rec.call(
            "request_too_large", "A body past the policy's body_size limit (65536 bytes)",
            "POST", post, token=app_token, client_id=app_id, body=b"a" * LARGE_BODY, expect=413)
        await rec.call(
            "content_encoding", "A gzip-encoded body: the gateway inspects only plain bodies",
            "POST", post, token=app_token, client_id=app_id, body=gzip.compress(request().encode()),
            headers={"Content-Encoding": "gzip"}, expect=415)

        item = f"{REGISTRATION_PATH}/{client_id}"
        token = await rec.client_token(key, client_id)
        await rec.call("read", "The client's own registration", "GET", item, token=token, client_id=client_id,
                       expect=200)
        await rec.call("updated", "A new signed request carrying every claim (here a narrower scope)",
                       "PUT", item, token=token, client_id=client_id, body=request(scope="accounts"), expect=200)
        await rec.call("invalid_redirect_uri", "A redirect URI the SSA does not list", "PUT", item, token=token,
                       client_id=client_id, body=request(redirect_uris=["https://evil.example/cb"]), expect=400)

        other = await rec.call(
            "created", "", "POST", post, token=app_token, client_id=app_id, body=request(), expect=201)
        rec.exchanges.remove(other)  # a second client, to be refused another client's registration
        other_id = other["response"]["body"]["client_id"]
        other_token = await rec.client_token(key, other_id)
        # The shipped policies' client_ownership answers another client's ClientId itself: 401, and the token
        # is revoked (its `status: 403` would make it the page's 403; the bank behind it says 403 too).
        await rec.call("another_client", "Another client's ClientId: 401 (client_ownership), the token revoked",
                       "GET", item, token=other_token, client_id=other_id, expect=401)
        await rec.call("method_not_allowed", "A developer-portal app cannot be deleted through DCR", "DELETE",
                       f"{REGISTRATION_PATH}/{app_id}", token=app_token, client_id=app_id, expect=405)

        throwaway_id, throwaway = await rec.app("example-unknown")
        unknown = f"{REGISTRATION_PATH}/unknown-client-id"
        await rec.call("unknown_client", "An unknown ClientId: 401, and the token is revoked at once", "GET",
                       unknown, token=throwaway, client_id=throwaway_id, expect=401)
        await rec.call("no_token", "No access token", "PUT", item, client_id=client_id, body=request(),
                       expect=401)
        await rec.call("deleted", "The client's own registration, and every token issued to it", "DELETE", item,
                       token=token, client_id=client_id, expect=204)
        await rec.call("revoked_token", "The deleted client's token: revoked", "DELETE", item, token=token,
                       client_id=client_id, expect=401)
        return rec.exchanges


# The product as `make run` starts it, on other ports -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Served:
    """A running `python -m gateway serve`: its public URL, its sandbox's, and the registration audience."""

    gateway: str
    sandbox: str
    admin: str
    profile: str


def moved_config(config: Path, state_dir: Path, public: int, admin: int, sandbox: int) -> dict[str, Any]:
    """The config file `config` with its listeners on 127.0.0.1 `public`, `admin` and `sandbox` (every URL naming
    the old public or sandbox address too), `state_dir` as the sandbox's state and its policy directory absolute:
    the product as `make run` starts it, on other ports."""
    settings = load_settings(str(config))
    data: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    old = {f"{settings.server.public.host}:{settings.server.public.port}": f"127.0.0.1:{public}",
           f"{settings.sandbox.listen.host}:{settings.sandbox.listen.port}": f"127.0.0.1:{sandbox}"}

    def moved(value: Any) -> Any:
        if isinstance(value, str):
            for before, after in old.items():
                value = value.replace(before, after)
            return value
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        return value

    data = moved(data)
    data.setdefault("server", {})["public"] = {"host": "127.0.0.1", "port": public}
    data["server"]["admin"] = {"host": "127.0.0.1", "port": admin}
    data.setdefault("sandbox", {})["listen"] = {"host": "127.0.0.1", "port": sandbox}
    data["sandbox"]["state_dir"] = str(state_dir)
    data.setdefault("policies", {})["dir"] = str(settings.resolve_path(settings.policies.dir).resolve())
    data["shutdown"] = {"readiness_delay_seconds": 0, "drain_timeout_seconds": 5}
    return data


def status_of(url: str) -> int:
    """The HTTP status of a GET of `url` (no proxy; 0 when nothing answers)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return 0


@contextmanager
def running(config: Path, log: Path, ready: Callable[[], bool], cwd: Path | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m gateway serve --config CONFIG` (output appended to `log`, no DCRGW_ variables) until `ready()`
    (bounded: 60 s); SIGTERM at exit, then kill if it has not stopped within 30 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],  # noqa: S603
                                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start:\n" + log.read_text(errors="replace")[-4000:])
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def serving(config: Path) -> Iterator[Served]:
    """The product with `config` on free 127.0.0.1 ports and a fresh state directory, until it is ready."""
    with tempfile.TemporaryDirectory(prefix="dcrgw-examples-") as tmp:
        public, admin, sandbox = _free_port(), _free_port(), _free_port()
        data = moved_config(config, Path(tmp) / "state", public, admin, sandbox)
        data["logging"] = {"format": "json", "level": "warning"}
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        served = Served(f"http://127.0.0.1:{public}", f"http://127.0.0.1:{sandbox}", f"http://127.0.0.1:{admin}",
                        load_settings(str(path)).policies.profile)
        with running(path, Path(tmp) / "serve.log", lambda: status_of(served.admin + "/readyz") == 200
                     and status_of(served.sandbox + "/.well-known/openid-configuration") == 200):
            yield served


def record(config: Path) -> dict[str, Any]:
    """Start the product with `config` (on other ports), walk the flow, return the examples document."""
    with serving(config) as served:
        discovery = json.loads(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            served.sandbox + "/.well-known/openid-configuration", timeout=5).read())
        exchanges = asyncio.run(walk(served.gateway, served.sandbox, str(discovery["issuer"])))
    return {
        "description": "Real exchanges with the gateway and its sandbox bank, recorded by "
                       "`python -m gateway.sandbox.examples` (gateway/sandbox/examples.py); the tokens, keys and "
                       "secrets are the sandbox's, generated for that run.",
        "profile": served.profile,
        "exchanges": exchanges,
    }


def render(examples: Mapping[str, Any]) -> str:
    """The examples file's text: indented JSON, one trailing newline."""
    return json.dumps(examples, indent=2, ensure_ascii=False) + "\n"


def shape(value: Any) -> Any:
    """What a recording is compared on: the JSON structure with each leaf's type, and an `error` code itself."""
    if isinstance(value, dict):
        return {k: (v if k == "error" else shape(v)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted({json.dumps(shape(v), sort_keys=True) for v in value})
    return type(value).__name__


def signature(exchange: Mapping[str, Any]) -> tuple[Any, ...]:
    """(method, path, name, status, response header names, body shape) of a recorded exchange."""
    response = exchange["response"]
    return (exchange["method"], exchange["path"], exchange["name"], response["status"],
            tuple(sorted(k.lower() for k in response["headers"])), json.dumps(shape(response["body"]),
                                                                                sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    """Record the examples and write them (default: the package's reference/examples.json)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.sandbox.examples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="the config to start the product with (default ./config.yaml); run on other ports")
    parser.add_argument("--out", type=Path, default=EXAMPLES_FILE, help=f"where to write (default {EXAMPLES_FILE})")
    args = parser.parse_args(argv)
    try:
        examples = record(args.config)
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(render(examples), encoding="utf-8")
    print(f"{args.out}: {len(examples['exchanges'])} exchanges", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
