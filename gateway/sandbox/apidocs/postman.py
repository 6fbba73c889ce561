"""The Postman collection (format v2.1.0) and environment of the DCR flow, built from the OpenAPI document.

The requests are `examples.flow(doc)`, the templates the documentation page's samples are made from, so the
collection and the page cannot disagree; what the caller fills in are the collection's `{{variables}}`, which
the environment lists (`examples.VARIABLES`). Each request's test script checks the documented status and
saves what the next request needs (the tokens, the registered client_id).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from .examples import VARIABLES, Example, flow

SCHEMA: Final = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
_NAMESPACE: Final = uuid.UUID("6f1c3a52-8d0e-4d7e-9d55-1f0e2a3b4c5d")
"""Postman ids are derived from the document's title and version, so a download is stable."""


def _id(doc: Mapping[str, Any], what: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{what}:{doc['info']['title']}:{doc['info']['version']}"))


def _url(example: Example) -> dict[str, Any]:
    path = example.path.strip("/").split("/")
    if example.url.startswith("{{baseUrl}}"):
        return {"raw": example.url, "host": ["{{baseUrl}}"], "path": path}
    return {"raw": example.url}


def _tests(example: Example) -> list[str]:
    lines = [
        f'pm.test("status is {example.success}", function () {{',
        f"    pm.response.to.have.status({example.success});",
        "});",
    ]
    if example.sets:
        lines.append(f"if (pm.response.code === {example.success}) {{")
        lines.append("    const body = pm.response.json();")
        lines += [f'    pm.environment.set("{variable}", body["{field}"]);' for variable, field in example.sets]
        lines.append("}")
    return lines


def _item(example: Example) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": example.method,
        "header": [{"key": name, "value": value, "type": "text"} for name, value in example.headers],
        "url": _url(example),
        "description": example.description,
    }
    if example.basic_auth is not None:
        user, password = example.basic_auth
        request["auth"] = {"type": "basic", "basic": [
            {"key": "username", "value": "{{" + user + "}}", "type": "string"},
            {"key": "password", "value": "{{" + password + "}}", "type": "string"},
        ]}
    if example.form is not None:
        request["body"] = {"mode": "urlencoded",
                           "urlencoded": [{"key": k, "value": v, "type": "text"} for k, v in example.form]}
    elif example.body is not None:
        request["body"] = {"mode": "raw", "raw": example.body}
    return {
        "name": example.title,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": _tests(example)}}],
        "request": request,
        "response": [],
    }


def collection(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The collection of the flow: the app's token, register, the client's token, read, update, delete."""
    return {
        "info": {
            "_postman_id": _id(doc, "collection"),
            "name": f"{doc['info']['title']} (sandbox)",
            "description": f"{doc['info'].get('summary', '')}. Generated from the sandbox's OpenAPI document "
                           f"(version {doc['info']['version']}); run the requests in order with the environment "
                           "of the same name, filling in the variables the test scripts do not set.",
            "schema": SCHEMA,
        },
        "item": [_item(example) for example in flow(doc)],
        "variable": [{"key": "baseUrl", "value": doc["servers"][0]["url"], "type": "string"}],
    }


def environment(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The environment: every variable of the collection, `baseUrl` set to the document's server."""
    base = doc["servers"][0]["url"]
    return {
        "id": _id(doc, "environment"),
        "name": f"{doc['info']['title']} (sandbox)",
        "values": [
            {"key": name, "value": base if name == "baseUrl" else "", "type": "secret" if var.secret else "default",
             "enabled": True}
            for name, var in VARIABLES.items()
        ],
        "_postman_variable_scope": "environment",
    }
