"""The requests of the Open Banking UK DCR conformance tool (github.com/OpenBankingUK/conformance-dcr, spec
versions 3.2 and 3.3), restated in Python from its scenario steps — none of its code is copied here.

It is configured by the tool's own `config.json` (cmd/cli/config.go): the same file a bank gives the real tool
(docs/conformance.md). What it sends, as `pkg/compliant` does:

- discovery: `GET wellknown_endpoint` with a plain client (no client certificate); it reads
  `registration_endpoint`, `token_endpoint`, `token_endpoint_auth_methods_supported` (tls_client_auth is chosen
  when listed, then private_key_jwt, …), `request_object_signing_alg_values_supported` (its first value, else
  "none"), `token_endpoint_auth_signing_alg_values_supported` (must hold PS256) and `response_types_supported`
  (the values among "code" and "code id_token");
- every other call over mutual TLS with `transport_cert`/`transport_key`, trusting `transport_root_cas`;
- the registration request: a JWT signed PS256 by `private_key` with header `{alg, kid, typ: JWT}` and the
  claims of `auth/signer.go` (a string `scope` "accounts openid", `tls_client_auth_subject_dn` for
  tls_client_auth, `token_endpoint_auth_signing_alg` for private_key_jwt), POSTed as `application/jose` with
  `Accept: application/json` and no bearer token;
- the token: `client_credentials` with `scope=` (empty) — tls_client_auth sends `client_id` and the
  certificate, private_key_jwt a client assertion signed PS256 with no `kid` and `aud` = the token endpoint;
- GET, PUT (the same signed request) and DELETE on `registration_endpoint/{client_id}` with the token.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography import x509
from jwcrypto import jwk

from tests.sandbox.conftest import sign_jws

JOSE = "application/jose"
FORM = "application/x-www-form-urlencoded"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_GRANT_TYPES = ["authorization_code", "client_credentials"]
SCOPE = "accounts openid"


@dataclass
class Response:
    """One answer: status, headers (names lower-cased) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __str__(self) -> str:  # what an assertion message shows
        return f"{self.status} {self.content_type} {self.body[:600]!r}"


@dataclass
class ObTool:
    """The OB tool's requests, configured by its config.json. `headers_for(method, client_id)` adds headers a
    profile needs beyond the tool's (the bank's profile: a bearer token and a `client_id` header)."""

    config: dict[str, Any]
    workdir: Path
    """Where the transport certificate and key are written for the TLS library (the test's directory)."""
    discovery: dict[str, Any] = field(default_factory=dict)
    headers_for: Any = None

    def __post_init__(self) -> None:
        self._key = jwk.JWK.from_pem(self.config["private_key"].encode())
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.workdir / "cert.pem").write_text(self.config["transport_cert"])
        (self.workdir / "key.pem").write_text(self.config["transport_key"])
        self._mtls = ssl.create_default_context(cadata="\n".join(self.config["transport_root_cas"]))
        self._mtls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._mtls.load_cert_chain(self.workdir / "cert.pem", self.workdir / "key.pem")
        self._plain = ssl.create_default_context(cadata="\n".join(self.config["transport_root_cas"]))

    # -- transport -------------------------------------------------------------------------------------

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                mtls: bool = True) -> Response:
        """One HTTPS request (a new connection; mutual TLS unless `mtls` is False)."""
        parts = urlsplit(url)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=30,
                                           context=self._mtls if mtls else self._plain)
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body, headers=dict(headers or {}))
            answer = conn.getresponse()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
        finally:
            conn.close()

    def _extra(self, method: str, client_id: str | None) -> dict[str, str]:
        return dict(self.headers_for(method, client_id)) if self.headers_for is not None else {}

    # -- discovery (openid/config.go) -----------------------------------------------------------------

    def load_discovery(self) -> Response:
        """GET the well-known endpoint as the tool does before any scenario (a plain client, no certificate)."""
        answer = self.request("GET", self.config["wellknown_endpoint"], mtls=False)
        if answer.status == 200:
            self.discovery = answer.json()
        return answer

    @property
    def registration_endpoint(self) -> str:
        return str(self.discovery["registration_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.discovery["token_endpoint"])

    def response_types(self) -> list[str] | None:
        """response_type_resolver.go: "code" and "code id_token" among those supported (None: none given)."""
        supported = self.discovery.get("response_types_supported")
        if supported is None:
            return None
        return [t for t in supported if t in ("code", "code id_token")]

    # -- the registration request (auth/signer.go) ----------------------------------------------------

    def subject_dn(self) -> str:
        """`transport_cert_subject_dn`, else the certificate's subject as Go prints it (RFC 2253 order)."""
        if self.config.get("transport_cert_subject_dn"):
            return str(self.config["transport_cert_subject_dn"])
        cert = x509.load_pem_x509_certificate(self.config["transport_cert"].encode())
        return cert.subject.rfc4514_string()

    def claims(self, method: str, alg: str = "PS256", lifetime: int = 3600, **overrides: Any) -> dict[str, Any]:
        """The tool's registration claims for token endpoint auth `method`, its signing method `alg` (named in
        `id_token_signed_response_alg` and, for private_key_jwt, `token_endpoint_auth_signing_alg`) and JWT
        lifetime (`exp` = `iat` + `lifetime`); overrides replace (the builder's With… calls: `iss`,
        `response_types`)."""
        now = int(time.time())
        algs = self.discovery.get("request_object_signing_alg_values_supported") or ["none"]
        claims: dict[str, Any] = {
            "aud": self.config["aud"],
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "iss": self.config["issuer"],
            "grant_types": DEFAULT_GRANT_TYPES,
            "application_type": "web",
            "redirect_uris": self.config["redirect_uris"],
            "token_endpoint_auth_method": method,
            "software_statement": self.config["ssa"],
            "scope": SCOPE,
            "request_object_signing_alg": algs[0],
            "id_token_signed_response_alg": alg,
        }
        response_types = self.response_types()
        if response_types is not None:
            claims["response_types"] = response_types
        if method == "tls_client_auth":
            claims["tls_client_auth_subject_dn"] = self.subject_dn()
        if method in ("private_key_jwt", "client_secret_jwt"):
            claims["token_endpoint_auth_signing_alg"] = alg
        claims.update(overrides)
        return claims

    def signed(self, claims: dict[str, Any], alg: str = "PS256") -> str:
        """The JWT the tool POSTs: header {alg, kid, typ: JWT}."""
        return sign_jws(self._key, alg, self.config["kid"], claims, "JWT")

    # -- the calls (step/*.go) -------------------------------------------------------------------------

    def register(self, request_jwt: str) -> Response:
        """step/client_register.go: POST the JWT, application/jose, Accept application/json, no token."""
        headers = {"Content-Type": JOSE, "Accept": "application/json", **self._extra("POST", None)}
        return self.request("POST", self.registration_endpoint, body=request_jwt.encode(), headers=headers)

    def token_request(self, method: str, client_id: str) -> Response:
        """step/credentials_grant.go with client/tls_client.go or client/private_key_jwt.go: `scope=` empty."""
        if method == "tls_client_auth":
            form = {"client_id": client_id, "grant_type": "client_credentials", "scope": ""}
        elif method == "private_key_jwt":
            now = int(time.time())
            assertion = sign_jws(self._key, "PS256", None, {
                "iss": client_id, "sub": client_id, "aud": self.token_endpoint, "iat": now, "exp": now + 1800,
                "jti": str(uuid.uuid4()),
            }, "JWT")  # the tool's assertion header has no kid
            form = {"client_assertion": assertion, "client_assertion_type": JWT_BEARER,
                    "grant_type": "client_credentials", "scope": ""}
        else:
            raise ValueError(f"the tool's flow for {method} is not restated here")
        body = urlencode(sorted(form.items())).encode()  # Go's url.Values.Encode sorts by key
        return self.request("POST", self.token_endpoint, body=body, headers={"Content-type": FORM})

    def retrieve(self, client_id: str, access_token: str) -> Response:
        """step/client_retrieve.go: GET with `Authorization: Bearer <token>`."""
        headers = {"Authorization": "Bearer " + access_token, **self._extra("GET", client_id)}
        return self.request("GET", f"{self.registration_endpoint}/{client_id}", headers=headers)

    def update(self, client_id: str, request_jwt: str, access_token: str) -> Response:
        """step/client_update.go: PUT the signed request with the token."""
        headers = {"Content-Type": JOSE, "Accept": "application/json", "Authorization": "Bearer " + access_token,
                   **self._extra("PUT", client_id)}
        return self.request("PUT", f"{self.registration_endpoint}/{client_id}", body=request_jwt.encode(),
                            headers=headers)

    def delete(self, client_id: str, access_token: str) -> Response:
        """step/client_delete.go: DELETE with the token (the tool wants 204)."""
        headers = {"Authorization": "Bearer " + access_token, **self._extra("DELETE", client_id)}
        return self.request("DELETE", f"{self.registration_endpoint}/{client_id}", headers=headers)


# -- the registration response schema (schema/version32.go, version33.go) --------------------------------

_AUTH_METHODS = ("private_key_jwt", "client_secret_jwt", "client_secret_basic", "client_secret_post",
                 "tls_client_auth")
_GRANT_TYPES = {"3.2": ("client_credentials", "authorization_code", "refresh_token"),
                "3.3": ("client_credentials", "authorization_code", "refresh_token",
                        "urn:openid:params:grant-type:ciba")}
_STRING_FIELDS = ("client_id", "client_secret", "token_endpoint_auth_method", "software_id", "scope",
                  "software_statement", "application_type", "id_token_signed_response_alg",
                  "request_object_signing_alg", "token_endpoint_auth_signing_alg", "tls_client_auth_subject_dn")


def _ob_url(value: str) -> bool:
    """schema/rules.go: an https URI whose host is not localhost, 127.0.0.1 or *.localhost, no fragment."""
    parts = urlsplit(value)
    host = parts.netloc
    return (parts.scheme == "https" and host not in ("localhost", "127.0.0.1")
            and not host.endswith(".localhost") and not parts.fragment)


def schema_failures(body: dict[str, Any], spec_version: str) -> list[str]:
    """The tool's checks of a GET response for spec version 3.2 or 3.3 (empty: valid)."""
    failures: list[str] = []
    for name in _STRING_FIELDS:  # the tool decodes these into *string: another JSON type fails decoding
        if body.get(name) is not None and not isinstance(body[name], str):
            return [f"{name}: not a string"]
    for name in ("redirect_uris", "grant_types", "response_types"):
        if body.get(name) is not None and not isinstance(body[name], list):
            return [f"{name}: not an array"]

    def length(name: str, low: int, high: int, required: bool = False) -> None:
        value = body.get(name)
        if value is None or value == "":
            if required:
                failures.append(f"{name}: cannot be blank")
            return
        if not low <= len(value) <= high:
            failures.append(f"{name}: the length must be between {low} and {high}")

    length("client_id", 1, 36, required=True)
    length("client_secret", 1, 36)
    if not body.get("redirect_uris"):
        failures.append("redirect_uris: cannot be blank")
    for uri in body.get("redirect_uris") or []:
        if not 1 <= len(uri) <= 256 or not _ob_url(uri):
            failures.append(f"redirect_uris: {uri!r} is not an OB URL")
    if body.get("token_endpoint_auth_method") not in _AUTH_METHODS:
        failures.append("token_endpoint_auth_method: must be a valid value")
    if not body.get("grant_types"):
        failures.append("grant_types: cannot be blank")
    failures += [f"grant_types: {g!r}" for g in body.get("grant_types") or [] if g not in _GRANT_TYPES[spec_version]]
    failures += [f"response_types: {t!r}" for t in body.get("response_types") or [] if t not in ("code",
                                                                                                   "code id_token")]
    if body.get("software_id") and not re.fullmatch(r"[0-9a-zA-Z]{1,22}", body["software_id"]):
        failures.append("software_id: must be in a valid format")
    length("scope", 1, 256, required=True)
    if not body.get("software_statement"):
        failures.append("software_statement: cannot be blank")
    if body.get("application_type") not in ("web", "mobile"):
        failures.append("application_type: must be a valid value")
    length("id_token_signed_response_alg", 1, 5, required=True)
    length("request_object_signing_alg", 1, 5, required=True)
    length("token_endpoint_auth_signing_alg", 1, 5)
    length("tls_client_auth_subject_dn", 1, 128)
    method = body.get("token_endpoint_auth_method")
    if method in ("private_key_jwt", "client_secret_jwt") and not body.get("token_endpoint_auth_signing_alg"):
        failures.append("token_endpoint_auth_signing_alg MUST be specified if token_endpoint_auth_method is "
                        "private_key_jwt or client_secret_jwt")
    if method == "tls_client_auth" and not body.get("tls_client_auth_subject_dn"):
        failures.append("tls_client_auth_subject_dn MUST be set if token_endpoint_auth_method is set to "
                        "tls_client_auth")
    return failures
