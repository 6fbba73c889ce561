"""The three policy commands take the policy directory the same way (positional DIR or --dir), and each shipped
`*_test.yaml` says the config it assumes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import ROOT

CONFIG = str(ROOT / "config.yaml")
BANK = ROOT / "policies"
EXPLAIN = ("--method", "DELETE", "--path", "/open-banking/v3.1/register/abc")


@pytest.fixture(autouse=True)
def _process_logging_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run in this process: they must not reconfigure its logging (structlog bound to capsys)."""
    monkeypatch.setattr("gateway.policy.cli.configure_logging", lambda *_: None)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def broken(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text("policies:\n  - name: a\n    match: {methods: [GET], path: /a}\n"
                                     "    checks: [x: {}]\n")
    return tmp_path


@pytest.mark.parametrize("command", [("lint",), ("test",), ("explain", *EXPLAIN)])
def test_each_command_takes_the_directory_both_ways(capsys, tmp_path, command):
    """`policy CMD DIR` and `policy CMD --dir DIR` read DIR (a broken one: both fail on it, naming its file)."""
    bad = broken(tmp_path)
    for form in ((str(bad),), ("--dir", str(bad))):
        code, out, err = run(capsys, "policy", *command, *form, "--config", CONFIG)
        assert code != 0, (command, form)
        assert f"{bad / 'p.yaml'}:4: policies[0].checks[0].x: unknown check" in out + err, (command, form)


@pytest.mark.parametrize("command", [("lint",), ("explain", *EXPLAIN)])
def test_both_forms_say_the_same_on_a_good_directory(capsys, command):
    """On the shipped directory the two forms (and the option before the command's own) give the same output."""
    outputs = {run(capsys, "policy", *command, *form, "--config", CONFIG)
               for form in ((str(BANK),), ("--dir", str(BANK)))}
    assert len(outputs) == 1
    [(code, _, _)] = outputs
    assert code == 0


def test_two_different_directories_are_refused(capsys, tmp_path):
    """DIR and --dir naming two directories is a usage error (exit 2), not a silent choice."""
    with pytest.raises(SystemExit) as info:
        main(["policy", "lint", str(BANK), "--dir", str(tmp_path), "--config", CONFIG])
    assert info.value.code == 2
    assert "two policy directories" in capsys.readouterr().err


TEST_FILES = sorted([*BANK.glob("*_test.yaml"), *(BANK / "ob_standard").glob("*_test.yaml")])


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_shipped_test_file_states_the_config_it_assumes(path: Path):
    """The header comment names the profile the directory is for and the command that runs the cases."""
    header = "".join(re.match(r"(?:#.*\n)*", path.read_text()).group(0))  # type: ignore[union-attr]
    profile = "ob_standard" if path.parent.name == "ob_standard" else "bank"
    assert "The config these cases assume" in header
    assert f"policies.profile: {profile}" in header
    assert "# Run: " in header and "policy test" in header
    if profile == "ob_standard":
        assert "DCRGW_POLICIES__PROFILE=ob_standard" in header
    assert len(TEST_FILES) == 4
