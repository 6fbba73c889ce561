"""The Open Banking UK DCR conformance tool's scenarios DCR-001 … DCR-011, through a real nginx mTLS ingress.

github.com/OpenBankingUK/conformance-dcr (pkg/compliant/dcr32.go; v3.3 runs the same list, and there is no
DCR-006) is what a bank runs against its deployment to show conformance (docs/conformance.md). Each test below
is one scenario: its id and the tool's own name, then the tool's test cases in order, with the tool's
requests (tests/conformance/ob_tool.py) and assertions (status codes, then the fields the tool decodes).

The deployment is the one docs/conformance.md describes, started here: `python -m gateway serve` with the
sandbox bank (`sandbox.enabled`) on loopback ports, behind Debian's nginx terminating TLS (a server certificate
from a CA made here; `ssl_verify_client optional_no_ca`; `proxy_set_header ssl-client-cert
$ssl_client_escaped_cert`). The TPP is made with the sandbox's own commands: `mint-cert` (its transport
certificate), `tpp-key --transport-cert --register` (its key set, the certificate as a `use: tls` key),
`mint-ssa` (its software statement). The tool's config.json is written from them, as a bank would.

Every scenario runs in both profiles of `policies.profile`, and with both token endpoint auth methods the tool
uses (tls_client_auth when discovery lists it — the tool's choice — and private_key_jwt otherwise):

- `ob_standard`: the tool's requests exactly (POST authenticated by the transport certificate alone);
- `bank`: the same requests plus what the bank's page adds — a developer app's token and its `client_id` on
  POST, the `client_id` header on GET, PUT and DELETE.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.ingress import make_server_certificate, nginx_ingress
from tests.conformance.ob_tool import FORM, SCOPE, ObTool, Response, schema_failures
from tests.conftest import ROOT, free_port
from tests.playground.conftest import served_config, serving, status_of
from tests.sandbox.conftest import REDIRECT, _seeded_state_dir, seeded_keys, unverified  # noqa: F401 (fixture)
from tests.sandbox.test_transport_certificates import mint, run

pytestmark = [pytest.mark.process, pytest.mark.slow]

PROFILES = ("ob_standard", "bank")
METHODS = ("tls_client_auth", "private_key_jwt")
SPEC_VERSIONS = ("3.2", "3.3")


@dataclass
class Deployment:
    """The running deployment and the tool configured for it."""

    profile: str
    public_url: str
    """The ingress (what TPPs and the tool use)."""
    sandbox_url: str
    """The sandbox's own listener (its developer portal)."""
    tool: ObTool
    tool_config: Path
    logs: list[Path]

    def tail(self) -> str:
        """The end of each log, for a failing assertion."""
        return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-12:])
                         for log in self.logs if log.exists())


def gateway_config(profile: str, state: Path, ingress_url: str, public: int, admin: int, sandbox: int
                   ) -> dict[str, Any]:
    """The shipped config.yaml behind an mTLS ingress (docs/conformance.md): the public URL is the ingress's,
    the profile's shipped policies with `client_certificate` enforced, the ingress trusted for the certificate
    header (`trust.client_certificate`, 127.0.0.1 as in config.yaml)."""
    data = served_config(state, public, admin, sandbox)
    data["server"]["public_url"] = ingress_url
    data["policies"].update(profile=profile, check_modes={},
                            dir=str(ROOT / "policies" / ("ob_standard" if profile == "ob_standard" else "")))
    # The gateway never forwards ssl-client-cert: the sandbox learns the verified certificate from its signed
    # facts (a certificate-only registration in ob_standard; tls_client_auth and cnf-bound tokens in both).
    data["upstream"]["signed_facts"] = {"enabled": True}
    assert data["trust"]["client_certificate"] == {"header": "ssl-client-cert", "format": "nginx",
                                                   "trusted_proxies": ["127.0.0.1/32", "::1/128"]}
    return data


def cli(*argv: str) -> str:
    """`dcr-gateway …` (in this process), which must succeed; its stdout."""
    code, out, err = run(*argv)
    assert code == 0, err
    return out


def tool_config(ingress_url: str, tpp: Path, ca: Path, cert: dict[str, Any], kid: str, ssa: str) -> dict[str, Any]:
    """The tool's config.json for the TPP made by the sandbox's commands (the fields of cmd/cli/config.go)."""
    return {
        "spec_version": "3.3",
        "wellknown_endpoint": f"{ingress_url}/.well-known/openid-configuration",
        "ssa": ssa,
        "kid": kid,
        "aud": ingress_url,
        "redirect_uris": [REDIRECT],
        "issuer": cert["software_id"],
        "private_key": (tpp / "private-key.pem").read_text(),
        "transport_root_cas": [ca.read_text()],
        "transport_cert": Path(cert["certificate"]).read_text(),
        "transport_key": Path(cert["private_key"]).read_text(),
        "get_implemented": True,
        "put_implemented": True,
        "delete_implemented": True,
        "environment": "sandbox",
        "brand": "dcr-gateway sandbox bank",
    }


@pytest.fixture(scope="module", params=PROFILES)
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               seeded_keys: Path) -> Iterator[Deployment]:  # noqa: F811 (the imported fixture)
    """nginx (mTLS) → `gateway serve` (the profile's policies) → the sandbox bank; the TPP; the tool's config."""
    profile: str = request.param
    tmp = tmp_path_factory.mktemp(f"conformance-{profile}")
    ingress_port, public, admin, sandbox = free_port(), free_port(), free_port(), free_port()
    ingress_url = f"https://127.0.0.1:{ingress_port}"
    state = _seeded_state_dir(tmp / "state", seeded_keys)
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(gateway_config(profile, state, ingress_url, public, admin, sandbox)))
    sandbox_url = f"http://127.0.0.1:{sandbox}"
    server = make_server_certificate(tmp / "ingress-certs")
    log = tmp / "gateway.log"

    def ready() -> bool:
        return status_of(f"http://127.0.0.1:{admin}/readyz") == 200 and status_of(
            sandbox_url + "/.well-known/openid-configuration") == 200

    with serving(config, log, ready), nginx_ingress(tmp / "nginx", ingress_port, f"http://127.0.0.1:{public}",
                                                    server):
        tpp = tmp / "tpp"
        cert = mint(config, tpp)
        kid, jwks_uri = cli("sandbox", "tpp-key", "--config", str(config), "--out", str(tpp),
                            "--transport-cert", cert["certificate"], "--register").split()
        ssa = cli("sandbox", "mint-ssa", "--config", str(config), "--software-id", cert["software_id"],
                  "--org-id", cert["org_id"], "--jwks-endpoint", jwks_uri, "--redirect-uri", REDIRECT).strip()
        settings = tool_config(ingress_url, tpp, server.ca, cert, kid, ssa)
        (tmp / "config.json").write_text(json.dumps(settings, indent=2))
        tool = ObTool(settings, tmp / "tool")
        if profile == "bank":
            tool.headers_for = bank_headers(tool, sandbox_url)
        yield Deployment(profile, ingress_url, sandbox_url, tool, tmp / "config.json",
                         [log, tmp / "nginx" / "error.log", tmp / "nginx" / "access.log"])


def bank_headers(tool: ObTool, sandbox_url: str) -> Any:
    """What the bank's page adds to the tool's requests: POST with a developer app's token (client_secret_basic
    through the ingress) and its client_id; GET, PUT and DELETE with the `client_id` header."""
    req = urllib.request.Request(sandbox_url + "/sandbox/apps", data=b'{"name": "conformance"}',
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as answer:
        app = json.loads(answer.read())  # the developer portal: plain http on the sandbox's own port
    if not tool.discovery:
        tool.load_discovery()
    basic = base64.b64encode(f"{app['client_id']}:{app['client_secret']}".encode()).decode()
    answer = tool.request("POST", tool.token_endpoint, body=b"grant_type=client_credentials",
                          headers={"Content-Type": FORM, "Authorization": f"Basic {basic}"})
    assert answer.status == 200, answer
    app_token = answer.json()["access_token"]

    def headers_for(method: str, client_id: str | None) -> dict[str, str]:
        if method == "POST":
            return {"Authorization": f"Bearer {app_token}", "client_id": app["client_id"]}
        return {"client_id": client_id or ""}

    return headers_for


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    """The token endpoint auth method the tool registers and authenticates with."""
    return str(request.param)


@pytest.fixture
def tool(deployment: Deployment) -> ObTool:
    """The tool, having read discovery through the ingress as it does before its first scenario."""
    answer = deployment.tool.load_discovery()
    assert answer.status == 200, answer
    return deployment.tool


# -- the tool's shared test cases -----------------------------------------------------------------------


def check(answer: Response, status: int, deployment: Deployment) -> None:
    """AssertStatusCode…: the status the tool expects (with the logs when it is not)."""
    assert answer.status == status, f"{answer}\n{deployment.tail()}"


def register_software_client(tool: ObTool, method: str, deployment: Deployment) -> dict[str, Any]:
    """Test case "Register software client": signed claims, POST, 201, the client decoded from the body."""
    answer = tool.register(tool.signed(tool.claims(method)))
    check(answer, 201, deployment)
    assert answer.content_type.startswith("application/json"), answer
    client: dict[str, Any] = answer.json()
    assert isinstance(client.get("client_id"), str) and client["client_id"], client
    assert client["token_endpoint_auth_method"] == method
    assert client["scope"] == SCOPE  # a string, as sent (v3.2)
    if method == "tls_client_auth":
        assert client["tls_client_auth_subject_dn"] == tool.subject_dn()
    return client


def retrieve_client_credentials_grant(tool: ObTool, method: str, client_id: str, deployment: Deployment) -> str:
    """Test case "Retrieve client credentials grant": 200 and {access_token, token_type, expires_in}."""
    answer = tool.token_request(method, client_id)
    check(answer, 200, deployment)
    grant = answer.json()
    assert isinstance(grant["access_token"], str) and grant["token_type"].lower() == "bearer", grant
    assert isinstance(grant["expires_in"], int), grant
    # Over mutual TLS the token is bound to the transport certificate (RFC 8705 §3).
    claims = unverified(grant["access_token"])[1]
    assert "x5t#S256" in claims.get("cnf", {}), f"the token is not bound to the transport certificate: {claims}"
    return str(grant["access_token"])


def create_software_client(tool: ObTool, method: str, deployment: Deployment) -> tuple[str, str]:
    """DCR32CreateSoftwareClientTestCases: register, then the client's token. Returns (client_id, token)."""
    client_id = register_software_client(tool, method, deployment)["client_id"]
    return client_id, retrieve_client_credentials_grant(tool, method, client_id, deployment)


def delete_software_client(tool: ObTool, client_id: str, token: str, deployment: Deployment) -> None:
    """Test case "Delete software client": DELETE is 204."""
    check(tool.delete(client_id, token), 204, deployment)


# -- the scenarios --------------------------------------------------------------------------------------


def test_dcr_001_validate_oidc_config_registration_url(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-001 Validate OIDC Config Registration URL. Discovery (through the ingress) has a registration_endpoint
    that is an absolute URL; and what the tool's setup needs: PS256 token endpoint signing, response types it
    can use, the method it will pick — all on the ingress's URL."""
    endpoint = tool.discovery.get("registration_endpoint")
    assert isinstance(endpoint, str) and endpoint == deployment.public_url + "/open-banking/v3.1/register"
    assert tool.token_endpoint == deployment.public_url + "/oauth2/token"
    assert "PS256" in tool.discovery["token_endpoint_auth_signing_alg_values_supported"]
    assert tool.response_types()
    assert method in tool.discovery["token_endpoint_auth_methods_supported"]
    # The tool picks tls_client_auth first when discovery lists it.
    assert "tls_client_auth" in tool.discovery["token_endpoint_auth_methods_supported"]


def test_dcr_002_dynamically_create_a_new_software_client(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-002 Dynamically create a new software client: register (201), client credentials grant (200),
    delete (204)."""
    client_id, token = create_software_client(tool, method, deployment)
    delete_software_client(tool, client_id, token, deployment)


def test_dcr_003_delete_software_is_supported(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-003 Delete software is supported: register, token, delete (204); "Retrieve delete software client
    should fail": GET with the same token is 401."""
    client_id, token = create_software_client(tool, method, deployment)
    delete_software_client(tool, client_id, token, deployment)
    check(tool.retrieve(client_id, token), 401, deployment)


@pytest.mark.parametrize("case, overrides, alg, lifetime", [
    ("fails on expired claims", {}, "PS256", -3600),
    ("fails on invalid issuer", {"iss": "foo.is/invalid"}, "PS256", 3600),
    ("fails on invalid issuer too short", {"iss": ""}, "PS256", 3600),
    ("fails on invalid issuer too long", {"iss": "123456789012345678901234567890"}, "PS256", 3600),
    ("will fail with token endpoint auth method RS256", {}, "RS256", 3600),
], ids=["expired", "issuer", "issuer-too-short", "issuer-too-long", "rs256"])
def test_dcr_004_invalid_registration_request_fails(tool: ObTool, deployment: Deployment, method: str, case: str,
                                                    overrides: dict[str, Any], alg: str, lifetime: int) -> None:
    """DCR-004 Dynamically create a new software client will fail on invalid registration request: "Register
    software client <case>" is 400 — claims that expired an hour ago (WithJwtExpiration(-1h): exp = iat - 1 h),
    an issuer that is not the software_id (not Base62, empty, 30 characters), and the tool's signing method
    RS256 (WithTokenEndpointAuthMethod(RS256): the request is signed RS256 and names RS256 as its id_token —
    and, for private_key_jwt, token endpoint — signing algorithm)."""
    claims = tool.claims(method, alg, lifetime, **overrides)
    check(tool.register(tool.signed(claims, alg)), 400, deployment)


def test_dcr_005_dynamically_retrieve_a_new_software_client(tool: ObTool, deployment: Deployment,
                                                            method: str) -> None:
    """DCR-005 Dynamically retrieve a new software client: register, token; "Retrieve software client": GET is
    200 and the body passes the tool's response schema (v3.2 and v3.3); delete (204)."""
    client_id, token = create_software_client(tool, method, deployment)
    answer = tool.retrieve(client_id, token)
    check(answer, 200, deployment)
    body = answer.json()
    for version in SPEC_VERSIONS:
        assert schema_failures(body, version) == [], (version, body)
    assert body["client_id"] == client_id  # ParseClientRetrieveResponse: the client read back
    delete_software_client(tool, client_id, token, deployment)


def test_dcr_007_retrieve_with_invalid_credentials_fails(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-007 I should not be able to retrieve a software client with invalid credentials: register;
    "Retrieve software client with invalid credentials grant" (an empty bearer token) is 401; then the client's
    token and delete (204)."""
    client_id = register_software_client(tool, method, deployment)["client_id"]
    check(tool.retrieve(client_id, ""), 401, deployment)
    token = retrieve_client_credentials_grant(tool, method, client_id, deployment)
    delete_software_client(tool, client_id, token, deployment)


def test_dcr_008_update_a_registered_software(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-008 I should be able update a registered software: register, token; "Update an existing software
    client": PUT of newly signed claims is 200; delete (204)."""
    client_id, token = create_software_client(tool, method, deployment)
    check(tool.update(client_id, tool.signed(tool.claims(method)), token), 200, deployment)
    delete_software_client(tool, client_id, token, deployment)


def test_dcr_009_update_of_a_deleted_client_is_unauthorized(tool: ObTool, deployment: Deployment,
                                                            method: str) -> None:
    """DCR-009 When I try to update a non existing software client I should be unauthorized: register, token,
    delete (204); "Update a deleted software client": PUT with the same token is 401."""
    client_id, token = create_software_client(tool, method, deployment)
    delete_software_client(tool, client_id, token, deployment)
    check(tool.update(client_id, tool.signed(tool.claims(method)), token), 401, deployment)


def test_dcr_010_retrieve_of_a_deleted_client_is_unauthorized(tool: ObTool, deployment: Deployment,
                                                              method: str) -> None:
    """DCR-010 When I try to retrieve a non existing software client I should be unauthorized: register, token,
    delete (204); "Retrieve a deleted software client": GET with the same token is 401."""
    client_id, token = create_software_client(tool, method, deployment)
    delete_software_client(tool, client_id, token, deployment)
    check(tool.retrieve(client_id, token), 401, deployment)


def test_dcr_011_invalid_response_types_fail(tool: ObTool, deployment: Deployment, method: str) -> None:
    """DCR-011 When I try to register a software with invalid response_types it should be fail: "Register
    software client" with response_types ["id_token", "token"] is 400."""
    answer = tool.register(tool.signed(tool.claims(method, response_types=["id_token", "token"])))
    check(answer, 400, deployment)
    assert isinstance(answer.json(), dict)  # ParseClientRegisterResponse still decodes the JSON body
