"""The OpenAPI 3.1 document of the DCR API (gateway.sandbox.openapi): valid, the bank's page's operations and
status codes, security and headers as each profile's shipped policies say, and the same document served by the
sandbox and printed by `dcr-gateway sandbox openapi`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from gateway.checks.registration_metadata import RegistrationMetadataParams
from gateway.config import Settings
from gateway.sandbox import build_sandbox_app
from gateway.sandbox.openapi import GATEWAY_REFUSALS, document
from tests.conftest import SHIPPED_POLICIES, make_settings
from tests.sandbox.conftest import REGISTER, Bank, _seeded_state_dir
from tests.sandbox.test_cli import run_cli

ITEM = REGISTER + "/{ClientId}"
PAGE = {
    ("post", REGISTER): {201, 400},
    ("get", ITEM): {200, 401, 403},
    ("put", ITEM): {200, 400, 401, 403},
    ("delete", ITEM): {204, 401, 403, 405},
}
"""The bank's page (../shared/reference/dcr-psd2-api.txt): each operation and the responses it lists."""
PROFILE_DIRS = {"bank": SHIPPED_POLICIES, "ob_standard": SHIPPED_POLICIES / "ob_standard"}
OAUTH, MTLS = "TPPOAuth2Security", "TPPMutualTLS"


def settings_for(profile: str, policy_dir: Path | None = None, **policies: Any) -> Settings:
    return make_settings("http://127.0.0.1:9", server={"public_url": "https://bank.test"},
                         policies={"profile": profile, "dir": str(policy_dir or PROFILE_DIRS[profile]), **policies})


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = doc["paths"][path][method]
    return op


def security(doc: dict[str, Any], method: str, path: str) -> list[set[str]]:
    return [set(requirement) for requirement in operation(doc, method, path)["security"]]


def header_names(doc: dict[str, Any], method: str, path: str) -> set[str]:
    names = set()
    for param in operation(doc, method, path)["parameters"]:
        if "$ref" in param:
            param = doc["components"]["parameters"][param["$ref"].rsplit("/", 1)[1]]
        if param["in"] == "header" and param.get("required"):
            names.add(param["name"])
    return names


def shipped_checks(policy_dir: Path, method: str) -> dict[str, Any]:
    """The checks of the shipped policy for `method`, read straight from its YAML (not through the module)."""
    for path in sorted(policy_dir.glob("*.yaml")):
        if path.name.endswith("_test.yaml"):
            continue
        for policy in yaml.safe_load(path.read_text())["policies"]:
            if method.upper() in policy["match"]["methods"] and policy["match"]["path"].startswith(REGISTER):
                return {name: params or {} for entry in policy["checks"] for name, params in entry.items()}
    raise AssertionError(f"no {method} policy in {policy_dir}")


@pytest.mark.parametrize("profile", ["bank", "ob_standard"])
def test_document_is_valid_openapi_31(profile: str) -> None:
    doc = document(settings_for(profile))
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # openapi-spec-validator: raises on an invalid document
    # JSON and YAML renderings are the same document.
    assert doc == json.loads(json.dumps(doc))


def test_validator_rejects_a_broken_document() -> None:
    """The validation above can fail: a dangling $ref is reported."""
    doc = document(settings_for("bank"))
    doc["paths"][REGISTER]["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"] = (
        "#/components/schemas/Nope")
    with pytest.raises(Exception, match="Nope"):
        validate(doc)


@pytest.mark.parametrize("profile", ["bank", "ob_standard"])
def test_the_page_operations_and_status_codes(profile: str) -> None:
    doc = document(settings_for(profile))
    operations = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert operations == set(PAGE)
    for (method, path), statuses in PAGE.items():
        responses = operation(doc, method, path)["responses"]
        documented = {int(code) for code in responses}
        assert statuses <= documented, (method, path)
        # Added to the page's codes: the policies' own 401 and the gateway's own refusals, shared responses.
        assert documented - statuses - set(GATEWAY_REFUSALS) <= {401, 404}, (method, path)
        if method != "post":  # a path no policy matches (an encoded `/` in ClientId): policies.unmatched_status
            assert responses["404"] == {"$ref": "#/components/responses/NoSuchEndpoint"}
        for status, (name, _) in GATEWAY_REFUSALS.items():
            assert responses[str(status)] == {"$ref": f"#/components/responses/{name}"}
            assert doc["components"]["responses"][name]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/GatewayError"}
    for method in ("post", "put"):
        body = operation(doc, method, {"post": REGISTER, "put": ITEM}[method])["requestBody"]
        assert "application/jose" in body["content"]
        schema = body["content"]["application/jose"]["schema"]
        assert schema["contentSchema"] == {"$ref": "#/components/schemas/OBClientRegistration1"}
    bad = operation(doc, "post", REGISTER)["responses"]["400"]["content"]["application/json"]
    assert bad["schema"] == {"$ref": "#/components/schemas/RegistrationError"}
    assert "WWW-Authenticate" in operation(doc, "get", ITEM)["responses"]["401"]["headers"]


def test_profiles_differ_in_security_as_their_policies_say() -> None:
    bank = document(settings_for("bank"))
    ob = document(settings_for("ob_standard"))
    # bank: a bearer token and the client_id header on every call; the certificate is required on POST and PUT.
    assert security(bank, "post", REGISTER) == [{OAUTH, MTLS}]
    assert security(bank, "get", ITEM) == [{OAUTH}]
    assert security(bank, "delete", ITEM) == [{OAUTH}]
    assert all("client_id" in header_names(bank, m, p) for m, p in PAGE)
    # ob_standard: POST by mutual TLS alone, no token nor client_id header; the rest token and certificate.
    assert security(ob, "post", REGISTER) == [{MTLS}]
    assert header_names(ob, "post", REGISTER) == set()
    assert security(ob, "get", ITEM) == [{OAUTH, MTLS}]
    assert not any("client_id" in header_names(ob, m, p) for m, p in PAGE)
    # The sandbox's laptop setting (client_certificate in audit mode) enforces no certificate: none documented.
    audit = document(settings_for("bank", check_modes={"client_certificate": "audit"}))
    assert all(security(audit, m, p) == [{OAUTH}] for m, p in PAGE)
    schemes = bank["components"]["securitySchemes"]
    assert schemes[OAUTH]["flows"]["clientCredentials"]["tokenUrl"] == "https://bank.test/oauth2/token"
    assert schemes[MTLS]["type"] == "mutualTLS"


@pytest.mark.parametrize("profile", ["bank", "ob_standard"])
def test_document_agrees_with_the_shipped_policies(profile: str) -> None:
    doc = document(settings_for(profile))
    post = shipped_checks(PROFILE_DIRS[profile], "post")
    defaults = RegistrationMetadataParams()
    methods = post["registration_metadata"].get("token_endpoint_auth_methods",
                                                defaults.token_endpoint_auth_methods)
    props = doc["components"]["schemas"]["OBRegistrationProperties1"]["properties"]
    assert props["token_endpoint_auth_method"]["enum"] == list(methods)
    response = doc["components"]["schemas"]["ClientRegistrationResponse"]["properties"]
    assert response["token_endpoint_auth_method"]["enum"] == list(methods)
    algorithms = post["registration_metadata"].get("signing_algorithms", defaults.signing_algorithms)
    assert doc["components"]["schemas"]["SupportedAlgorithms"]["enum"] == list(algorithms)
    body = operation(doc, "post", REGISTER)["requestBody"]
    assert list(body["content"]) == post["content_type"]["allowed"]
    jws_algs = post["registration_request"]["algorithms"]
    assert all(alg in body["content"]["application/jose"]["schema"]["description"] for alg in jws_algs)
    for method, path in PAGE:
        checks = shipped_checks(PROFILE_DIRS[profile], method)
        assert (OAUTH in security(doc, method, path)[0]) == ("bearer_token" in checks), (method, path)


def test_document_follows_a_changed_policy(tmp_path: Path) -> None:
    """Derived, not written down: narrowing a copy of the shipped policies narrows the document."""
    policies = shutil.copytree(SHIPPED_POLICIES / "ob_standard", tmp_path / "policies")
    dcr = policies / "dcr.yaml"
    dcr.write_text(dcr.read_text().replace(
        "      - registration_metadata: {}\n",
        "      - registration_metadata: {token_endpoint_auth_methods: [tls_client_auth], signing_algorithms: [ES256]}\n")
        .replace("allowed: [application/jose, application/jwt, application/json]", "allowed: [application/jose]"))
    doc = document(settings_for("ob_standard", policies))
    props = doc["components"]["schemas"]["OBRegistrationProperties1"]["properties"]
    assert props["token_endpoint_auth_method"]["enum"] == ["tls_client_auth"]
    assert doc["components"]["schemas"]["SupportedAlgorithms"]["enum"] == ["ES256"]
    assert list(operation(doc, "put", ITEM)["requestBody"]["content"]) == ["application/jose"]
    validate(doc)


@pytest.mark.process
async def test_served_document_equals_the_cli_output(bank: Bank, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{public_url: '{bank.gateway_url}'}}\n"
                      f"policies: {{dir: '{bank.settings.resolve_path(bank.settings.policies.dir).resolve()}'}}\n")
    async with bank.http.get(bank.sandbox_url + "/openapi.json") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        served = await r.text()
    async with bank.http.get(bank.sandbox_url + "/openapi.yaml") as r:
        assert r.status == 200
        assert r.content_type == "application/yaml"
        served_yaml = await r.text()
    code, out, err = await run_cli("sandbox", "openapi", "--config", str(config))
    assert code == 0, err
    assert out == served
    code, out_yaml, err = await run_cli("sandbox", "openapi", "--config", str(config), "--format", "yaml")
    assert code == 0, err
    assert out_yaml == served_yaml
    assert yaml.safe_load(served_yaml) == json.loads(served)
    validate(json.loads(served))


@pytest.mark.process
async def test_cli_without_policies_is_one_error_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("policies: {dir: missing}\n")
    code, out, err = await run_cli("sandbox", "openapi", "--config", str(config))
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and "policy directory not found" in err and "Traceback" not in err


async def test_sandbox_without_policies_answers_503_and_serves_the_rest(
        aiohttp_client: Any, tmp_path: Path, seeded_keys: Path) -> None:
    settings = make_settings("http://127.0.0.1:9", policies={"dir": str(tmp_path / "missing")},
                             sandbox={"state_dir": str(_seeded_state_dir(tmp_path / "state", seeded_keys))})
    client = await aiohttp_client(build_sandbox_app(settings))
    for fmt in ("json", "yaml"):
        r = await client.get(f"/openapi.{fmt}")
        assert r.status == 503
        body = await r.json()
        assert body["error"] == "temporarily_unavailable" and "policy directory not found" in body["error_description"]
    r = await client.get("/.well-known/openid-configuration")
    assert r.status == 200
