"""The sandbox as its own process (`python -m gateway sandbox serve`): kill -9 loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.sandbox.conftest import REDIRECT, REGISTER, tpp_key, unverified

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _wait_ready(
    http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()  # noqa: ASYNC240 (failure path)
        try:
            async with http.get(url + "/.well-known/openid-configuration") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("sandbox did not start:\n" + log.read_text())  # noqa: ASYNC240


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return await resp.json(content_type=None)


async def test_kill_9_then_restart_keeps_registration(tmp_path: Path) -> None:
    """Register with a sandbox process, SIGKILL it, restart it (plain `sandbox`): the client still works."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{public_url: '{url}'}}\n"
        "logging: {format: json, level: info}\n"
        f"sandbox: {{listen: {{host: 127.0.0.1, port: {port}}}, state_dir: state}}\n"
    )
    log = tmp_path / "sandbox.log"
    tpp = tpp_key("process")
    async with aiohttp.ClientSession() as http:
        proc = _start(["sandbox", "serve", "--config", str(config)], log)
        try:
            await _wait_ready(http, url, proc, log)
            async with http.post(url + "/sandbox/apps", json={"name": "p"}) as r:
                app = await _json(r)
            form = {
                "grant_type": "client_credentials",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
            }
            async with http.post(url + "/oauth2/token", data=form) as r:
                app_token = (await _json(r))["access_token"]
            async with http.post(url + "/sandbox/ssa", json={"software_redirect_uris": [REDIRECT]}) as r:
                ssa = (await _json(r))["software_statement"]
            software_id = unverified(ssa)[1]["software_id"]
            now = int(time.time())
            claims = {
                "iss": software_id,
                "iat": now,
                "exp": now + 300,
                "aud": "bank",
                "jti": str(uuid.uuid4()),
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "client_secret_post",
                "grant_types": ["client_credentials"],
                "software_statement": ssa,
                "application_type": "web",
                "id_token_signed_response_alg": "PS256",
                "request_object_signing_alg": "PS256",
            }
            async with http.post(
                url + REGISTER,
                data=tpp.sign(claims),
                headers={"Authorization": f"Bearer {app_token}", "Content-Type": "application/jose"},
            ) as r:
                assert r.status == 201
                created = await _json(r)
            form = {
                "grant_type": "client_credentials",
                "client_id": created["client_id"],
                "client_secret": created["client_secret"],
            }
            async with http.post(url + "/oauth2/token", data=form) as r:
                token = (await _json(r))["access_token"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

        proc = _start(["sandbox", "--config", str(config)], log)
        try:
            await _wait_ready(http, url, proc, log)
            async with http.get(
                url + f"{REGISTER}/{created['client_id']}", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 200, await r.text()
                got = await _json(r)
            assert got["client_id"] == created["client_id"]
            assert got["software_statement"] == ssa
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()

    # Nothing secret reached the log: no client secret, no access token, no SSA or request JWS.
    text = log.read_text()
    for secret in (app["client_secret"], created["client_secret"], app_token, token, ssa, ssa.split(".")[2]):
        assert secret not in text
    assert created["client_id"] in text  # client ids are logged
