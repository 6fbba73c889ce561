"""Verified facts are declared by the checks that establish them, typed, and leave the gateway only through
their declared projections: the forwarded headers of config `policies.fact_headers`, response fields, and the
decision event's fields."""

from __future__ import annotations

import pytest

from gateway.checks import REGISTRY
from gateway.checks.facts import Fact, FactHeaders, Facts, declared_fact
from gateway.checks.rate_limit import RATE_LIMIT
from gateway.checks.registration import (
    CLIENT_CERT_PSD2,
    CLIENT_CERT_S256,
    ORG_ID,
    REGISTRATION_CLAIMS,
    SOFTWARE_ID,
    SOFTWARE_ROLES,
    SSA_CLAIMS,
)
from gateway.checks.token import CLIENT_ID, TOKEN, VerifiedToken
from gateway.config import load_settings
from gateway.config.settings import PolicySettings
from gateway.policy import Decision, load_policies
from gateway.runtime import build_runtime
from tests.conftest import ROOT, SHIPPED_POLICIES

AUDITED = {"client_id", "token_jti", "token_kid", "software_id", "org_id", "cert_s256", "registration_jti",
           "cert_issuer", "cert_serial", "cert_anchors", "cert_psd2_roles", "cert_organization_identifier",
           "cert_revocation"}
"""The decision event's identity fields (docs/audit.md), each filled by a fact."""


def _token(client_id: str = "client-a") -> VerifiedToken:
    return VerifiedToken("bank", "https://as", client_id, "jti-1", 0.0, 60.0, frozenset(), "kid-1", {})


def test_every_declared_fact_is_produced_by_exactly_one_check_kind() -> None:
    """Each fact a check kind `produces` is a declared `Fact`, and no two kinds claim the same one."""
    owner: dict[str, str] = {}
    for name, kind in REGISTRY.items():
        for fact in kind.produces:
            assert isinstance(fact, Fact) and declared_fact(fact.name) is fact
            assert fact.name not in owner, f"{fact.name} produced by {owner[fact.name]} and {name}"
            owner[fact.name] = name
    assert owner == {
        "token": "bearer_token", "client_id": "bearer_token",
        "software_statement_claims": "software_statement", "software_id": "software_statement",
        "org_id": "software_statement", "software_roles": "software_statement",
        "registration_claims": "registration_request", "client_cert_s256": "client_certificate",
        "client_cert_subject_dn": "client_certificate", "client_cert_issuer_dn": "client_certificate",
        "client_cert_serial": "client_certificate", "client_cert_chain": "client_certificate",
        "client_cert_psd2": "client_certificate",
        "client_cert_revocation": "client_certificate",
        "rate_limit_fields": "rate_limit",
    }


def test_the_default_fact_headers_name_forwardable_facts() -> None:
    """Every fact the default `policies.fact_headers` names is declared and can be a header value."""
    plan = FactHeaders(PolicySettings().fact_headers)
    assert [(f.name, h) for f, h in plan.entries] == list(PolicySettings().fact_headers.items())


def test_a_fact_declared_twice_is_refused() -> None:
    """A fact name belongs to one declaration (it is the key config `policies.fact_headers` uses)."""
    with pytest.raises(ValueError, match="declared twice"):
        Fact("software_id", str)


def test_facts_are_typed_slots_not_a_dict() -> None:
    """A fresh request has no facts; a set fact reads back; an unset one is None."""
    facts = Facts()
    assert not facts and facts.get(TOKEN) is None and TOKEN not in facts
    token = _token()
    facts.set(TOKEN, token)
    assert facts and facts.get(TOKEN) is token and TOKEN in facts and facts.get(SOFTWARE_ID) is None
    assert not hasattr(facts, "__dict__")


def test_audit_fields_are_all_present_and_null_when_absent() -> None:
    """The decision event carries every identity field, None where no check established its fact."""
    assert set(Facts().audit_fields()) == AUDITED and set(Facts().audit_fields().values()) == {None}
    facts = Facts()
    facts.set(TOKEN, _token())
    facts.set(SOFTWARE_ID, "sw-1")
    facts.set(ORG_ID, "org-1")
    facts.set(CLIENT_CERT_S256, "thumb")
    facts.set(REGISTRATION_CLAIMS, {"jti": "8c6b9a3e-0000-4000-8000-000000000000", "iss": "sw-1"})
    facts.set(SSA_CLAIMS, {"software_id": "sw-1"})
    facts.set(CLIENT_CERT_PSD2, {"qualified": True, "qc_types": ["web"], "roles": ["PSP_AI"], "nca_id": "GB-FCA",
                                 "organization_identifier": "PSDGB-FCA-123456"})
    assert facts.audit_fields() == {
        "client_id": "client-a", "token_jti": "jti-1", "token_kid": "kid-1", "software_id": "sw-1",
        "org_id": "org-1", "cert_s256": "thumb", "registration_jti": "8c6b9a3e-0000-4000-8000-000000000000",
        "cert_issuer": None, "cert_serial": None, "cert_anchors": None,
        "cert_psd2_roles": ["PSP_AI"], "cert_organization_identifier": "PSDGB-FCA-123456", "cert_revocation": None,
    }


@pytest.mark.parametrize(
    ("fact", "value", "sent"),
    [
        (SOFTWARE_ID, "sw-1", "sw-1"),
        (SOFTWARE_ROLES, ["AISP", "PISP"], "AISP,PISP"),
        (SOFTWARE_ROLES, [], None),
        (SOFTWARE_ID, "", None),
        (SOFTWARE_ID, "sw\r\nX-Evil: 1", None),
        (ORG_ID, "org\x00", None),
    ],
    ids=["text", "list-joined", "empty-list", "empty-text", "line-break", "nul"],
)
def test_fact_headers_render_only_safe_values(fact: Fact[object], value: object, sent: str | None) -> None:
    """A fact goes as its header only when it renders to a non-empty value without CR, LF or NUL."""
    facts = Facts()
    facts.set(fact, value)
    headers = FactHeaders({fact.name: "X-Fact"}).project(facts)
    assert headers == ({} if sent is None else {"X-Fact": sent})


def test_fact_headers_follow_config_order_and_skip_what_cannot_be_a_header() -> None:
    """Headers come in config order; a claim set, the token object or an undeclared name sends nothing."""
    facts = Facts()
    facts.set(TOKEN, _token())
    facts.set(CLIENT_ID, "client-a")
    facts.set(SSA_CLAIMS, {"software_id": "sw-1"})
    facts.set(ORG_ID, "org-1")
    names = {"org_id": "X-Org", "software_statement_claims": "X-Ssa", "token": "X-Token", "nothing": "X-None",
             "client_id": "X-Client"}
    assert list(FactHeaders(names).project(facts).items()) == [("X-Org", "org-1"), ("X-Client", "client-a")]


def test_rate_limit_fields_are_response_headers() -> None:
    """The RateLimit fields of the rate_limit checks that passed are joined into one of each field."""
    fields = [('"a";q=5;w=60', '"a";r=4;t=30'), ('"b";q=9;w=10', '"b";r=1;t=3')]
    assert RATE_LIMIT.response_headers is not None
    assert RATE_LIMIT.response_headers(fields) == [("RateLimit-Policy", '"a";q=5;w=60, "b";q=9;w=10'),
                                                   ("RateLimit", '"a";r=4;t=30, "b";r=1;t=3')]


def test_a_compiled_policy_knows_the_facts_it_can_produce() -> None:
    """The compiler collects the facts of a policy's checks once; a decision without facts projects nothing."""
    settings = load_settings(ROOT / "config.yaml", env={})
    policies = load_policies(SHIPPED_POLICIES, build_runtime(settings, None).services)
    produced = {p.name: {f.name for f in p.produces} for p in policies.policies}
    assert {"token", "client_id", "software_id", "org_id", "software_roles", "software_statement_claims",
            "registration_claims", "client_cert_s256"} <= set().union(*produced.values())
    for p in policies.policies:
        assert {f.name for f in p.produces} == {f.name for c in p.checks for f in c.produces}
    empty = Decision("deny", None, "enforce")
    assert empty.forward_headers is None and empty.response_headers is None
    assert set(empty.audit_fields().values()) == {None}
