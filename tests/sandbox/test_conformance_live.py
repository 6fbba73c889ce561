"""The live product conforms to its OpenAPI document: schemathesis generates requests for each of the four
operations from the document the sandbox serves (/openapi.json) and sends them to the gateway as `make run` starts
it (`served`: `python -m gateway serve`, the shipped config.yaml on free 127.0.0.1 ports). Every answer must be a
documented status (the page's, the policies' 401 and the gateway's own refusals), with a documented content type,
documented headers and a body valid against its schema; never a 5xx.

Bounded and reproducible: `MAX_EXAMPLES` positive and `NEGATIVE_EXAMPLES` negative cases per operation,
derandomized (the same cases on every run), no example database, no shrinking; nothing leaves 127.0.0.1
(requests without proxies from the environment).

Each case is sent in one of three ways, in turn: as schemathesis generated it (random Authorization
and client_id: the policies' 401s); with a valid token and client_id header of the right client (the bank's own
answers: 400 for a generated body, 403/401 for another ClientId); or, for POST and PUT, also with a real signed
registration request as the body (201/200).
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.sandbox.cli import registration_claims
from gateway.sandbox.crypto import SigningKey, generate_key, jwks, sign
from gateway.sandbox.portal import TPP_JWKS_PATH
from tests.playground.conftest import Served, served  # noqa: F401 (the fixture)

pytestmark = pytest.mark.process

MAX_EXAMPLES = 30
NEGATIVE_EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
REGISTER = "/open-banking/v3.1/register"
REDIRECT = "https://tpp.example.com/callback"
WAYS = ("as_generated", "authenticated", "valid_request")

# A registration request is a compact JWS: sent as the text it is, whichever of the policy's media types.
schemathesis.serializer.alias("application/jose", "text/plain")
schemathesis.serializer.alias("application/jwt", "text/plain")


@dataclass
class Live:
    """The served product and a TPP's credentials on it (requests, no proxies)."""

    served: Served
    http: requests.Session
    key: SigningKey = field(default_factory=lambda: generate_key("ES256"))
    ssa: str = ""
    aud: str = ""
    app: tuple[str, str] = ("", "")

    def post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        r = self.http.post(url, timeout=30, **kwargs)
        assert r.status_code in (200, 201), (url, r.status_code, r.text)
        body: dict[str, Any] = r.json()
        return body

    def setup(self) -> Live:
        app = self.post(self.served.sandbox_url + "/sandbox/apps", json={"name": "conformance"})
        self.app = app["client_id"], app["client_secret"]
        hosted = self.post(self.served.sandbox_url + TPP_JWKS_PATH, json=jwks([self.key]))
        self.ssa = self.post(self.served.sandbox_url + "/sandbox/ssa", json={
            "software_jwks_endpoint": hosted["jwks_uri"], "software_redirect_uris": [REDIRECT]})["software_statement"]
        discovery = self.http.get(self.served.sandbox_url + "/.well-known/openid-configuration", timeout=10).json()
        self.aud = discovery["issuer"]
        return self

    def app_token(self) -> str:
        basic = base64.b64encode(f"{self.app[0]}:{self.app[1]}".encode()).decode()
        return str(self.post(self.served.gateway_url + "/oauth2/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": f"Basic {basic}"})["access_token"])

    def signed_request(self) -> str:
        return sign(self.key, registration_claims(self.key, self.ssa, aud=self.aud), typ="JWT")

    def new_client(self) -> str:
        """A newly registered client's id (through the gateway, with the app's token)."""
        r = self.http.post(self.served.gateway_url + REGISTER, data=self.signed_request(), timeout=30, headers={
            "Authorization": f"Bearer {self.app_token()}", "client_id": self.app[0],
            "Content-Type": "application/jose", "Accept": "application/json"})
        assert r.status_code == 201, r.text
        return str(r.json()["client_id"])

    def client_token(self, client_id: str) -> str:
        now = int(time.time())
        assertion = sign(self.key, {"iss": client_id, "sub": client_id, "aud": self.served.gateway_url +
                                    "/oauth2/token", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                         typ="JWT")
        return str(self.post(self.served.gateway_url + "/oauth2/token", data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})["access_token"])


def authenticate(live: Live, case: Any, way: str, own_client: str) -> None:
    """Replace the generated credentials (and, for `valid_request`, the body) of `case` as `way` says."""
    if way == "as_generated":
        return
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "client_id")}
    if case.method == "POST":
        client_id, token = live.app[0], live.app_token()
    else:
        # DELETE deletes: a client of its own each time; GET and PUT share one.
        client_id = live.new_client() if case.method == "DELETE" else own_client
        token = live.client_token(client_id)
        case.path_parameters = {**(case.path_parameters or {}), "ClientId": client_id}
    case.headers = {**headers, "Authorization": f"Bearer {token}", "client_id": client_id}
    if way == "valid_request" and case.method in ("POST", "PUT"):
        case.body = live.signed_request()
        case.media_type = "application/jose"


def exercise(live: Live, operation: Any, mode: GenerationMode, count: int, own_client: str,
             seen: dict[str, set[int]]) -> None:
    """`count` cases of `operation` in `mode`, each sent and validated (the first failure fails the test)."""

    sent = iter(range(count * 10))

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        way = WAYS[next(sent) % len(WAYS)]  # each way in turn, whatever was generated
        if mode is GenerationMode.NEGATIVE and way == "valid_request":
            way = "authenticated"  # keep the negated body
        authenticate(live, case, way, own_client)
        response = case.call(base_url=live.served.gateway_url, session=live.http, timeout=30)
        seen.setdefault(f"{case.method} {operation.path}", set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()


def test_the_live_gateway_conforms_to_its_openapi_document(served: Served) -> None:  # noqa: F811
    http = requests.Session()
    http.trust_env = False  # loopback only: no proxy from the environment
    live = Live(served, http).setup()
    doc = http.get(served.sandbox_url + "/openapi.json", timeout=10).json()
    assert doc["servers"][0]["url"] == served.gateway_url
    schema = schemathesis.openapi.from_dict(doc)
    own_client = live.new_client()
    started = time.monotonic()
    seen: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        ("POST", REGISTER), ("GET", REGISTER + "/{ClientId}"), ("PUT", REGISTER + "/{ClientId}"),
        ("DELETE", REGISTER + "/{ClientId}")}
    for operation in operations:
        for mode, count in ((GenerationMode.POSITIVE, MAX_EXAMPLES), (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
            exercise(live, operation, mode, count, own_client, seen)
    elapsed = time.monotonic() - started
    # Each operation was reached beyond the token check: the bank's own successes are among the answers.
    assert 201 in seen[f"POST {REGISTER}"] and 400 in seen[f"POST {REGISTER}"], seen
    assert 200 in seen[f"GET {REGISTER}/{{ClientId}}"], seen
    assert {200, 400} <= seen[f"PUT {REGISTER}/{{ClientId}}"], seen
    assert 204 in seen[f"DELETE {REGISTER}/{{ClientId}}"], seen
    assert all(401 in statuses for statuses in seen.values()), seen
    assert elapsed < 60, f"bounded: {elapsed:.0f} s"
