"""README's "Try it in five minutes", run as written against the served product (`python -m gateway serve`, the
shipped config.yaml on free loopback ports: `make run` elsewhere): the first shell block of the section, in a
fresh directory, with only the ports and `$DCR` (this interpreter's `python -m gateway`) replaced. Every call
prints its status; a refusal prints the gateway's error, never a Python traceback; `sign-request` without
`--scope` asks for the scope the SSA's software_roles permit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.playground.conftest import Served, require, served, snippet_env  # noqa: F401 (the fixture)
from tests.sandbox.conftest import unverified

pytestmark = pytest.mark.process


def try_it_block() -> str:
    """The first ```sh block of README's "Try it in five minutes"."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Try it in five minutes"):]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def run_block(served: Served, cwd: Path, script: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    """`script` in `cwd` (holding the served config as ./config.yaml, as `make run`'s directory does)."""
    require(shutil.which("curl") is not None, "curl")
    cwd.mkdir()
    shutil.copy(served.log.parent / "config.yaml", cwd / "config.yaml")
    assert "DCR=.venv/bin/dcr-gateway\n" in script and "127.0.0.1:8080" in script and "127.0.0.1:8081" in script
    script = (script.replace("DCR=.venv/bin/dcr-gateway\n", f"DCR='{sys.executable} -m gateway'\n")
              .replace("http://127.0.0.1:8080", served.gateway_url).replace("http://127.0.0.1:8081", served.sandbox_url))
    env = {**snippet_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_try_it_block_as_written(served: Served, tmp_path: Path) -> None:  # noqa: F811
    block = try_it_block()
    step4 = [line for line in block.split("# 4.")[1].split("# 5.")[0].splitlines() if "sign-request" in line]
    assert step4 and "--scope" not in step4[0], "step 4 relies on the SSA's roles"
    result = run_block(served, tmp_path / "try", block)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    statuses = re.findall(r"^HTTP (\d{3}) (\w+) (\S+)$", result.stderr, re.M)
    gw, sandbox = served.gateway_url, served.sandbox_url
    assert [(s, m, u.rsplit("/register/", 1)[0]) for s, m, u in statuses] == [
        ("201", "POST", sandbox + "/sandbox/apps"),
        ("200", "POST", gw + "/oauth2/token"),
        ("201", "POST", gw + "/open-banking/v3.1/register"),
        ("200", "POST", gw + "/oauth2/token"),
        ("200", "GET", gw + "/open-banking/v3.1"),
    ], result.stderr
    assert len(re.findall(r"(?:^|\$\()call ", block, re.M)) == len(statuses), "every call prints its status"
    # No --scope: the request asks for what the sandbox SSA's roles (AISP, PISP, CBPII) permit.
    _, claims = unverified((tmp_path / "try" / ".sandbox/tpp/request.jwt").read_text().strip())
    assert claims["scope"] == "accounts payments fundsconfirmations"
    assert '"scope":"accounts payments fundsconfirmations"' in result.stdout


def test_a_refusal_prints_the_gateways_error(served: Served, tmp_path: Path) -> None:  # noqa: F811
    """An SSA whose redirect URI is http: the registration is refused (400), and the next steps print the answers
    they got instead of a traceback."""
    block = try_it_block().replace("--redirect-uri https://tpp.example.com/callback",
                                   "--redirect-uri http://tpp.example.com/callback")
    result = run_block(served, tmp_path / "refused", block)
    assert "Traceback" not in result.stdout + result.stderr
    assert re.search(r"^HTTP 400 POST \S+/open-banking/v3.1/register$", result.stderr, re.M), result.stderr
    assert re.search(r'^no client_id in: \{"error":"invalid_redirect_uri","error_description":"redirect_uri '
                     r"'http://tpp.example.com/callback' must use the https scheme\"\}$", result.stderr, re.M), \
        result.stderr
    # Every call still printed its status, the refused ones too.
    assert len(re.findall(r"^HTTP \d{3} ", result.stderr, re.M)) == 5, result.stderr
