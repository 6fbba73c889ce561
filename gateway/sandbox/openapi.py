"""The OpenAPI 3.1 document of the bank's DCR API as this gateway enforces it (issue 17).

Built from three sources so it cannot drift from what runs:
- the OB DCR OpenAPI files shipped with the package (`reference/`, copies of the Open Banking 3.3 and 3.1.1
  specifications): the schemas of the registration request and response and of the RFC 7591 error;
- the policies the settings select (`policies.dir`, by profile): which operation needs a bearer token, the
  `client_id` header or a TLS client certificate (`client_certificate` required and not in audit mode); the
  accepted content types, JWS algorithms and registration metadata (`content_type`, `registration_request`,
  `registration_metadata`), read through each check's own parameter model so defaults apply as at run time;
- the bank's page (`dcr-psd2-api.txt`): the four operations and their status codes (`PAGE_STATUSES`);
- the gateway's own refusals, which it can answer on any operation before a policy decides (`GATEWAY_REFUSALS`:
  413, 415, 429, 502, 503, 504), as shared `components/responses` every operation refers to;
- real exchanges recorded by `python -m gateway.sandbox.examples` (`reference/examples.json`): the request and
  response examples, embedded when the document's profile is the one they were recorded with.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from aiohttp import web
from pydantic import ValidationError

from ..checks import REGISTRY
from ..checks.client_certificate import ClientCertificateParams
from ..checks.client_id_header import ClientIdHeaderParams
from ..checks.content_type import ContentTypeParams
from ..checks.registration_metadata import RegistrationMetadataParams
from ..checks.registration_request import RegistrationRequestParams
from ..config import Settings
from ..config.yamlsource import YamlSourceError, parse_yaml
from ..jsonutil import dumps
from ..observability.logging import get_logger
from ..policy.engine import CommonCheckParams, split_common
from ..policy.loader import PolicyError, read_source
from ..policy.model import PolicyFile
from .service import REGISTRATION_PATH, TOKEN_PATH

log = get_logger("sandbox.openapi")

REFERENCE_DIR: Final = Path(__file__).parent / "reference"
EXAMPLES_FILE: Final = REFERENCE_DIR / "examples.json"
"""Real exchanges recorded by `python -m gateway.sandbox.examples` (gateway/sandbox/examples.py)."""
OB_CURRENT: Final = "ob-dcr-v3.3-openapi.yaml"
"""The OB specification whose schemas the document reuses (claim names of 3.2+: tls_client_auth_subject_dn)."""
OB_LEGACY: Final = "ob-dcr-v3.1.1-openapi.yaml"
"""OB 3.1.1: the `tls_client_auth_dn` claim the gateway also accepts (the path says v3.1)."""

ITEM_PATH: Final = REGISTRATION_PATH + "/{ClientId}"
OPERATIONS: Final = (("post", REGISTRATION_PATH), ("get", ITEM_PATH), ("put", ITEM_PATH), ("delete", ITEM_PATH))
PAGE_STATUSES: Final[Mapping[str, tuple[int, ...]]] = {
    "post": (201, 400),
    "get": (200, 401, 403),
    "put": (200, 400, 401, 403),
    "delete": (204, 401, 403, 405),
}
"""The responses the bank's page lists for each operation: the contract."""
GATEWAY_REFUSALS: Final[Mapping[int, tuple[str, str]]] = {
    413: ("RequestTooLarge", "The body exceeds the gateway's limit (server.max_body_bytes) or the policy's "
                             "body_size (request_too_large)"),
    415: ("UnsupportedMediaType", "A content-coded body (Content-Encoding) the policy does not accept: the gateway "
                                  "inspects plain bodies only (invalid_request)"),
    429: ("TooManyRequests", "Too many requests: a rate_limit policy's budget is spent, or too many concurrent "
                             "requests from one client (too_many_requests; Retry-After)"),
    502: ("BadGateway", "The bank's registration backend cannot be reached (bad_gateway)"),
    503: ("ServiceUnavailable", "A dependency the decision needs is unavailable: token keys, shared state "
                                "(temporarily_unavailable; the gateway fails closed, Retry-After when known)"),
    504: ("GatewayTimeout", "The bank's registration backend did not answer in time (gateway_timeout)"),
}
"""The gateway's own refusals on any operation, whatever the policy (docs/sandbox.md, "OpenAPI document"): shared
responses with the `GatewayError` body, so a response the gateway can give is always documented."""
UNMATCHED: Final = ("NoSuchEndpoint", "No policy matches the path (policies.unmatched_status): a ClientId that "
                                      "is a dot segment, holds an encoded `/` or `\\`, or is not UTF-8 is never "
                                      "routed, so no upstream can read it as another resource (not_found)")
"""The gateway's answer to a path no policy's template matches, on the operations with a path parameter."""
OAUTH: Final = "TPPOAuth2Security"
MTLS: Final = "TPPMutualTLS"

_SUMMARIES: Final = {
    "post": ("createClient", "Create a new client",
             "Register a client with a signed registration request (a JWS whose claims are OBClientRegistration1 "
             "and whose software_statement is an SSA). 201 with the client_id, the client_secret (returned only "
             "here) and the registered metadata; 400 with an RFC 7591 error otherwise."),
    "get": ("getClient", "Returns the client details for a given Client ID",
            "The registration of the caller's own client. An unknown ClientId answers 401 and revokes the access "
            "token; so does another client's with the shipped policies (403 where client_ownership has "
            "`status: 403`)."),
    "put": ("updateClient", "Modify one or more attributes related to an existing TPP client",
            "Replace the registration with a new signed request carrying every claim. An unknown ClientId answers "
            "401 and revokes the access token."),
    "delete": ("deleteClient", "Delete an existing TPP client",
               "Delete the caller's own client and revoke every token issued to it. 405 for a developer-portal "
               "app, which DCR cannot delete."),
}
_DESCRIPTIONS: Final = {
    200: "The client's registration", 201: "Client registered", 204: "Client deleted",
    400: "The request is invalid (RFC 7591 §3.2.2 error)",
    401: "Missing, invalid or revoked access token, client_id header or client certificate, or an unknown "
         "ClientId (the token is then revoked) (RFC 6750 §3 error)",
    403: "The access token belongs to another client (RFC 7592 §2). The shipped policies answer it at the "
         "gateway with 401 (client_ownership's status, the token revoked); 403 with `status: 403` there",
    405: "Method not allowed for this client (a developer-portal app cannot be deleted through DCR)",
}


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((REFERENCE_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_examples(path: Path = EXAMPLES_FILE) -> dict[str, Any] | None:
    """The recorded examples, or None when the file is absent."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


def _policy_checks(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path) → {check name: its validated parameters} for every shipped policy of the profile."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path, text in read_source(settings.resolve_path(settings.policies.dir)).files:
        try:
            doc = parse_yaml(text, path)
            spec = PolicyFile.model_validate(doc.data if doc.data is not None else {})
            policies = [(policy, _enforced_checks(policy.checks, settings)) for policy in spec.policies]
        except (YamlSourceError, ValidationError, KeyError) as exc:
            raise PolicyError([f"{path}: invalid policy file ({type(exc).__name__}: {exc}); "
                               f"`dcr-gateway policy lint` says where"]) from None
        for policy, checks in policies:
            if policy.mode == "audit":
                continue  # nothing it checks is enforced
            for method in policy.match.methods:
                out[(method.lower(), policy.match.path)] = checks
    return out


def _enforced_checks(entries: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """{check name: its validated parameters} for the checks of a policy that are not in audit mode, by the
    rule the policy compiler follows (`PolicySettings.check_mode`: the check's `mode` and `check_modes`)."""
    checks: dict[str, Any] = {}
    for entry in entries:
        (name, raw), = entry.items()
        own, common = split_common(raw if raw is not None else {})
        if not settings.policies.check_mode(name, CommonCheckParams.model_validate(common).mode).audit:
            checks[name] = REGISTRY[name].Params.model_validate(own)
    return checks


def _security(checks: Mapping[str, Any]) -> list[dict[str, list[str]]]:
    requirement: dict[str, list[str]] = {}
    if "bearer_token" in checks:
        requirement[OAUTH] = []
    cert = checks.get("client_certificate")
    if isinstance(cert, ClientCertificateParams) and cert.required:
        requirement[MTLS] = []
    return [requirement]


def _enums(props: dict[str, Any], meta: RegistrationMetadataParams) -> None:
    """Narrow the OB claim enums to what `registration_metadata` accepts."""
    props["token_endpoint_auth_method"]["enum"] = list(meta.token_endpoint_auth_methods)
    props["grant_types"]["items"]["enum"] = list(meta.grant_types)
    props["response_types"]["items"]["enum"] = list(meta.response_types)
    props["application_type"]["enum"] = list(meta.application_types)


def _schemas(ob: dict[str, Any], legacy: dict[str, Any], meta: RegistrationMetadataParams,
             audiences: tuple[str, ...]) -> dict[str, Any]:
    schemas: dict[str, Any] = copy.deepcopy(ob["components"]["schemas"])
    # OB's aud is the ASPSP's directory id (Base62, 18 characters); the gateway accepts what
    # trust.registration_audiences names (by default its public URL): a URL does not match OB's pattern.
    claims = schemas["OBClientRegistration1"]["allOf"][0]["properties"]
    claims["aud"] = {"description": "The audience for the request: one of the bank's registration audiences "
                                    f"(trust.registration_audiences; here {', '.join(audiences)})",
                     "type": "string", "minLength": 1, "examples": list(audiences)}
    schemas["SupportedAlgorithms"]["enum"] = list(meta.signing_algorithms)
    props_schema = schemas["OBRegistrationProperties1"]
    props = props_schema["properties"]
    props["tls_client_auth_dn"] = {
        **copy.deepcopy(legacy["components"]["schemas"]["OBRegistrationProperties1"]["properties"]
                        ["tls_client_auth_dn"]),
        "description": "OB DCR 3.1 name of tls_client_auth_subject_dn (accepted too)",
    }
    _enums(props, meta)
    props_schema["required"] = list(dict.fromkeys(("redirect_uris", "software_statement", *meta.required_claims)))
    response_props = copy.deepcopy(props)  # the sandbox echoes the registered SSA too (software_statement)
    schemas["ClientRegistrationResponse"] = {
        "description": "The registered client (RFC 7591 §3.2.1): client_id, on creation client_secret, and the "
                       "registered metadata.",
        "type": "object",
        "required": ["client_id"],
        "properties": response_props,
    }
    schemas["BearerError"] = {
        "description": "RFC 6750 §3.1 / RFC 7592 error (on 401 the WWW-Authenticate header carries it too)",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "examples": ["invalid_token", "invalid_request", "access_denied"]},
            "error_description": {"type": "string"},
        },
    }
    schemas["GatewayError"] = {
        "description": "A refusal of the gateway itself, before any policy decides (RFC 6749 §5.2 style)",
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "examples": ["request_too_large", "invalid_request", "too_many_requests",
                                                      "temporarily_unavailable", "bad_gateway", "gateway_timeout"]},
            "error_description": {"type": "string"},
        },
    }
    return schemas


def _request_body(content_types: ContentTypeParams, request: RegistrationRequestParams,
                  examples: list[dict[str, Any]]) -> dict[str, Any]:
    schema = {
        "type": "string",
        "description": f"A compact JWS signed with {' or '.join(request.algorithms)} by a key of the SSA's "
                       f"software_jwks; lifetime (exp - iat) at most {request.max_lifetime_seconds:g} s.",
        "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        "contentMediaType": "application/jwt",
        "contentSchema": {"$ref": "#/components/schemas/OBClientRegistration1"},
    }
    content: dict[str, Any] = {media: {"schema": schema} for media in content_types.allowed}
    shown = {_example_key(x): {"summary": x["summary"], "value": x["request"]["body"]} for x in examples
             if isinstance(x["request"].get("body"), str) and x["response"]["status"] in (200, 201, 400)}
    media_type = next((x["request"]["headers"].get("Content-Type") for x in examples), None)
    if shown and media_type in content:
        content[media_type]["examples"] = shown
    return {
        "description": "A request to register a Software Statement Assertion with the bank",
        "required": True,
        "content": content,
    }


def _example_key(exchange: Mapping[str, Any]) -> str:
    return f"{exchange['response']['status']}-{exchange['name']}"


def _with_examples(response: dict[str, Any], recorded: list[dict[str, Any]]) -> dict[str, Any]:
    """`response` with the recorded exchanges' bodies as its examples and their headers as its headers' example."""
    media = response.get("content", {}).get("application/json")
    if media is not None and recorded:
        media.pop("example", None)
        media["examples"] = {x["name"]: {"summary": x["summary"], "value": x["response"]["body"]} for x in recorded}
    for name, header in response.get("headers", {}).items():
        value = next((v for x in recorded for k, v in x["response"]["headers"].items() if k.lower() == name.lower()),
                     None)
        if value is not None:
            header["example"] = value
    return response


def _json(schema: str, example: dict[str, str] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _responses(method: str, checks: Mapping[str, Any], examples: list[dict[str, Any]], unmatched: int
               ) -> dict[str, Any]:
    statuses = set(PAGE_STATUSES[method])
    if "bearer_token" in checks or "client_id_header" in checks:
        statuses.add(401)
    out: dict[str, Any] = {}
    for status in sorted(statuses):
        response: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
        if status in (200, 201):
            response["content"] = _json("ClientRegistrationResponse")
        elif status == 400:
            response["content"] = _json("RegistrationError", {
                "error": "invalid_client_metadata",
                "error_description": "token_endpoint_auth_method 'none' is not allowed"})
        elif status != 204:
            error = {401: "invalid_token", 403: "access_denied", 405: "method_not_allowed"}[status]
            if status == 401:
                response["headers"] = {"WWW-Authenticate": {
                    "description": "RFC 6750 §3 challenge", "schema": {"type": "string", "pattern": "^Bearer.*"}}}
            elif status == 405:
                response["headers"] = {"Allow": {"description": "The methods allowed", "schema": {"type": "string"}}}
            response["content"] = _json("BearerError", {"error": error, "error_description": _DESCRIPTIONS[status]})
        out[str(status)] = _with_examples(response, [x for x in examples if x["response"]["status"] == status])
    for status, (name, _) in GATEWAY_REFUSALS.items():
        out.setdefault(str(status), {"$ref": f"#/components/responses/{name}"})
    if method != "post":
        out.setdefault(str(unmatched), {"$ref": f"#/components/responses/{UNMATCHED[0]}"})
    return dict(sorted(out.items()))


def _gateway_responses(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The shared responses of `GATEWAY_REFUSALS`, with the recorded examples of each status."""
    out: dict[str, Any] = {}
    for status, (name, description) in GATEWAY_REFUSALS.items():
        response: dict[str, Any] = {"description": description, "content": _json("GatewayError")}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying, when known",
                                                   "schema": {"type": "string"}}}
        out[name] = _with_examples(response, [x for x in examples if x["response"]["status"] == status])
    out[UNMATCHED[0]] = {"description": UNMATCHED[1], "content": _json("GatewayError")}
    return out


def _parameters(method: str, checks: Mapping[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [{"$ref": "#/components/parameters/Accept"}]
    if "bearer_token" in checks:
        params.append({"$ref": "#/components/parameters/Authorization"})
    header = checks.get("client_id_header")
    if isinstance(header, ClientIdHeaderParams):
        params.append({"in": "header", "name": header.header, "required": True, "schema": {"type": "string"},
                       "description": "Client Id generated during app registration: the client the access "
                                      "token was issued to."})
    if method != "post":
        params.append({"$ref": "#/components/parameters/ClientId"})
    return params


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `settings` (its public URL, profile and policies)."""
    ob, legacy = _load(OB_CURRENT), _load(OB_LEGACY)
    policies = _policy_checks(settings)
    public = settings.server.public_url
    meta = RegistrationMetadataParams()
    recorded = load_examples()
    exchanges: list[dict[str, Any]] = (
        list(recorded["exchanges"]) if recorded and recorded.get("profile") == settings.policies.profile else [])
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        checks = policies.get((method, path))
        if checks is None:
            continue  # the profile has no policy for it: the gateway answers policies.unmatched_status
        meta = checks.get("registration_metadata", meta)
        op_id, summary, description = _SUMMARIES[method]
        examples = [x for x in exchanges if (x["method"], x["path"]) == (method, path)
                    and x["response"]["status"] not in GATEWAY_REFUSALS]
        operation: dict[str, Any] = {
            "operationId": op_id,
            "summary": summary,
            "description": description,
            "tags": ["Client Registration"],
            "parameters": _parameters(method, checks),
            "security": _security(checks),
            "responses": _responses(method, checks, examples, settings.policies.unmatched_status),
        }
        if method in ("post", "put"):
            operation["requestBody"] = _request_body(
                checks.get("content_type", ContentTypeParams(allowed=("application/jose",))),
                checks.get("registration_request", RegistrationRequestParams()), examples)
        paths.setdefault(path, {})[method] = operation
    ob_params = ob["components"]["parameters"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Dynamic Client Registration PSD2",
            "version": f"{ob['info']['version']}-{settings.policies.profile}",
            "summary": f"The bank's DCR API as this gateway enforces it ({settings.policies.profile} profile)",
            "description": ob["info"]["description"].strip(),
            "license": ob["info"]["license"],
        },
        "servers": [{"url": public, "description": "the gateway's public URL"}],
        "tags": [{"name": "Client Registration"}],
        "paths": paths,
        "components": {
            "parameters": {
                "Accept": {"in": "header", "name": "Accept", "required": False,
                           "schema": {"type": "string", "enum": ["application/json"]},
                           "description": "The bank's page lists it; responses are application/json."},
                "Authorization": ob_params["Authorization"],
                "ClientId": ob_params["ClientId"],
            },
            "responses": _gateway_responses(exchanges),
            "schemas": _schemas(ob, legacy, meta, settings.trust.registration_audiences),
            "securitySchemes": {
                OAUTH: {
                    "type": "oauth2",
                    "description": "A client_credentials access token of the client (RFC 6749 §4.4), sent as "
                                   "`Authorization: Bearer` (RFC 6750).",
                    "flows": {"clientCredentials": {"tokenUrl": public + TOKEN_PATH, "scopes": {}}},
                },
                MTLS: {
                    "type": "mutualTLS",
                    "description": "The TPP's transport certificate (OBWAC or eIDAS QWAC) over mutual TLS, "
                                   "terminated by the ingress in front of the gateway.",
                },
            },
        },
    }


DOCUMENT = web.AppKey("dcr_openapi_document", dict)
"""The document the sandbox serves (absent when its policies cannot be read): what the documentation page and
the Postman collection are built from."""

FORMATS: Final = {"json": "application/json", "yaml": "application/yaml"}
"""Serialisations of the document and their media types (application/yaml: RFC 9512)."""


def render(doc: Mapping[str, Any], fmt: str) -> str:
    """The document as JSON (indented) or YAML (keys in document order), ending with a newline."""
    if fmt == "yaml":
        text: str = yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=120)
        return text
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def add_routes(app: web.Application, settings: Settings) -> None:
    """`/openapi.json` and `/openapi.yaml` on the sandbox listener, rendered once from `document(settings)`."""
    try:
        doc: dict[str, Any] | None = document(settings)
    except PolicyError as exc:
        # The sandbox still serves the rest: its own config may point at no policy directory (run on its own).
        log.warning("openapi_unavailable", error=str(exc))
        doc, problem = None, dumps({"error": "temporarily_unavailable",
                                    "error_description": f"the API's policies cannot be read: {exc}"})
    if doc is not None:
        app[DOCUMENT] = doc
    for fmt, media in FORMATS.items():
        if doc is None:
            body, media, status = problem, "application/json", 503
        else:
            body, status = render(doc, fmt).encode(), 200

        async def serve(_: web.Request, body: bytes = body, media: str = media, status: int = status
                        ) -> web.Response:
            return web.Response(status=status, body=body, content_type=media, charset="utf-8")

        app.router.add_get(f"/openapi.{fmt}", serve)
