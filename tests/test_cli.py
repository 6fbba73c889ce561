"""`dcr-gateway` itself: its help says what it is, and a closed output pipe (`… | head`) ends it quietly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.cli import EXIT_BROKEN_PIPE, build_parser
from tests.conftest import ROOT

CONFIG = str(ROOT / "config.yaml")


def test_help_says_what_the_gateway_is_and_how_to_start():
    """`dcr-gateway --help`: a description, every command, examples and where the config comes from."""
    text = build_parser().format_help()
    assert "later modules register" not in text and "entry point" not in text
    assert "Open Banking Dynamic Client Registration" in text
    for command in ("serve", "config", "audit", "policy", "sandbox"):
        assert f"\n    {command} " in text, command
    assert "examples:" in text and "dcr-gateway policy test" in text and "$DCRGW_CONFIG" in text


@pytest.mark.process
@pytest.mark.parametrize(
    "argv",
    [
        ["policy", "explain", "--config", CONFIG, "--method", "GET", "--path", "/open-banking/v3.1/register/x"],
        ["sandbox", "openapi", "--config", CONFIG],
        ["config", "check", "--config", CONFIG],
    ],
    ids=["policy-explain", "sandbox-openapi", "config-check"],
)
def test_a_closed_pipe_ends_quietly(argv):
    """Output into a pipe nobody reads any more: nothing on stderr, the status of a process SIGPIPE ended (141)."""
    read, write = os.pipe()
    os.close(read)  # as `| head` once it has read its lines: every write now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "gateway", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == EXIT_BROKEN_PIPE == 141
