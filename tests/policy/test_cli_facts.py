"""`policy explain` shows the facts a policy's checks establish and the headers they go upstream in; `policy
lint` (and `serve`, at start) refuses a `policies.fact_headers` entry that names no declared fact (a typo would
send nothing, silently) or a fact that cannot be a header. Run as the CLI is: `python -m gateway` (in a process
of its own, since the CLI configures logging for the whole process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.process

CONFIG = str(ROOT / "config.yaml")


def _cli(*args: str, fact_headers: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}
    if fact_headers is not None:
        env["DCRGW_POLICIES__FACT_HEADERS"] = fact_headers
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", CONFIG], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def _facts_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("  facts:"))


def test_explain_lists_the_facts_and_their_headers() -> None:
    proc = _cli("policy", "explain", "--method", "POST", "--path", "/open-banking/v3.1/register")
    assert proc.returncode == 0, proc.stderr
    facts = _facts_line(proc.stdout)
    assert "client_id -> X-DCR-Client-Id" in facts and "software_id -> X-DCR-Software-Id" in facts
    assert "client_cert_s256 -> X-DCR-Client-Cert-S256" in facts
    assert " registration_claims," in facts  # produced, never a header


def test_explain_of_a_read_shows_only_the_token_and_certificate_facts() -> None:
    """A read verifies the token and records the certificate it came over (client_certificate, not required)."""
    proc = _cli("policy", "explain", "--method", "GET", "--path", "/open-banking/v3.1/register/abc")
    assert proc.returncode == 0, proc.stderr
    assert _facts_line(proc.stdout) == ("  facts:   token, client_id -> X-DCR-Client-Id, client_cert_s256 -> "
                                        "X-DCR-Client-Cert-S256, client_cert_subject_dn, client_cert_issuer_dn, "
                                        "client_cert_serial, client_cert_chain, client_cert_psd2, client_cert_revocation")


@pytest.mark.parametrize(("name", "problem"), [
    ("clientid", "no check declares a fact named 'clientid'"),
    ("software_statement_claims", "the fact 'software_statement_claims' cannot be a header value"),
])
def test_lint_refuses_a_fact_header_no_check_can_fill(name: str, problem: str) -> None:
    proc = _cli("policy", "lint", fact_headers=f'{{"client_id": "X-DCR-Client-Id", "{name}": "X-Other"}}')
    assert proc.returncode == 1
    assert f"policies.fact_headers.{name}: {problem}" in proc.stderr
    assert "facts that can be headers: client_cert_psd2, client_cert_s256, client_id, org_id, software_id, software_roles" in \
        proc.stderr


def test_serve_refuses_to_start_with_a_fact_header_no_check_can_fill() -> None:
    """The same rule at start: exit 2 with the key path, before any listener or connection exists."""
    proc = _cli("serve", fact_headers='{"clientid": "X-C"}')
    assert proc.returncode == 2
    assert "error: policies.fact_headers.clientid: no check declares a fact named 'clientid'" in proc.stderr
