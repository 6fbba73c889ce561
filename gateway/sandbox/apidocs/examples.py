"""The example calls of the DCR flow, read from the OpenAPI document: one template per call, shared by the code
samples of the documentation page and by the Postman collection.

A template names what the caller fills in as a Postman variable, `{{name}}` (`VARIABLES`): Postman keeps it
as it is; the page's samples replace it with the caller's value or a placeholder such as `<ACCESS_TOKEN>`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, quote_plus

from ..samples import Call

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 §2.2: a private_key_jwt client assertion."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A value the caller fills in: its description and the placeholder the samples show without it."""

    description: str
    secret: bool = False

    def placeholder(self, name: str) -> str:
        """`<NAME>`: what a sample shows until the caller gives the value."""
        return f"<{name.upper()}>"


VARIABLES: Final = {
    "baseUrl": Variable("The gateway's public URL (the document's server)"),
    "app_client_id": Variable("The developer app's client_id (sandbox portal: POST /sandbox/apps)"),
    "app_client_secret": Variable("The developer app's client_secret (shown once by the portal)", secret=True),
    "app_access_token": Variable("The developer app's access token (client_credentials): it registers clients",
                                 secret=True),
    "registration_jwt": Variable("A signed registration request (compact JWS; its jti is accepted once): "
                                 "dcr-gateway sandbox sign-request, or the playground", secret=True),
    "client_id": Variable("The registered client's client_id (the 201 answer of POST /register)"),
    "client_assertion": Variable("A private_key_jwt client assertion of the registered client: "
                                 "dcr-gateway sandbox client-assertion", secret=True),
    "access_token": Variable("The registered client's access token (client_credentials with its assertion)",
                             secret=True),
}
"""Every `{{name}}` a template may hold, in the order the flow meets them."""

_REFERENCE: Final = re.compile(r"\{\{([A-Za-z_]+)\}\}")


@dataclass(frozen=True, slots=True)
class Example:
    """One call of the flow, with `{{name}}` variables; `operation_id` for the document's operations."""

    key: str
    title: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str | None = None
    form: tuple[tuple[str, str], ...] | None = None
    """An application/x-www-form-urlencoded body, as its fields (encoded when the sample is made)."""
    basic_auth: tuple[str, str] | None = None
    """client_secret_basic (RFC 6749 §2.3.1): the variables of the user name and the password."""
    operation_id: str | None = None
    description: str = ""
    success: int = 200
    sets: tuple[tuple[str, str], ...] = ()
    """(variable, field of the JSON answer) the Postman collection saves after a success."""

    @property
    def path(self) -> str:
        """The URL after `{{baseUrl}}`, still with its variables."""
        return self.url.removeprefix("{{baseUrl}}")


def _resolve(doc: Mapping[str, Any], node: Any) -> Any:
    """`node` with a local `$ref` (`#/components/...`) followed, once."""
    if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        return target
    return node


def _operation(doc: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]) -> Example:
    """The example call of one operation: its header, path and body parameters filled with variables."""
    # POST /register is made with the developer app's token; the others as the registered client itself.
    token, client = ("app_access_token", "app_client_id") if method == "post" else ("access_token", "client_id")
    headers: list[tuple[str, str]] = []
    url = "{{baseUrl}}" + path
    for param in (_resolve(doc, p) for p in op.get("parameters", [])):
        if param["in"] == "path":
            url = url.replace("{" + param["name"] + "}", "{{client_id}}")
        elif param["in"] == "header":
            if param["name"].lower() == "authorization":
                value = "Bearer {{" + token + "}}"
            elif param.get("schema", {}).get("enum"):
                value = str(param["schema"]["enum"][0])
            else:  # the client_id header: the client the token was issued to
                value = "{{" + client + "}}"
            headers.append((param["name"], value))
    body = None
    if "requestBody" in op:
        headers.append(("Content-Type", next(iter(op["requestBody"]["content"]))))
        body = "{{registration_jwt}}"
    codes = sorted(int(code) for code in op.get("responses", {}) if code.isdigit() and code.startswith("2"))
    return Example(
        key=op["operationId"], title=op.get("summary", op["operationId"]), method=method.upper(), url=url,
        headers=tuple(headers), body=body, operation_id=op["operationId"], description=op.get("description", ""),
        success=codes[0] if codes else 200, sets=(("client_id", "client_id"),) if method == "post" else (),
    )


def _token_url(doc: Mapping[str, Any]) -> str | None:
    """The client_credentials token URL of the document's OAuth 2.0 scheme, relative to its server."""
    base = doc["servers"][0]["url"]
    for scheme in doc.get("components", {}).get("securitySchemes", {}).values():
        url = scheme.get("flows", {}).get("clientCredentials", {}).get("tokenUrl")
        if isinstance(url, str):
            return "{{baseUrl}}" + url.removeprefix(base) if url.startswith(base) else url
    return None


def flow(doc: Mapping[str, Any]) -> list[Example]:
    """The flow's calls in order: the app's token, register, the client's token, read, update, delete."""
    operations = [_operation(doc, method, path, op)
                  for path, item in doc["paths"].items() for method, op in item.items()]
    token_url = _token_url(doc)
    if token_url is None:
        return operations
    accept = (("Accept", "application/json"),)
    form_type = (("Content-Type", "application/x-www-form-urlencoded"),)
    app_token = Example(
        key="app_token", title="Get the developer app's access token", method="POST", url=token_url,
        headers=form_type + accept, form=(("grant_type", "client_credentials"),),
        basic_auth=("app_client_id", "app_client_secret"), sets=(("app_access_token", "access_token"),),
        description="The client_credentials grant with the app's credentials (client_secret_basic): "
                    "POST /register needs this token.")
    client_token = Example(
        key="client_token", title="Get the registered client's access token", method="POST", url=token_url,
        headers=form_type + accept,
        form=(("grant_type", "client_credentials"), ("client_assertion_type", ASSERTION_TYPE),
              ("client_assertion", "{{client_assertion}}")),
        sets=(("access_token", "access_token"),),
        description="The client_credentials grant with a private_key_jwt assertion signed by the client's key: "
                    "GET, PUT and DELETE /register/{ClientId} need this token.")
    posts = [e for e in operations if e.method == "POST"]
    others = [e for e in operations if e.method != "POST"]
    return [app_token, *posts, client_token, *others]


def fill(template: str, values: Mapping[str, str], *, encode: bool = False) -> str:
    """`template` with each `{{name}}` replaced by its value, or by its placeholder when there is none.

    `encode`: form-urlencode the text and the values (RFC 6749 §2.3.1), never a placeholder, which stays
    readable."""
    out: list[str] = []
    parts = _REFERENCE.split(template)  # literal, name, literal, name, ..., literal
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(quote(part, safe="") if encode else part)
        elif part in values:
            out.append(quote(values[part], safe="") if encode else values[part])
        else:
            variable = VARIABLES.get(part)
            out.append(variable.placeholder(part) if variable is not None else "{{" + part + "}}")
    return "".join(out)


def call(example: Example, values: Mapping[str, str]) -> Call:
    """The example as one concrete HTTP call: values where the caller gave them, placeholders elsewhere."""
    headers = [(name, fill(value, values)) for name, value in example.headers]
    if example.basic_auth is not None:
        user, password = (values.get(name) for name in example.basic_auth)
        if user is not None and password is not None:
            pair = f"{quote_plus(user, safe='')}:{quote_plus(password, safe='')}"  # RFC 6749 §2.3.1: form-encoded
            credentials = base64.b64encode(pair.encode()).decode()
        else:
            credentials = "<BASE64(" + ":".join(name.upper() for name in example.basic_auth) + ")>"
        headers.insert(0, ("Authorization", "Basic " + credentials))
    body = fill(example.body, values) if example.body is not None else None
    if example.form is not None:
        body = "&".join(f"{quote(name, safe='')}={fill(value, values, encode=True)}" for name, value in example.form)
    return Call(method=example.method, url=fill(example.url, values), headers=headers, body=body)
