"""The OpenAPI document's examples are real exchanges (gateway/sandbox/examples.py, reference/examples.json): each
validates against its schema in the document, sits under a documented status, and recording the flow again with
the product as `make run` starts it gives the same exchanges (status, header names, body shape), so they cannot
drift."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.sandbox.crypto import decode_unverified
from gateway.sandbox.examples import record, signature
from gateway.sandbox.openapi import EXAMPLES_FILE, GATEWAY_REFUSALS, document, load_examples
from tests.conftest import ROOT
from tests.sandbox.test_openapi import settings_for

DOC_URI = "urn:dcr-gateway:openapi"


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for `schema`, its `#/components/...` references resolved in `doc`."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    rooted = json.loads(json.dumps(schema).replace('"#/components/', f'"{DOC_URI}#/components/'))
    return Draft202012Validator(rooted, registry=registry)


def media_examples(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    """(where, schema, value) for every example of a response or request body in the document."""
    out: list[tuple[str, dict[str, Any], Any]] = []

    def collect(where: str, content: dict[str, Any]) -> None:
        for media_type, media in content.items():
            for name, example in media.get("examples", {}).items():
                out.append((f"{where} {media_type} {name}", media["schema"], example["value"]))

    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                collect(f"{method} {path} {status}", response.get("content", {}))
            if "requestBody" in op:
                collect(f"{method} {path} request", op["requestBody"]["content"])
    for name, response in doc["components"]["responses"].items():
        collect(name, response.get("content", {}))
    return out


def test_the_examples_file_is_there_and_embedded() -> None:
    recorded = load_examples()
    assert recorded is not None, f"{EXAMPLES_FILE} is missing: python -m gateway.sandbox.examples writes it"
    assert recorded["profile"] == "bank"
    doc = document(settings_for("bank"))
    examples = media_examples(doc)
    statuses = {where.split()[2] for where, _, _ in examples if where.startswith(("post", "get", "put", "delete"))}
    assert {"200", "201", "400", "401", "405", "request"} <= statuses
    assert {where.split()[0] for where, _, _ in examples} >= {"RequestTooLarge", "UnsupportedMediaType"}
    assert not (doc["paths"]["/open-banking/v3.1/register/{ClientId}"]["delete"]["responses"]["204"]).get("content")
    errors = {x["response"]["body"].get("error") for x in recorded["exchanges"] if x["response"]["body"]}
    assert {"invalid_client_metadata", "invalid_software_statement", "invalid_redirect_uri", "invalid_token",
            "method_not_allowed", "request_too_large"} <= errors
    challenge = doc["paths"]["/open-banking/v3.1/register/{ClientId}"]["get"]["responses"]["401"]["headers"]
    assert challenge["WWW-Authenticate"]["example"].startswith("Bearer")
    # Recorded with the bank profile: another profile's document (other security, other statuses) shows none.
    assert not media_examples(document(settings_for("ob_standard")))


def test_every_example_validates_against_its_schema() -> None:
    doc = document(settings_for("bank"))
    checked = 0
    for where, schema, value in media_examples(doc):
        errors = [e.message for e in validator(doc, schema).iter_errors(value)]
        assert not errors, (where, errors)
        if where.endswith(("201-created", "200-updated")):  # a valid request's claims are a valid registration
            _, claims = decode_unverified(value)
            errors = [e.message for e in validator(doc, schema["contentSchema"]).iter_errors(claims)]
            assert not errors, (where, errors)
        checked += 1
    assert checked >= 15


def test_every_recorded_status_is_documented() -> None:
    doc = document(settings_for("bank"))
    recorded = load_examples()
    assert recorded is not None
    for x in recorded["exchanges"]:
        status = x["response"]["status"]
        assert str(status) in doc["paths"][x["path"]][x["method"]]["responses"], (x["method"], x["path"], status)
        if status in GATEWAY_REFUSALS:
            assert x["response"]["body"]["error"]


@pytest.mark.process
def test_committed_examples_are_what_the_servers_answer() -> None:
    """Record again with the shipped config.yaml (on other ports): the same exchanges, in the same order, with the
    same statuses, header names and body shapes. On a difference: `python -m gateway.sandbox.examples`."""
    committed = load_examples()
    assert committed is not None
    fresh = record(ROOT / "config.yaml")
    assert fresh["profile"] == committed["profile"]
    assert [signature(x) for x in fresh["exchanges"]] == [signature(x) for x in committed["exchanges"]]
    assert Counter(x["response"]["status"] for x in fresh["exchanges"])[201] == 1
