"""Configuration: defaults, validation messages that name file/key/line, environment overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return info.value.messages


def test_shipped_config_is_valid():
    """The top-level config.yaml loads with no environment."""
    s = load_settings(ROOT / "config.yaml", env={})
    assert s.server.public.port == 8080
    assert s.server.admin.port == 9090
    assert s.upstream.url == "http://127.0.0.1:8081"


def test_empty_file_gives_defaults(tmp_path):
    """An empty file is valid: every key has a default."""
    s = load_settings(write(tmp_path, ""), env={})
    assert s.server.max_body_bytes == 1_048_576
    assert s.upstream.timeouts.read == 15.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstream:\n  timeouts:\n    read: ten\n",
         'upstream.timeouts.read: expected a positive number, got "ten" (line 3)'),
        ("upstream:\n  timeouts:\n    connect: -1\n", "upstream.timeouts.connect: expected a positive number, got -1"),
        ("server:\n  public:\n    port: 70000\n", "server.public.port: expected a port number from 0 to 65535"),
        ("server:\n  pubilc: {}\n", "server.pubilc: unknown key (line 2)"),
        ("upstream:\n  url: ftp://x\n", "upstream.url: expected an http(s) URL for upstream.url"),
        ("logging:\n  format: xml\n", "logging.format: expected 'json', 'console' or 'auto', got \"xml\""),
        ("server:\n  max_body_bytes: '1'\n", 'server.max_body_bytes: expected a positive integer, got "1"'),
        ("sandbox:\n  enabled: yes-please\n", "sandbox.enabled: expected a valid boolean"),
        ("upstream: 3\n", "upstream: expected a mapping, got 3"),
    ],
    ids=["not-a-number", "negative", "port-range", "typo-key", "bad-scheme", "bad-enum", "string-int", "bad-bool",
         "not-a-mapping"],
)
def test_invalid_values_are_named_with_file_key_and_line(tmp_path, text, expected):
    """Each error names the file, the dotted key path, what was expected and the value given."""
    path = write(tmp_path, text)
    messages = errors_of(path)
    assert any(m.startswith(f"{path}: ") and expected in m for m in messages), messages


@pytest.mark.parametrize("name", ["X-DCR Client-Id", "X-DCR-Client-Id:", "X-DCR-Client-Id\\r\\nX-Evil", ""])
@pytest.mark.parametrize("key", ["policies.fact_headers.client_id", "trust.client_certificate.header",
                                 "trust.client_certificate.chain_header"])
def test_header_names_the_gateway_sets_or_reads_are_http_tokens(tmp_path, key, name):
    """A configured header name with a space, a colon or a line break would put a malformed field on the backend's
    head (or never match a real one): refused when the configuration loads, naming the key."""
    section, sub, field = key.split(".")
    path = write(tmp_path, f'{section}:\n  {sub}:\n    {field}: "{name}"\n')
    messages = errors_of(path)
    assert any(key in m and "match pattern" in m for m in messages), messages


def test_all_errors_reported_at_once(tmp_path):
    """Several mistakes are all reported, not just the first."""
    messages = errors_of(write(tmp_path, "upstream:\n  url: nope\nserver:\n  max_body_bytes: 0\n"))
    assert len(messages) == 2


def test_duplicate_keys_are_an_error(tmp_path):
    """A key given twice is a mistake, not a silent override."""
    messages = errors_of(write(tmp_path, "upstream:\n  url: http://a\nupstream:\n  url: http://b\n"))
    assert "duplicate key 'upstream'" in messages[0] and "line 3" in messages[0]


def test_invalid_yaml_names_line(tmp_path):
    """Broken YAML is reported with its position."""
    messages = errors_of(write(tmp_path, "server:\n  public: [\n"))
    assert "invalid YAML" in messages[0] and "line" in messages[0]


def test_missing_file(tmp_path):
    """A missing config file is a clear error."""
    messages = errors_of(tmp_path / "nope.yaml")
    assert "cannot read" in messages[0]


def test_same_port_twice_is_an_error(tmp_path):
    """Public and admin listeners cannot share an address."""
    messages = errors_of(write(tmp_path, "server:\n  public: {port: 9000}\n  admin: {port: 9000}\n"))
    assert "server.admin uses the same address as server.public" in messages[0]


def test_environment_overrides(tmp_path):
    """DCRGW_<SECTION>__<KEY> overrides the file, with YAML scalar typing."""
    s = load_settings(
        write(tmp_path, "upstream:\n  url: http://127.0.0.1:1\n"),
        env={"DCRGW_UPSTREAM__URL": "http://127.0.0.1:2", "DCRGW_SERVER__PUBLIC__PORT": "8181",
             "DCRGW_LOGGING__FORMAT": "json", "DCRGW_UPSTREAM__TIMEOUTS__READ": "2.5", "OTHER": "x"},
    )
    assert s.upstream.url == "http://127.0.0.1:2"
    assert s.server.public.port == 8181
    assert s.logging.format == "json"
    assert s.upstream.timeouts.read == 2.5


def test_environment_error_names_the_variable(tmp_path):
    """A bad value from the environment names the variable, not a file line."""
    messages = errors_of(write(tmp_path, ""), env={"DCRGW_UPSTREAM__TIMEOUTS__READ": "ten"})
    assert messages[0].startswith("environment DCRGW_UPSTREAM__TIMEOUTS__READ: upstream.timeouts.read: expected")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DCRGW_SERVR__PORT": "1"}, "environment DCRGW_SERVR__PORT: servr: unknown key"),
        ({"DCRGW_SERVER__PUBLC__PORT": "1"}, "environment DCRGW_SERVER__PUBLC__PORT: server.publc: unknown key"),
        ({"DCRGW_UPSTREAM__TIMEOUT__READ": "2"},
         "environment DCRGW_UPSTREAM__TIMEOUT__READ: upstream.timeout: unknown key"),
    ],
)
def test_a_mistyped_variable_is_named_not_a_file_line(tmp_path, env, expected):
    """A misspelt DCRGW_ name is an unknown key the file does not hold: the variable is named, no line of the file."""
    text = "server:\n  public: {port: 8111}\nupstream:\n  url: http://127.0.0.1:1\n"
    assert errors_of(write(tmp_path, text), env=env) == [expected]


def test_a_variable_inside_a_file_section_is_named_with_the_file(tmp_path):
    """A check over a whole entry (here a token issuer) that fails for the part the environment set names the
    variable first, and the file's line of the entry."""
    text = "trust:\n  token_issuers:\n    bank: {issuer: https://as, jwks_uri: https://as/jwks}\n"
    [message] = errors_of(write(tmp_path, text), env={"DCRGW_TRUST__TOKEN_ISSUERS__BANK__JWKS_URI": "ftp://x"})
    assert message.startswith("environment DCRGW_TRUST__TOKEN_ISSUERS__BANK__JWKS_URI: trust.token_issuers.bank: ")
    assert message.endswith(f"(with {tmp_path / 'config.yaml'}, line 3)")


def test_config_env_var_selects_file(tmp_path):
    """DCRGW_CONFIG names the file when no path is given."""
    path = write(tmp_path, "server:\n  public: {port: 8111}\n")
    assert load_settings(None, env={"DCRGW_CONFIG": str(path)}).server.public.port == 8111


def test_relative_paths_resolve_against_config_dir(tmp_path):
    """Paths in config are relative to the config file, not the working directory."""
    s = load_settings(write(tmp_path, "sandbox:\n  state_dir: st\n"), env={})
    assert s.resolve_path(s.sandbox.state_dir) == tmp_path.resolve() / "st"


def test_cli_exits_nonzero_with_one_message_and_no_traceback(tmp_path):
    """`dcr-gateway serve` with a bad config prints the message only and exits 2."""
    path = write(tmp_path, "upstream:\n  timeouts:\n    read: ten\n")
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f'error: {path}: upstream.timeouts.read: expected a positive number, got "ten" (line 3)'
    )


def test_config_check_command(tmp_path):
    """`dcr-gateway config check` validates and exits 0."""
    proc = subprocess.run([sys.executable, "-m", "gateway", "config", "check", "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_configuration_reference_is_up_to_date():
    """docs/configuration.md is generated from the models; regenerate with `python -m gateway.config.doc`."""
    from gateway.config.doc import render

    assert (ROOT / "docs" / "configuration.md").read_text() == render(), "run: python -m gateway.config.doc > docs/configuration.md"
