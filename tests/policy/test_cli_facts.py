"""`policy explain` shows the facts a policy's checks establish and the headers they go upstream in; `policy
lint` refuses a `policies.fact_headers` entry that names no declared fact (a typo would send nothing, silently)
or a fact that cannot be a header. In process: `gateway.cli.main` with real config and shipped policies."""

from __future__ import annotations

import pytest

from gateway.cli import main
from tests.conftest import ROOT

CONFIG = str(ROOT / "config.yaml")


def test_explain_lists_the_facts_and_their_headers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--config", CONFIG, "--method", "POST",
                 "--path", "/open-banking/v3.1/register"]) == 0
    facts = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  facts:"))
    assert "client_id -> X-DCR-Client-Id" in facts and "software_id -> X-DCR-Software-Id" in facts
    assert "client_cert_s256 -> X-DCR-Client-Cert-S256" in facts
    assert " registration_claims," in facts  # produced, never a header


def test_explain_of_a_read_shows_only_the_token_facts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--config", CONFIG, "--method", "GET",
                 "--path", "/open-banking/v3.1/register/abc"]) == 0
    facts = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  facts:"))
    assert facts == "  facts:   token, client_id -> X-DCR-Client-Id"


def test_lint_passes_the_shipped_fact_headers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", "--config", CONFIG]) == 0
    assert "policies ok" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "problem"), [
    ("clientid", "no check declares a fact named 'clientid'"),
    ("software_statement_claims", "the fact 'software_statement_claims' cannot be a header value"),
])
def test_lint_refuses_a_fact_header_no_check_can_fill(
    name: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DCRGW_POLICIES__FACT_HEADERS", f'{{"client_id": "X-DCR-Client-Id", "{name}": "X-Other"}}')
    assert main(["policy", "lint", "--config", CONFIG]) == 1
    err = capsys.readouterr().err
    assert f"policies.fact_headers.{name}: {problem}" in err
    assert "facts that can be headers: client_cert_s256, client_id, org_id, software_id, software_roles" in err


def test_serve_refuses_to_start_with_a_fact_header_no_check_can_fill(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rule at start: exit 2 with the key path, before any listener or connection exists."""
    monkeypatch.setenv("DCRGW_POLICIES__FACT_HEADERS", '{"clientid": "X-C"}')
    assert main(["serve", "--config", CONFIG]) == 2
    assert "error: policies.fact_headers.clientid: no check declares a fact named 'clientid'" in \
        capsys.readouterr().err
