"""The Postman collection and environment of the DCR flow (gateway.sandbox.apidocs.postman): valid against the
official collection v2.1.0 schema (vendored, tests/data/postman), downloadable from the sandbox, one request
per call of the flow with every variable in the environment, and the collection run against the real gateway
and sandbox with a minimal runner that does what its test scripts say."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import jsonschema
import pytest

from gateway.sandbox.apidocs.postman import SCHEMA, collection, environment
from gateway.sandbox.openapi import document
from tests.conftest import ROOT, SHIPPED_POLICIES, make_settings
from tests.sandbox.conftest import REDIRECT, SANDBOX_ISSUER, Bank, BankFactory, tpp_key

COLLECTION_SCHEMA = json.loads((ROOT / "tests" / "data" / "postman" / "collection-v2.1.0.schema.json").read_text())
VALIDATOR = jsonschema.Draft7Validator(COLLECTION_SCHEMA)  # the schema declares draft-07
PROFILES = {"bank": SHIPPED_POLICIES, "ob_standard": SHIPPED_POLICIES / "ob_standard"}
VARIABLE = re.compile(r"\{\{([A-Za-z_]+)\}\}")
SAVES = re.compile(r'pm\.environment\.set\("(\w+)", body\["(\w+)"\]\);')
EXPECTS = re.compile(r"pm\.response\.to\.have\.status\((\d+)\);")


def _doc(profile: str) -> dict[str, Any]:
    return document(make_settings("http://127.0.0.1:9", server={"public_url": "https://bank.test"},
                                  policies={"profile": profile, "dir": str(PROFILES[profile])}))


def test_the_vendored_schema_is_draft_07_and_rejects_a_broken_collection() -> None:
    assert COLLECTION_SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(COLLECTION_SCHEMA)
    good = collection(_doc("bank"))
    assert not list(VALIDATOR.iter_errors(good))
    broken = json.loads(json.dumps(good))
    del broken["info"]["schema"]
    broken["item"][0]["request"]["url"] = 5
    assert len(list(VALIDATOR.iter_errors(broken))) == 2


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_collection_is_valid_and_follows_the_document(profile: str) -> None:
    doc = _doc(profile)
    made = collection(doc)
    VALIDATOR.validate(made)
    assert made["info"]["schema"] == SCHEMA
    assert made["variable"] == [{"key": "baseUrl", "value": "https://bank.test", "type": "string"}]
    requests = [(item["request"]["method"], item["request"]["url"]["raw"]) for item in made["item"]]
    token = "{{baseUrl}}/oauth2/token"
    item_url = "{{baseUrl}}/open-banking/v3.1/register/{{client_id}}"
    assert requests == [("POST", token), ("POST", "{{baseUrl}}/open-banking/v3.1/register"), ("POST", token),
                        ("GET", item_url), ("PUT", item_url), ("DELETE", item_url)]
    # Each DCR request carries the document's required headers, and checks the documented success status.
    for item in made["item"][1:2] + made["item"][3:]:
        method = item["request"]["method"].lower()
        path = "/open-banking/v3.1/register" + ("" if method == "post" else "/{ClientId}")
        op = doc["paths"][path][method]
        params = [doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                  for p in op["parameters"]]
        documented = {p["name"] for p in params if p["in"] == "header"}
        assert {h["key"] for h in item["request"]["header"]} == documented | (
            {"Content-Type"} if "requestBody" in op else set())
        if profile == "bank":
            assert {"Accept", "Authorization", "client_id"} <= documented
        success = min(int(code) for code in op["responses"] if code.startswith("2"))
        assert EXPECTS.findall("\n".join(item["event"][0]["script"]["exec"])) == [str(success)]
    # Stable ids: the same document gives the same collection.
    assert collection(doc) == made


def test_environment_holds_every_variable_the_collection_uses() -> None:
    doc = _doc("bank")
    env = environment(doc)
    keys = [v["key"] for v in env["values"]]
    used = set(VARIABLE.findall(json.dumps(collection(doc))))
    assert used <= set(keys) and len(keys) == len(set(keys))
    assert {v["key"]: v["value"] for v in env["values"]}["baseUrl"] == "https://bank.test"
    assert env["_postman_variable_scope"] == "environment"
    assert all(set(v) == {"key", "value", "type", "enabled"} and v["type"] in ("default", "secret")
               for v in env["values"])
    assert {v["key"] for v in env["values"] if v["type"] == "secret"} == {
        "app_client_secret", "app_access_token", "registration_jwt", "client_assertion", "access_token"}


async def test_the_files_download_from_the_sandbox(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    for name, kind in (("collection.json", "collection"), ("environment.json", "environment")):
        async with bank.http.get(f"{bank.sandbox_url}/docs/postman/{name}") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert r.headers["Content-Disposition"] == f'attachment; filename="dcr-sandbox.postman_{kind}.json"'
            served = await r.json()
        built = (collection if kind == "collection" else environment)(document(bank.settings))
        assert served == built
        if kind == "collection":
            VALIDATOR.validate(served)
    async with bank.http.get(f"{bank.sandbox_url}/docs/postman/other.json") as r:
        assert r.status == 404


def _substitute(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"{{{{{match.group(1)}}}}} is not set"
        return env[match.group(1)]
    return VARIABLE.sub(one, value)


async def _send(bank: Bank, item: dict[str, Any], env: dict[str, str]) -> None:
    """One request as Postman sends it (variables, basic auth, raw or urlencoded body), then its test script:
    the expected status, and the variables it saves."""
    request = item["request"]
    headers = {h["key"]: _substitute(h["value"], env) for h in request["header"]}
    auth = request.get("auth")
    if auth is not None:
        assert auth["type"] == "basic"
        user, password = (_substitute(v["value"], env) for v in auth["basic"])
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    body: Any = None
    if "body" in request:
        if request["body"]["mode"] == "raw":
            body = _substitute(request["body"]["raw"], env)
        else:
            body = {f["key"]: _substitute(f["value"], env) for f in request["body"]["urlencoded"]}
    url = _substitute(request["url"]["raw"], env)
    async with bank.http.request(request["method"], url, headers=headers, data=body) as r:
        raw = await r.read()
        status = r.status
    script = "\n".join(item["event"][0]["script"]["exec"])
    assert [str(status)] == EXPECTS.findall(script), (item["name"], status, raw)
    for variable, field in SAVES.findall(script):
        env[variable] = json.loads(raw)[field]


async def test_the_collection_runs_the_flow_against_the_gateway(bank_factory: BankFactory) -> None:
    """The downloaded collection and environment, run in order: what the scripts save carries the flow; the
    test fills in what Postman users paste (the app's credentials, the signed request and assertion)."""
    bank = await bank_factory(shipped_policies=True)
    async with bank.http.get(f"{bank.sandbox_url}/docs/postman/collection.json") as r:
        made = await r.json()
    async with bank.http.get(f"{bank.sandbox_url}/docs/postman/environment.json") as r:
        env = {v["key"]: v["value"] for v in (await r.json())["values"]}
    assert env["baseUrl"] == bank.gateway_url
    env["app_client_id"], env["app_client_secret"] = await bank.create_app("postman")
    tpp = tpp_key("postman")
    ssa = await bank.mint_ssa(software_jwks_endpoint=bank.tpp.publish("postman", tpp),
                              software_redirect_uris=[REDIRECT], software_roles=["AISP", "PISP"])

    def signed(**overrides: Any) -> str:
        return tpp.sign(bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method="private_key_jwt",
                                                 token_endpoint_auth_signing_alg="PS256", **overrides))

    by_name = {item["name"]: item for item in made["item"]}
    assert len(by_name) == 6
    app_token, register, client_token, read, update, delete = made["item"]
    await _send(bank, app_token, env)
    env["registration_jwt"] = signed()
    await _send(bank, register, env)
    assert env["client_id"] and env["app_access_token"]
    env["client_assertion"] = bank.assertion(tpp, env["client_id"])
    await _send(bank, client_token, env)
    await _send(bank, read, env)
    env["registration_jwt"] = signed(scope="accounts")  # a new jti: a request is accepted once
    await _send(bank, update, env)
    await _send(bank, delete, env)
