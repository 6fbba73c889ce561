"""The API documentation page on the sandbox listener (gateway.sandbox.apidocs): the page and its headers, the
samples of every call in every language of the sample module (with placeholders, and with the caller's values,
which then work against the real gateway), the refusals of the fill-in API, and a sandbox without policies."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox import apidocs, build_sandbox_app
from gateway.sandbox.apidocs.examples import VARIABLES
from gateway.sandbox.apidocs.routes import _ASSETS
from gateway.sandbox.openapi import document
from gateway.sandbox.pages import PAGE_HEADERS
from gateway.sandbox.samples import LANGUAGES
from tests.conftest import ROOT, make_settings
from tests.playground.conftest import python_output, run_snippet
from tests.sandbox.conftest import REDIRECT, REGISTER, SANDBOX_ISSUER, Bank, BankFactory, _seeded_state_dir, tpp_key

PLACEHOLDERS = {name: f"<{name.upper()}>" for name in VARIABLES if name != "baseUrl"}


async def _get(bank: Bank, path: str) -> tuple[int, bytes, Any]:
    async with bank.http.get(bank.sandbox_url + path) as r:
        return r.status, await r.read(), r.headers


async def _samples(bank: Bank, values: dict[str, str] | None = None) -> tuple[int, Any]:
    if values is None:
        async with bank.http.get(bank.sandbox_url + "/docs/api/samples") as r:
            return r.status, await r.json()
    async with bank.http.post(bank.sandbox_url + "/docs/api/samples", json={"values": values}) as r:
        return r.status, await r.json()


def _by_key(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {example["key"]: example for example in data["examples"]}


async def test_the_page_and_its_files_with_the_pages_headers(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    for path, media in (("/docs", "text/html"), ("/docs/", "text/html"), ("/docs/static/apidocs.js", "text/javascript"),
                        ("/docs/static/apidocs.css", "text/css")):
        status, body, headers = await _get(bank, path)
        assert status == 200 and headers["Content-Type"].startswith(media), path
        for name, value in PAGE_HEADERS.items():
            assert headers[name] == value, (path, name)
        if not path.endswith(".js"):  # no external reference (the script builds links from its own origin)
            assert b"http://" not in body and b"https://" not in body, path
    page = (await _get(bank, "/docs"))[1].decode()
    # No inline script, no external reference: the CSP would block them anyway.
    assert '<script src="/docs/static/apidocs.js" defer></script>' in page and "<script>" not in page
    for missing in ("/docs/static/index.html", "/docs/static/nope.js", "/docs/static/../app.py"):
        assert (await _get(bank, missing))[0] == 404, missing
    # The portal root lands on the page; the playground links to it.
    async with bank.http.get(bank.sandbox_url + "/", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (302, "/docs")
    assert b'href="/docs"' in (await _get(bank, "/playground"))[1]


def test_every_static_file_is_served_and_shipped() -> None:
    """The asset table lists every file of static/, and the wheel's package-data takes the folder."""
    static = Path(apidocs.__file__).parent / "static"
    assert {p.name for p in static.iterdir()} == set(_ASSETS)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "sandbox/apidocs/static/*" in data["tool"]["setuptools"]["package-data"]["gateway"]


async def test_config_lists_the_languages_links_and_variables(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    status, body, headers = await _get(bank, "/docs/api/config")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    config = json.loads(body)
    assert config["available"] is True and config["gateway_url"] == bank.gateway_url
    assert [lang["key"] for lang in config["languages"]] == [lang.key for lang in LANGUAGES]
    assert config["playground"] == "/playground"
    assert config["postman"] == {"collection.json": "/docs/postman/collection.json",
                                 "environment.json": "/docs/postman/environment.json"}
    assert {name: v["placeholder"] for name, v in config["variables"].items()} == PLACEHOLDERS


async def test_samples_cover_every_operation_in_every_language(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    status, data = await _samples(bank)
    assert status == 200
    examples = _by_key(data)
    doc = document(bank.settings)
    operations = {op["operationId"]: (method.upper(), path)
                  for path, item in doc["paths"].items() for method, op in item.items()}
    assert {k for k, e in examples.items() if e["operation_id"]} == set(operations) == {
        "createClient", "getClient", "updateClient", "deleteClient"}
    assert list(examples) == ["app_token", "createClient", "client_token", "getClient", "updateClient", "deleteClient"]
    for key, example in examples.items():
        assert list(example["samples"]) == [lang.key for lang in LANGUAGES], key
        assert example["url"].startswith(bank.gateway_url), key  # the gateway's public URL, never the sandbox
        if example["operation_id"]:
            method, path = operations[key]
            assert example["method"] == method
            assert example["url"] == bank.gateway_url + path.replace("{ClientId}", "<CLIENT_ID>")
    curl = examples["createClient"]["samples"]["curl"]
    for line in ("-H 'Authorization: Bearer <APP_ACCESS_TOKEN>'", "-H 'client_id: <APP_CLIENT_ID>'",
                 "-H 'Content-Type: application/jose'", "--data-binary '<REGISTRATION_JWT>'"):
        assert line in curl
    assert "'client_id: <CLIENT_ID>'" in examples["getClient"]["samples"]["curl"]
    assert "Basic <BASE64(APP_CLIENT_ID:APP_CLIENT_SECRET)>" in examples["app_token"]["samples"]["curl"]
    assert "client_assertion=<CLIENT_ASSERTION>" in examples["client_token"]["samples"]["curl"]


@pytest.mark.process
async def test_filled_in_samples_run_the_flow_against_the_gateway(bank_factory: BankFactory) -> None:
    """The page's samples with the caller's values filled in are the calls: app token, register, client token,
    read and delete run as Python (and the read as curl too) against the gateway and the shipped policies."""
    bank = await bank_factory(shipped_policies=True)
    app_id, app_secret = await bank.create_app("docs")

    async def run(key: str, values: dict[str, str], lang: str = "python") -> tuple[int, Any]:
        status, data = await _samples(bank, values)
        assert status == 200, data
        _, out = await run_snippet(lang, _by_key(data)[key]["samples"][lang])
        return python_output(out) if lang == "python" else (int(out.split()[1]), out)

    values = {"app_client_id": app_id, "app_client_secret": app_secret}
    status, body = await run("app_token", values)
    assert status == 200, body
    values["app_access_token"] = body["access_token"]

    tpp = tpp_key("docs")
    ssa = await bank.mint_ssa(software_jwks_endpoint=bank.tpp.publish("docs", tpp),
                              software_redirect_uris=[REDIRECT], software_roles=["AISP", "PISP"])
    claims = bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method="private_key_jwt",
                                      token_endpoint_auth_signing_alg="PS256")
    status, body = await run("createClient", {**values, "registration_jwt": tpp.sign(claims)})
    assert status == 201, body
    values["client_id"] = client_id = body["client_id"]

    status, body = await run("client_token", {**values, "client_assertion": bank.assertion(tpp, client_id)})
    assert status == 200, body
    values["access_token"] = body["access_token"]

    status, body = await run("getClient", values)
    assert status == 200 and body["client_id"] == client_id
    assert (await run("getClient", values, "curl"))[0] == 200
    assert (await run("deleteClient", values))[0] == 204
    status, body = await run("getClient", values)
    assert status == 401 and body["error"] == "invalid_token"


@pytest.mark.parametrize(("body", "says"), [
    ({"values": {"client_id": "a/b"}}, "unreserved characters"),
    ({"values": {"client_id": "../../sandbox/apps"}}, "unreserved characters"),
    ({"values": {"client_id": "x?y=1"}}, "unreserved characters"),
    ({"values": {"access_token": "t\r\nX-Injected: 1"}}, "printable"),
    ({"values": {"app_client_id": "x" * 8193}}, "printable"),
    ({"values": {"access_token": 42}}, "printable"),
    ({"values": {"registration_jwt": "not a jws"}}, "compact JWS"),
    ({"values": {"baseUrl": "http://attacker.example"}}, "unknown value"),
    ({"values": {"Host": "x"}}, "unknown value"),
    ({"values": ["client_id"]}, "values"),
    ([], "JSON object"),
])
async def test_fill_in_refuses_what_no_call_of_the_api_could_carry(
        bank_factory: BankFactory, body: Any, says: str) -> None:
    bank = await bank_factory(shipped_policies=True)
    async with bank.http.post(bank.sandbox_url + "/docs/api/samples", json=body) as r:
        assert r.status == 400
        answer = await r.json()
    assert answer["error"] == "invalid_request" and says in answer["error_description"]


async def test_fill_in_takes_json_only(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    async with bank.http.post(bank.sandbox_url + "/docs/api/samples", data="values=1",
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
        assert r.status == 400 and "application/json" in (await r.json())["error_description"]


async def test_a_filled_in_client_id_is_in_the_path_and_the_header(bank_factory: BankFactory) -> None:
    bank = await bank_factory(shipped_policies=True)
    status, data = await _samples(bank, {"client_id": "abc-123", "access_token": "tok.en"})
    assert status == 200
    get = _by_key(data)["getClient"]
    assert get["url"] == bank.gateway_url + REGISTER + "/abc-123"
    assert "-H 'client_id: abc-123'" in get["samples"]["curl"] and "Bearer tok.en" in get["samples"]["curl"]
    # What was not given stays a placeholder.
    assert "<APP_ACCESS_TOKEN>" in _by_key(data)["createClient"]["samples"]["curl"]


async def test_without_policies_the_page_loads_and_says_why(aiohttp_client: Any, tmp_path: Path,
                                                            seeded_keys: Path) -> None:
    settings = make_settings("http://127.0.0.1:9", policies={"dir": str(tmp_path / "missing")},
                             sandbox={"state_dir": str(_seeded_state_dir(tmp_path / "state", seeded_keys))})
    client = await aiohttp_client(build_sandbox_app(settings))
    assert (await client.get("/docs")).status == 200
    config = await (await client.get("/docs/api/config")).json()
    assert config["available"] is False and "policies cannot be read" in config["problem"]
    for r in (await client.get("/docs/api/samples"), await client.post("/docs/api/samples", json={"values": {}}),
              await client.get("/docs/postman/collection.json")):
        assert r.status == 503 and (await r.json())["error"] == "temporarily_unavailable"


async def test_the_playground_switch_leaves_the_page_without_its_link(aiohttp_client: Any, tmp_path: Path,
                                                                     seeded_keys: Path) -> None:
    settings = make_settings("http://127.0.0.1:9", sandbox={
        "playground": False, "state_dir": str(_seeded_state_dir(tmp_path / "state", seeded_keys))})
    client = await aiohttp_client(build_sandbox_app(settings))
    assert (await client.get("/docs")).status == 200
    assert (await (await client.get("/docs/api/config")).json())["playground"] is None
    assert (await client.get("/playground")).status == 404
