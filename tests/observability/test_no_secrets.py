"""Secrets never appear in the process output: tokens, client secrets, SSAs, JWS bodies, private keys."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.jose import generate_signing_key, sign_jwt
from tests.conftest import SHIPPED_POLICIES, StartServer, free_port

ISSUER = "https://as.secret.test"
REGISTER = "/open-banking/v3.1/register"


async def test_nothing_secret_in_stdout_or_stderr(tmp_path: Path, start_server: StartServer):
    """At debug level, with allowed and denied requests carrying secrets, none of them is printed."""
    key = generate_signing_key("RSA", kid="k1")

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [key.public_jwk(alg="PS256")]})

    async def backend(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"client_id": "client-a", "client_secret": "upstream-secret-never-logged"})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    app.router.add_route("*", REGISTER, backend)
    app.router.add_route("*", REGISTER + "/{cid}", backend)
    app.router.add_post("/oauth2/token", backend)
    upstream = await start_server(app)
    base = str(upstream.make_url("")).rstrip("/")
    public, admin = free_port(), free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"server: {{public: {{port: {public}}}, admin: {{port: {admin}}}}}\n"
        f"upstream: {{url: '{base}'}}\n"
        "logging: {format: json, level: debug}\n"
        "shutdown: {readiness_delay_seconds: 0}\n"
        f"policies: {{dir: '{SHIPPED_POLICIES}', reload_interval_seconds: 0}}\n"
        f"trust: {{token_issuers: {{bank: {{issuer: '{ISSUER}', jwks_uri: '{base}/jwks', token_types: [at+jwt]}}}}}}\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    now = int(time.time())
    token = sign_jwt({"iss": ISSUER, "client_id": "client-a", "iat": now, "exp": now + 300,
                      "jti": str(uuid.uuid4())}, key, "PS256", typ="at+jwt")
    forged = token[:-6] + "AAAAAA"
    ssa = sign_jwt({"iss": "OpenBanking Ltd", "software_id": "s1", "iat": now}, key, "PS256")
    registration = sign_jwt({"iss": "s1", "software_statement": ssa, "jti": str(uuid.uuid4())}, key, "PS256")
    secret = "client-secret-" + uuid.uuid4().hex
    pem = key.to_pem().decode()
    secrets = [token, forged, ssa, registration, secret, pem.splitlines()[1], token.split(".")[2]]
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    async with s.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            url = f"http://127.0.0.1:{public}"
            calls = [
                ("POST", REGISTER, {"Authorization": f"Bearer {token}", "client_id": "client-a",
                                    "Content-Type": "application/jose"}, registration),
                ("POST", REGISTER, {"Authorization": f"Bearer {forged}", "client_id": "client-a",
                                    "Content-Type": "application/jose"}, registration),
                ("GET", REGISTER + "/client-a", {"Authorization": f"Bearer {token}", "client_id": "client-a"}, None),
                ("GET", REGISTER + "/client-b", {"Authorization": f"Bearer {token}", "client_id": "client-a"}, None),
                ("POST", "/oauth2/token", {"Content-Type": "application/x-www-form-urlencoded",
                                           "Authorization": f"Basic {secret}"},
                 f"grant_type=client_credentials&client_id=client-a&client_secret={secret}"),
                ("PUT", REGISTER + "/client-a", {"Authorization": f"Bearer {token}", "client_id": "client-a",
                                                 "Content-Type": "application/jose", "X-Private-Key": pem.replace("\n", " ")},
                 registration),
                ("GET", "/nowhere?access_token=" + token, {"Cookie": f"session={secret}"}, None),
            ]
            for method, path, headers, body in calls:
                async with s.request(method, url + path, headers=headers, data=body) as r:
                    await r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    text = out.decode() + err.decode()
    assert '"event":"decision"' in text.replace(" ", "")  # the audit trail did run
    for value in secrets:
        assert value not in text, f"secret leaked: {value[:12]}…"
