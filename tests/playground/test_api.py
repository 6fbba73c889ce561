"""The playground's API against the real sandbox behind a real gateway with the shipped policies.

The whole flow goes through the playground's proxy (so through the gateway), the POST and a GET are sent by
the snippets the playground generated (run as subprocesses), and the proxy, the key sessions and the page are
held to their promises: an allow-list of calls, public keys only, its own host name only, no secret logged.
"""

from __future__ import annotations

import base64
import json
import re
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk, jws
from structlog.testing import capture_logs

from gateway.sandbox.crypto import PRIVATE_MEMBERS, KeySet
from gateway.sandbox.playground.routes import _ASSETS
from gateway.sandbox.samples import LANGUAGES, json_languages
from tests.conftest import ROOT
from tests.playground.conftest import JSON_HEADERS, PlaygroundClient, python_output, run_snippet
from tests.sandbox.conftest import REDIRECT, REGISTER, BankFactory, unverified

FORM = "application/x-www-form-urlencoded"
STATIC = ROOT / "gateway" / "sandbox" / "playground" / "static"


async def _app_and_token(pg: PlaygroundClient) -> tuple[dict[str, str], str]:
    """A developer app (portal, through the proxy) and its client_credentials token (through the gateway)."""
    app = await pg.send("sandbox", "POST", "/sandbox/apps", JSON_HEADERS, json.dumps({"name": "api"}))
    assert app.status == 201, app.data
    creds = app.json
    basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
    token = await pg.send("gateway", "POST", "/oauth2/token",
                          {"Authorization": f"Basic {basic}", "Content-Type": FORM, "Accept": "application/json"},
                          "grant_type=client_credentials")
    assert token.status == 200, token.data
    return creds, token.json["access_token"]


async def _key_and_ssa(pg: PlaygroundClient, alg: str = "PS256") -> tuple[dict[str, Any], str]:
    """A session key (its JWKS hosted by the sandbox) and a directory SSA naming that JWKS."""
    key = await pg.send("sandbox", "POST", "/playground/api/sessions", JSON_HEADERS, json.dumps({"alg": alg}))
    assert key.status == 201, key.data
    session = key.json
    ssa = await pg.send("sandbox", "POST", "/sandbox/ssa", JSON_HEADERS, json.dumps({
        "software_jwks_endpoint": session["jwks_uri"], "software_redirect_uris": [REDIRECT],
        "software_roles": ["AISP", "PISP"],
    }))
    assert ssa.status == 201, ssa.data
    return session, ssa.json["software_statement"]


def _registration(ssa: str, audience: str, alg: str, **overrides: Any) -> dict[str, Any]:
    software_id = unverified(ssa)[1]["software_id"]
    now = int(time.time())
    return {"iss": software_id, "iat": now, "exp": now + 300, "aud": audience, "jti": str(uuid.uuid4()),
            "software_id": software_id, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": alg, "grant_types": ["client_credentials"],
            "scope": "accounts payments", "software_statement": ssa, "application_type": "web",
            "id_token_signed_response_alg": alg, "request_object_signing_alg": alg, **overrides}


async def _sign(pg: PlaygroundClient, session: dict[str, Any], claims: dict[str, Any]) -> str:
    signed = await pg.send("sandbox", "POST", f"/playground/api/sessions/{session['session_id']}/sign",
                           JSON_HEADERS, json.dumps({"claims": claims}))
    assert signed.status == 200, signed.data
    return str(signed.json["jws"])


async def test_the_flow_through_the_playground_and_its_snippets(playground: PlaygroundClient) -> None:
    """App, token, key, SSA, signed POST (sent by its Python snippet) 201, client token, GET (sent by its curl
    snippet) 200, GET 200, PUT 200, DELETE 204, GET 401 — every bank call through the gateway."""
    pg = playground
    status, cfg, _ = await pg.api("GET", "/playground/api/config")
    assert status == 200
    assert (cfg["gateway_url"], cfg["sandbox_url"]) == (pg.bank.gateway_url, pg.url)
    app, app_token = await _app_and_token(pg)
    session, ssa = await _key_and_ssa(pg)
    request_jws = await _sign(pg, session, _registration(ssa, cfg["audience"], "PS256"))

    # The registration, prepared by the playground but sent by the developer's copy of the Python snippet.
    post = await pg.send("gateway", "POST", REGISTER, {
        "Authorization": f"Bearer {app_token}", "client_id": app["client_id"], "Content-Type": "application/jose",
        "Accept": "application/json"}, request_jws, send=False)
    assert "response" not in post.data
    assert post.data["request"]["url"] == pg.bank.gateway_url + REGISTER
    status, created = python_output((await run_snippet("python", post.data["snippets"]["python"]))[1])
    assert status == 201, created
    client_id = created["client_id"]

    now = int(time.time())
    assertion = await _sign(pg, session, {"iss": client_id, "sub": client_id, "aud": cfg["token_endpoint"],
                                          "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())})
    token = await pg.send("gateway", "POST", "/oauth2/token", {"Content-Type": FORM}, (
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type"
        f"%3Ajwt-bearer&client_assertion={assertion}"))
    assert token.status == 200, token.data
    me = {"Authorization": f"Bearer {token.json['access_token']}", "client_id": client_id,
          "Accept": "application/json"}

    read = await pg.send("gateway", "GET", f"{REGISTER}/{client_id}", me, send=False)
    _, out = await run_snippet("curl", read.data["snippets"]["curl"])
    assert out.startswith("HTTP/1.1 200 OK") and f'"client_id":"{client_id}"' in out

    read = await pg.send("gateway", "GET", f"{REGISTER}/{client_id}", me)
    assert read.status == 200 and read.json["client_id"] == client_id
    sent = dict(read.data["request"]["headers"])  # what went on the wire, aiohttp's own headers included
    assert sent["Authorization"] == me["Authorization"] and sent["Host"] == pg.bank.gateway_url.split("//")[1]

    update = await _sign(pg, session, _registration(ssa, cfg["audience"], "PS256", scope="accounts"))
    put = await pg.send("gateway", "PUT", f"{REGISTER}/{client_id}", {**me, "Content-Type": "application/jose"},
                        update)
    assert put.status == 200 and put.json["scope"] == "accounts", put.data
    delete = await pg.send("gateway", "DELETE", f"{REGISTER}/{client_id}", me)
    assert delete.status == 204 and delete.data["response"]["body"] == ""
    gone = await pg.send("gateway", "GET", f"{REGISTER}/{client_id}", me)
    assert gone.status == 401 and gone.json["error_description"] == "the access token has been revoked"


@pytest.mark.parametrize(("overrides", "error", "description"), [
    pytest.param({"redirect_uris": ["http://tpp.example.com/callback"]}, "invalid_redirect_uri", "https",
                 id="http-redirect"),
    pytest.param({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata",
                 "token_endpoint_auth_method", id="secret-method"),
    pytest.param({"aud": "http://elsewhere.example"}, "invalid_client_metadata", "aud", id="wrong-aud"),
])
async def test_a_refused_registration_reports_the_gateways_rfc7591_error(
    playground: PlaygroundClient, overrides: dict[str, Any], error: str, description: str
) -> None:
    """The gateway's refusal reaches the page as the gateway sent it: 400 and its RFC 7591 error body."""
    pg = playground
    _, cfg, _ = await pg.api("GET", "/playground/api/config")
    app, app_token = await _app_and_token(pg)
    session, ssa = await _key_and_ssa(pg, "ES256")
    request_jws = await _sign(pg, session, _registration(ssa, cfg["audience"], "ES256", **overrides))
    refused = await pg.send("gateway", "POST", REGISTER, {
        "Authorization": f"Bearer {app_token}", "client_id": app["client_id"], "Content-Type": "application/jose"},
        request_jws)
    assert refused.status == 400
    assert refused.json["error"] == error and description in refused.json["error_description"]


async def test_a_tampered_signature_is_refused_by_the_gateway(playground: PlaygroundClient) -> None:
    """One changed character of the signature: 400 invalid_client_metadata, the signature named."""
    pg = playground
    _, cfg, _ = await pg.api("GET", "/playground/api/config")
    app, app_token = await _app_and_token(pg)
    session, ssa = await _key_and_ssa(pg)
    header, payload, sig = (await _sign(pg, session, _registration(ssa, cfg["audience"], "PS256"))).split(".")
    middle = len(sig) // 2
    tampered = f"{header}.{payload}.{sig[:middle]}{'B' if sig[middle] == 'A' else 'A'}{sig[middle + 1:]}"
    refused = await pg.send("gateway", "POST", REGISTER, {
        "Authorization": f"Bearer {app_token}", "client_id": app["client_id"], "Content-Type": "application/jose"},
        tampered)
    assert refused.status == 400 and refused.json["error"] == "invalid_client_metadata"
    assert "signature" in refused.json["error_description"]


async def test_bank_calls_go_through_the_gateway(playground: PlaygroundClient) -> None:
    """A gateway call is answered by the gateway's policies (its realm), not by the sandbox behind it."""
    r = await playground.send("gateway", "GET", f"{REGISTER}/someone", {"Accept": "application/json"})
    assert r.status == 401 and r.header("WWW-Authenticate") == 'Bearer realm="dcr-gateway"'


@pytest.mark.parametrize(("target", "method", "path"), [
    pytest.param("sandbox", "GET", f"{REGISTER}/x", id="the-backend-directly"),
    pytest.param("sandbox", "POST", REGISTER, id="register-on-the-backend"),
    pytest.param("sandbox", "POST", "/oauth2/token", id="token-on-the-backend"),
    pytest.param("gateway", "POST", "/sandbox/apps", id="portal-on-the-gateway"),
    pytest.param("sandbox", "POST", "/playground/api/send", id="itself"),
    pytest.param("sandbox", "POST", "/sandbox/tpp-jwks", id="unlisted-portal-call"),
    pytest.param("gateway", "GET", f"{REGISTER}/../../sandbox/apps", id="climbing"),
    pytest.param("gateway", "GET", f"{REGISTER}/x?y=1", id="query"),
    pytest.param("gateway", "GET", "//evil.example/x", id="other-host"),
    pytest.param("gateway", "PATCH", f"{REGISTER}/x", id="other-method"),
    pytest.param("elsewhere", "GET", "/", id="other-target"),
])
async def test_the_proxy_makes_listed_calls_only(playground: PlaygroundClient, target: str, method: str,
                                                 path: str) -> None:
    """Anything off the list is a 400 from the playground, and nothing is sent."""
    status, body, _ = await playground.api("POST", "/playground/api/send",
                                           {"target": target, "method": method, "path": path, "headers": {}})
    assert status == 400 and body["error"] == "invalid_request"


@pytest.mark.parametrize("headers", [
    pytest.param({"Host": "evil.example"}, id="host"),
    pytest.param({"Cookie": "a=b"}, id="cookie"),
    pytest.param({"X-DCR-Client-Id": "forged"}, id="fact-header"),
    pytest.param({"X-Forwarded-For": "10.0.0.1"}, id="forwarded"),
    pytest.param({"Accept": "a\r\nX-Injected: 1"}, id="crlf"),
    pytest.param({"Accept": 1}, id="not-a-string"),
])
async def test_the_proxy_sets_listed_headers_only(playground: PlaygroundClient, headers: dict[str, Any]) -> None:
    """Headers the page would not show (or could smuggle) are refused rather than silently dropped."""
    status, body, _ = await playground.api("POST", "/playground/api/send", {
        "target": "gateway", "method": "GET", "path": f"{REGISTER}/x", "headers": headers})
    assert status == 400 and body["error"] == "invalid_request"


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


async def test_key_sessions_send_public_keys_only(playground: PlaygroundClient) -> None:
    """The session answer and the hosted JWKS carry no private member; no key file is written; the
    signatures verify against the hosted JWKS (jwcrypto, independently of the sandbox)."""
    pg = playground
    state_dir = Path(pg.bank.settings.sandbox.state_dir)
    before = _names(state_dir)
    status, session, headers = await pg.api("POST", "/playground/api/sessions", {"alg": "ES256"})
    assert status == 201 and headers["Cache-Control"] == "no-store"
    assert set(session) == {"session_id", "kid", "alg", "jwks_uri", "jwks", "expires_at"}
    KeySet.from_document(session["jwks"])  # refuses private members
    assert not PRIVATE_MEMBERS & set(session["jwks"]["keys"][0])
    assert "PRIVATE" not in json.dumps(session)
    async with pg.bank.http.get(session["jwks_uri"]) as r:
        hosted = await r.json()
    assert hosted == session["jwks"]
    assert _names(state_dir) - before <= {"sandbox.db-wal", "sandbox.db-shm"}  # no key file

    status, signed, _ = await pg.api("POST", f"/playground/api/sessions/{session['session_id']}/sign",
                                     {"claims": {"hello": "world"}})
    assert status == 200 and signed["header"] == {"alg": "ES256", "kid": session["kid"], "typ": "JWT"}
    key = jwk.JWKSet.from_json(json.dumps(hosted)).get_key(session["kid"])
    parsed = jws.JWS()
    parsed.deserialize(signed["jws"])
    parsed.verify(key, alg="ES256")
    assert json.loads(parsed.payload) == {"hello": "world"} == signed["claims"]


@pytest.mark.parametrize(("path", "body", "status"), [
    pytest.param("/playground/api/sessions/not-a-session/sign", {"claims": {}}, 404, id="unknown-session"),
    pytest.param("/playground/api/sessions", {"alg": "HS256"}, 400, id="hmac"),
    pytest.param("/playground/api/sessions", {"alg": "none"}, 400, id="none"),
    pytest.param("/playground/api/sessions", [], 400, id="not-an-object"),
])
async def test_bad_session_requests(playground: PlaygroundClient, path: str, body: Any, status: int) -> None:
    """Unknown sessions are 404; only PS256 and ES256 keys are made."""
    got, answer, _ = await playground.api("POST", path, body)
    assert got == status and answer["error"] in ("invalid_request", "not_found")


async def test_claims_must_be_an_object(playground: PlaygroundClient) -> None:
    """The sign endpoint signs a JSON object of claims, nothing else."""
    _, session, _ = await playground.api("POST", "/playground/api/sessions", {"alg": "ES256"})
    status, body, _ = await playground.api("POST", f"/playground/api/sessions/{session['session_id']}/sign",
                                           {"claims": "eyJ"})
    assert status == 400 and "claims" in body["error_description"]


@pytest.mark.parametrize("headers", [
    pytest.param({"Host": "evil.example"}, id="rebound-host"),
    pytest.param({"Origin": "http://evil.example"}, id="other-origin"),
])
async def test_other_host_names_and_origins_are_refused(playground: PlaygroundClient,
                                                        headers: dict[str, str]) -> None:
    """A page whose DNS name was rebound to 127.0.0.1, or another site, gets 403 from page and API alike."""
    for method, path, body in (("GET", "/playground", None), ("GET", "/playground/api/config", None),
                               ("POST", "/playground/api/sessions", {"alg": "ES256"})):
        status, _, _ = await playground.api(method, path, body, headers)
        assert status == 403, path
    port = playground.url.rsplit(":", 1)[1]
    status, _, _ = await playground.api("GET", "/playground/api/config", None, {
        "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"})
    assert status == 200


async def test_api_posts_must_be_json(playground: PlaygroundClient) -> None:
    """text/plain (what another site's form could post without a CORS preflight) is refused."""
    for path in ("/playground/api/send", "/playground/api/sessions"):
        async with playground.bank.http.post(playground.url + path, data=b'{"alg": "ES256"}',
                                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 400, path


async def test_nothing_secret_is_logged(playground: PlaygroundClient) -> None:
    """Through a whole registration, no client secret, token, JWS or session id appears in a log event."""
    pg = playground
    with capture_logs() as events:
        _, cfg, _ = await pg.api("GET", "/playground/api/config")
        app, app_token = await _app_and_token(pg)
        session, ssa = await _key_and_ssa(pg)
        request_jws = await _sign(pg, session, _registration(ssa, cfg["audience"], "PS256"))
        created = await pg.send("gateway", "POST", REGISTER, {
            "Authorization": f"Bearer {app_token}", "client_id": app["client_id"],
            "Content-Type": "application/jose"}, request_jws)
        assert created.status == 201
    logged = repr(events)
    assert any(e["event"] == "playground_call" for e in events)
    assert any(e["event"] == "playground_session_created" and e["kid"] == session["kid"] for e in events)
    for secret in (app["client_secret"], app_token, ssa, request_jws, request_jws.split(".")[2],
                   session["session_id"], created.json["client_secret"]):
        assert secret not in logged


async def test_the_page_and_its_files(playground: PlaygroundClient) -> None:
    """The page and its assets are served with a CSP that allows this origin only, and name nothing else."""
    async with playground.bank.http.get(playground.url + "/playground") as r:
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        html = await r.text()
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "script-src 'self'" in csp
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    # Its own files, and links to the API's documentation page and document on this origin.
    assert references and all(ref.startswith("/playground/static/") or ref in ("/docs", "/openapi.json")
                              for ref in references)
    assert "://" not in html
    for name in set(_ASSETS) - {"index.html"}:  # the page itself is served at /playground only
        async with playground.bank.http.get(f"{playground.url}/playground/static/{name}") as r:
            assert r.status == 200 and r.headers["Content-Security-Policy"] == csp, name
            text = await r.text()
        assert "://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), name
    async with playground.bank.http.get(playground.url + "/playground/static/../app.py") as r:
        assert r.status == 404


async def test_the_page_offers_the_bank_pages_eight_languages(playground: PlaygroundClient) -> None:
    """One list, samples.LANGUAGES: the config gives the page its keys, labels and run lines, `send` returns a
    snippet for each in that order, and the page's text names them all."""
    status, cfg, _ = await playground.api("GET", "/playground/api/config")
    assert status == 200
    assert cfg["languages"] == json_languages()
    assert [lang["key"] for lang in cfg["languages"]] == ["curl", "ruby", "python", "php", "java", "node", "go",
                                                          "swift"]
    report = await playground.send("gateway", "GET", f"{REGISTER}/abc", {"Authorization": "Bearer t"}, send=False)
    assert list(report.data["snippets"]) == [lang.key for lang in LANGUAGES]
    html = (STATIC / "index.html").read_text()
    assert "eight" in html and all(lang.label in html for lang in LANGUAGES)
    script = (STATIC / "playground.js").read_text()
    assert "state.config.languages" in script and '"python"' not in script  # no list of its own


def test_every_static_file_is_served_and_shipped() -> None:
    """The asset table lists every file of static/, and the wheel's package-data takes the folder."""
    assert {p.name for p in STATIC.iterdir()} == set(_ASSETS)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "sandbox/playground/static/*" in data["tool"]["setuptools"]["package-data"]["gateway"]


async def test_the_playground_can_be_switched_off(bank_factory: BankFactory) -> None:
    """sandbox.playground: false leaves the sandbox as it was: no page, no API."""
    bank = await bank_factory(playground=False)
    for method, path in (("GET", "/playground"), ("POST", "/playground/api/send"),
                         ("POST", "/playground/api/sessions")):
        async with bank.http.request(method, bank.sandbox_url + path, json={}) as r:
            assert r.status == 404, path
    async with bank.http.post(bank.sandbox_url + "/sandbox/apps") as r:
        assert r.status == 201
