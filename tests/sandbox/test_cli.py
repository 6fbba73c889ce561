"""`dcr-gateway sandbox …` commands produce outputs that work against a running sandbox behind the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk

from gateway.cli import build_parser
from tests.conftest import free_port
from tests.sandbox.conftest import REGISTER, Bank, unverified, verify_with_jwks

ROOT = Path(__file__).resolve().parents[2]


def write_config(bank: Bank, path: Path) -> Path:
    """A config file for the CLI pointing at the bank's sandbox (port, state_dir) and gateway URL."""
    sb = bank.settings.sandbox
    path.write_text(
        f"server: {{public_url: '{bank.gateway_url}'}}\n"
        f"sandbox: {{listen: {{host: 127.0.0.1, port: {sb.listen.port}}}, state_dir: '{sb.state_dir}'}}\n"
    )
    return path


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run `python -m gateway …` (the dcr-gateway entry point) as a subprocess; (code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def config(bank: Bank, tmp_path: Path) -> Path:
    """The CLI's config file for `bank`."""
    return write_config(bank, tmp_path / "config.yaml")


async def test_create_app(bank: Bank, config: Path) -> None:
    """create-app writes straight to the store; the running sandbox accepts the printed credentials."""
    code, out, _ = await run_cli("sandbox", "create-app", "--config", str(config), "--name", "cli")
    assert code == 0
    creds = json.loads(out)
    token = await bank.token(creds["client_id"], creds["client_secret"])
    status, body, _ = await bank.call("GET", f"{REGISTER}/{creds['client_id']}", token)
    assert status == 200 and body["client_name"] == "cli"


async def test_mint_ssa(bank: Bank, config: Path) -> None:
    """mint-ssa prints an SSA signed by the running sandbox's directory key with the given claims."""
    code, out, _ = await run_cli(
        "sandbox",
        "mint-ssa",
        "--config",
        str(config),
        "--software-id",
        "CliSoftware1",
        "--redirect-uri",
        "https://a.example/cb",
        "--redirect-uri",
        "https://b.example/cb",
        "--role",
        "AISP",
        "--jwks-endpoint",
        "https://keys.example/x.jwks",
        "--org-id",
        "Org123",
        "--org-status",
        "Withdrawn",
    )
    assert code == 0
    async with bank.http.get(bank.sandbox_url + "/directory/jwks") as r:
        directory = await r.json()
    header, claims = verify_with_jwks(out.strip(), directory)
    assert header["typ"] == "JWT"
    assert claims["iss"] == "OpenBanking Ltd"
    assert claims["software_id"] == "CliSoftware1"
    assert claims["software_redirect_uris"] == ["https://a.example/cb", "https://b.example/cb"]
    assert claims["software_roles"] == ["AISP"]
    assert claims["software_jwks_endpoint"] == "https://keys.example/x.jwks"
    assert (claims["org_id"], claims["org_status"]) == ("Org123", "Withdrawn")


@pytest.mark.parametrize("alg, kty", [("PS256", "RSA"), ("ES256", "EC")])
async def test_tpp_key(tmp_path: Path, alg, kty) -> None:
    """tpp-key writes a 0600 private PEM and a public JWKS, and prints the key's RFC 7638 kid."""
    out_dir = tmp_path / "tpp"
    code, out, _ = await run_cli("sandbox", "tpp-key", "--out", str(out_dir), "--alg", alg)
    assert code == 0
    kid = out.strip()
    pem = out_dir / "private-key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    private = jwk.JWK.from_pem(pem.read_bytes())
    assert private.has_private and private.thumbprint() == kid
    doc = json.loads((out_dir / "jwks.json").read_text())
    (key,) = doc["keys"]
    assert key["kid"] == kid and key["kty"] == kty and key["alg"] == alg and key["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()
    assert (out_dir / "kid").read_text().strip() == kid
    code, _, err = await run_cli("sandbox", "tpp-key", "--out", str(out_dir))
    assert code == 1 and "already exists" in err


async def test_cli_walkthrough_private_key_jwt(bank: Bank, config: Path, tmp_path: Path) -> None:
    """tpp-key --register, mint-ssa, sign-request and client-assertion give a registered, working client."""
    out_dir = tmp_path / "tpp"
    code, out, _ = await run_cli(
        "sandbox", "tpp-key", "--config", str(config), "--out", str(out_dir), "--register"
    )
    assert code == 0
    kid, jwks_uri = out.split()
    assert (out_dir / "jwks_uri").read_text().strip() == jwks_uri
    async with bank.http.get(jwks_uri) as r:
        assert r.status == 200
        assert await r.json() == json.loads((out_dir / "jwks.json").read_text())

    code, ssa, _ = await run_cli(
        "sandbox",
        "mint-ssa",
        "--config",
        str(config),
        "--jwks-endpoint",
        jwks_uri,
        "--redirect-uri",
        "https://tpp.example.com/cb",
    )
    ssa_file = tmp_path / "ssa.jwt"
    ssa_file.write_text(ssa)
    code, request_jws, _ = await run_cli(
        "sandbox",
        "sign-request",
        "--config",
        str(config),
        "--key",
        str(out_dir / "private-key.pem"),
        f"--kid={kid}",
        "--ssa",
        f"@{ssa_file}",  # a thumbprint may start with "-"
    )
    assert code == 0
    header, claims = verify_with_jwks(request_jws.strip(), json.loads((out_dir / "jwks.json").read_text()))
    assert header["kid"] == kid and header["alg"] == "PS256"
    assert claims["iss"] == unverified(ssa.strip())[1]["software_id"]
    assert claims["aud"] == bank.gateway_url
    assert claims["token_endpoint_auth_method"] == "private_key_jwt"
    assert claims["token_endpoint_auth_signing_alg"] == "PS256"
    assert claims["redirect_uris"] == ["https://tpp.example.com/cb"]
    # No --scope: the scopes the SSA's software_roles permit (the sandbox SSA's default roles AISP, PISP, CBPII).
    assert claims["scope"] == "accounts payments fundsconfirmations"

    status, created, _ = await bank.register(await bank.app_token(), request_jws.strip())
    assert status == 201, created
    assert created["scope"] == "accounts payments fundsconfirmations"

    code, assertion, _ = await run_cli(
        "sandbox",
        "client-assertion",
        "--config",
        str(config),
        "--key",
        str(out_dir / "private-key.pem"),
        "--client-id",
        created["client_id"],
    )
    assert code == 0
    form = {
        "grant_type": "client_credentials",
        "client_assertion": assertion.strip(),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    status, body, _ = await bank.token_request(form)
    assert status == 200, body
    status, got, _ = await bank.call("GET", f"{REGISTER}/{created['client_id']}", body["access_token"])
    assert status == 200 and got["software_jwks_endpoint"] == jwks_uri


async def test_sign_request_options(bank: Bank, config: Path, tmp_path: Path) -> None:
    """sign-request honours --aud, --scope, --redirect-uri, --grant-type, the auth method; ES256 keys work."""
    out_dir = tmp_path / "tpp"
    await run_cli("sandbox", "tpp-key", "--out", str(out_dir), "--alg", "ES256")
    _, ssa, _ = await run_cli(
        "sandbox",
        "mint-ssa",
        "--config",
        str(config),
        "--redirect-uri",
        "https://tpp.example.com/a",
        "--redirect-uri",
        "https://tpp.example.com/b",
    )
    code, request_jws, _ = await run_cli(
        "sandbox",
        "sign-request",
        "--config",
        str(config),
        "--key",
        str(out_dir / "private-key.pem"),
        "--ssa",
        ssa.strip(),
        "--aud",
        "BankOrg1",
        "--scope",
        "accounts",
        "--redirect-uri",
        "https://tpp.example.com/b",
        "--token-endpoint-auth-method",
        "client_secret_basic",
        "--grant-type",
        "client_credentials",
        "--grant-type",
        "authorization_code",
    )
    assert code == 0
    header, claims = unverified(request_jws.strip())
    assert header["alg"] == "ES256"
    assert (claims["aud"], claims["scope"]) == ("BankOrg1", "accounts")
    assert claims["redirect_uris"] == ["https://tpp.example.com/b"]
    assert claims["grant_types"] == ["client_credentials", "authorization_code"]
    assert "token_endpoint_auth_signing_alg" not in claims
    status, created, _ = await bank.register(await bank.app_token(), request_jws.strip())
    assert status == 201, created
    await bank.token(created["client_id"], created["client_secret"], scope="accounts")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sign-request", "--key", "/nonexistent.pem", "--ssa", "a.b.c"], "cannot read"),
        (["sign-request", "--key", "{pem}", "--ssa", "garbage"], "JWS"),
        (["sign-request", "--key", "{pem}", "--ssa", "@/nonexistent"], "cannot read"),
        (["sign-request", "--key", "{ssa_file}", "--ssa", "a.b.c"], "PEM"),
        (
            [
                "sign-request",
                "--key",
                "{pem}",
                "--ssa",
                "@{ssa_file}",
                "--token-endpoint-auth-method",
                "tls_client_auth",
            ],
            "subject-dn",
        ),
        (
            ["tpp-key", "--out", "{tmp}/new", "--register", "--sandbox-url", "http://127.0.0.1:{dead}"],
            "cannot reach",
        ),
    ],
)
async def test_cli_errors_are_one_line(tmp_path: Path, argv, needle) -> None:
    """CLI mistakes exit 1 with one `error:` line on stderr, no traceback."""
    pem = tmp_path / "private-key.pem"
    pem.write_bytes(jwk.JWK.generate(kty="EC", crv="P-256").export_to_pem(private_key=True, password=None))
    ssa_file = tmp_path / "ssa.jwt"
    ssa_file.write_text("eyJhbGciOiJQUzI1NiJ9.eyJzb2Z0d2FyZV9pZCI6ImFiYyJ9.c2ln")
    config = tmp_path / "config.yaml"
    config.write_text("sandbox: {state_dir: state}\n")
    values: dict[str, Any] = {"pem": pem, "ssa_file": ssa_file, "tmp": tmp_path, "dead": free_port()}
    args = [a.format(**values) for a in argv]
    code, out, err = await run_cli("sandbox", args[0], "--config", str(config), *args[1:])
    assert code == 1, (out, err)
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, config",
    [
        (["sandbox"], None),
        (["sandbox", "serve"], None),
        (["sandbox", "--config", "a.yaml"], "a.yaml"),
        (["sandbox", "--config", "a.yaml", "serve"], "a.yaml"),
        (["sandbox", "serve", "--config", "b.yaml"], "b.yaml"),
    ],
)
def test_sandbox_and_sandbox_serve_both_serve(argv, config) -> None:
    """`dcr-gateway sandbox` and `dcr-gateway sandbox serve` run the same command, --config either side."""
    args = build_parser().parse_args(argv)
    assert args.func.__doc__ == "Run the sandbox alone until SIGTERM/SIGINT."
    assert args.config == config


@pytest.mark.parametrize("roles, scope", [
    (["AISP"], "accounts"),
    (["PISP", "AISP", "PISP"], "payments accounts"),
    (["CBPII", "XYZ"], "fundsconfirmations"),
    (["XYZ"], None),
    (None, None),
])
def test_sign_request_scope_defaults_to_the_ssa_roles(roles: list[str] | None, scope: str | None) -> None:
    """Without --scope, sign-request asks for what the SSA's software_roles permit (its help says so); an SSA
    naming no known role gets no scope claim (the bank then derives its default)."""
    from gateway.sandbox.cli import registration_claims
    from gateway.sandbox.crypto import generate_key, sign

    key = generate_key("ES256")
    ssa_claims: dict[str, Any] = {"software_id": "abc", "software_redirect_uris": ["https://tpp.example.com/cb"]}
    if roles is not None:
        ssa_claims["software_roles"] = roles
    claims = registration_claims(key, sign(key, ssa_claims, typ="JWT"), aud="x")
    assert claims.get("scope") == scope
    assert registration_claims(key, sign(key, ssa_claims, typ="JWT"), aud="x", scope="accounts")["scope"] == "accounts"
