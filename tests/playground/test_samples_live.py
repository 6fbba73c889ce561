"""Every runnable language's samples drive the bank's whole DCR flow against the product as `make run` starts it.

`python -m gateway serve` with the shipped config and policies (the `served` fixture, one per module) on free
loopback ports. Per language — cURL, Ruby, Python, PHP, Java, Node, Go — each gateway call is made by running
the sample the playground generates for it (`POST /playground/api/send` with `"send": false`, exactly what a
developer copies), and must get the status the bank's page documents: the app's token 200, register 201, the
client's token 200, GET 200, PUT 200, DELETE 204, then GET 401. Only the set-up the developer portal and the
playground's key session do (app, key, SSA, signatures) is made here over HTTP. Swift has no Debian toolchain:
its sample is checked structurally in test_snippets.py.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.playground.conftest import RUNNABLE, Served, require_toolchain, run_sample, sample_output
from tests.sandbox.conftest import REDIRECT, REGISTER, unverified

FORM = "application/x-www-form-urlencoded"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Sandbox:
    """The served sandbox's portal and playground API, spoken to directly (no proxy)."""

    url: str

    def post(self, path: str, data: dict[str, Any] | None, expect: int) -> Any:
        """POST a JSON body (GET without one); asserts the status and returns the JSON answer."""
        request = urllib.request.Request(self.url + path, data=json.dumps(data).encode() if data else None,
                                         method="POST" if data else "GET",
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        assert status == expect, (path, status, body[:500])
        return json.loads(body)

    def sign(self, session: dict[str, Any], claims: dict[str, Any]) -> str:
        """A compact JWS over `claims` with the session's key."""
        return str(self.post(f"/playground/api/sessions/{session['session_id']}/sign", {"claims": claims}, 200)["jws"])


def registration(ssa: str, audience: str, **overrides: Any) -> dict[str, Any]:
    """The claims of a private_key_jwt registration request (ES256) for the SSA's software."""
    software_id = unverified(ssa)[1]["software_id"]
    now = int(time.time())
    return {"iss": software_id, "iat": now, "exp": now + 300, "aud": audience, "jti": str(uuid.uuid4()),
            "software_id": software_id, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "ES256", "grant_types": ["client_credentials"],
            "scope": "accounts payments", "software_statement": ssa, "application_type": "web",
            "id_token_signed_response_alg": "ES256", "request_object_signing_alg": "ES256", **overrides}


@pytest.mark.process
@pytest.mark.parametrize("lang", RUNNABLE)
def test_the_whole_flow_with_one_languages_samples(served: Served, lang: str) -> None:
    """Token 200, POST 201, client token 200, GET 200, PUT 200, DELETE 204, GET 401 — each call made by running
    `lang`'s sample, through the gateway and its shipped policies."""
    require_toolchain(lang)
    sandbox = Sandbox(served.sandbox_url)
    config = sandbox.post("/playground/api/config", None, 200)
    session = sandbox.post("/playground/api/sessions", {"alg": "ES256"}, 201)

    def call(method: str, path: str, headers: dict[str, str], body: str | None, expect: int) -> Any:
        """Have the playground write the call as `lang` code, run it, assert the printed status."""
        report = sandbox.post("/playground/api/send", {"target": "gateway", "method": method, "path": path,
                                                       "headers": headers, "body": body, "send": False}, 200)
        assert report["request"]["url"] == served.gateway_url + path and "response" not in report
        status, answer = sample_output(lang, run_sample(lang, report["snippets"][lang]))
        assert status == expect, (lang, method, path, answer)
        return answer

    app = sandbox.post("/sandbox/apps", {"name": f"samples-{lang}"}, 201)
    basic = base64.b64encode(f"{app['client_id']}:{app['client_secret']}".encode()).decode()
    app_token = call("POST", "/oauth2/token", {"Authorization": f"Basic {basic}", "Content-Type": FORM,
                                               "Accept": "application/json"}, "grant_type=client_credentials",
                     200)["access_token"]

    ssa = sandbox.post("/sandbox/ssa", {"software_jwks_endpoint": session["jwks_uri"],
                                        "software_redirect_uris": [REDIRECT], "software_roles": ["AISP", "PISP"]},
                       201)["software_statement"]
    created = call("POST", REGISTER, {"Authorization": f"Bearer {app_token}", "client_id": app["client_id"],
                                      "Content-Type": "application/jose", "Accept": "application/json"},
                   sandbox.sign(session, registration(ssa, config["audience"])), 201)
    client_id = created["client_id"]

    now = int(time.time())
    assertion = sandbox.sign(session, {"iss": client_id, "sub": client_id, "aud": config["token_endpoint"],
                                       "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())})
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                   "client_assertion": assertion})
    client_token = call("POST", "/oauth2/token", {"Content-Type": FORM, "Accept": "application/json"}, form,
                        200)["access_token"]

    path = f"{REGISTER}/{client_id}"
    me = {"Authorization": f"Bearer {client_token}", "client_id": client_id, "Accept": "application/json"}
    assert call("GET", path, me, None, 200)["client_id"] == client_id
    updated = call("PUT", path, {**me, "Content-Type": "application/jose"},
                   sandbox.sign(session, registration(ssa, config["audience"], scope="accounts")), 200)
    assert updated["client_id"] == client_id and updated["scope"] == "accounts"
    assert call("DELETE", path, me, None, 204) == ""
    gone = call("GET", path, me, None, 401)
    assert gone["error"] == "invalid_token" and gone["error_description"] == "the access token has been revoked"
