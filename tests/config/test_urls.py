"""URLs derived from server.public_url, explicit values that win, and what `config check` says when they disagree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from gateway.config.consistency import Finding, describe, findings

ROOT = Path(__file__).resolve().parent.parent.parent

SANDBOX_BANK = "token_issuers: {bank: {jwks_uri: 'http://127.0.0.1:8081/jwks'}}"
"""The sandbox's token issuer as config.yaml now writes it: issuer and audiences derived."""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    return load_settings(write(tmp_path, text), env=env or {})


def found(tmp_path: Path, text: str) -> list[Finding]:
    return findings(load(tmp_path, text))


def test_shipped_config_derives_what_it_used_to_spell_out():
    """config.yaml leaves the four URLs out: they come out exactly as the values it used to write."""
    s = load_settings(ROOT / "config.yaml", env={})
    bank = s.trust.token_issuers["bank"]
    assert (bank.issuer, bank.audiences) == ("http://127.0.0.1:8080", ("http://127.0.0.1:8080",))
    assert s.trust.registration_audiences == ("http://127.0.0.1:8080",)
    assert (s.sandbox.issuer, s.sandbox.access_token_audience) == ("http://127.0.0.1:8080", "http://127.0.0.1:8080")
    assert findings(s) == []


def test_moving_public_url_to_https_is_one_setting():
    """DCRGW_SERVER__PUBLIC_URL alone moves the issuer, its audiences, the registration audience and the sandbox's."""
    s = load_settings(ROOT / "config.yaml", env={"DCRGW_SERVER__PUBLIC_URL": "https://dcr.bank.example/"})
    bank = s.trust.token_issuers["bank"]
    assert (bank.issuer, bank.audiences) == ("https://dcr.bank.example", ("https://dcr.bank.example",))
    assert s.trust.registration_audiences == ("https://dcr.bank.example",)
    assert s.sandbox.issuer == s.sandbox.access_token_audience == "https://dcr.bank.example"
    assert findings(s) == []


def test_defaults_without_any_config(tmp_path):
    """An empty file: the registration audience is the default public URL; the sandbox's too."""
    s = load(tmp_path, "")
    assert s.trust.registration_audiences == ("http://127.0.0.1:8080",)
    assert s.sandbox.issuer == "http://127.0.0.1:8080"


def test_explicit_values_win(tmp_path):
    """Values written in the config are kept as written, whatever server.public_url is."""
    s = load(tmp_path, "server: {public_url: https://dcr.example}\n"
                       "sandbox: {issuer: https://dcr.example/as, access_token_audience: https://api.example}\n"
                       "trust:\n  registration_audiences: ['0015800001041RHAAY']\n"
                       "  token_issuers: {bank: {issuer: https://as.example, jwks_uri: https://as.example/jwks,"
                       " audiences: [https://dcr.example/x]}}\n")
    assert s.trust.registration_audiences == ("0015800001041RHAAY",)
    assert s.trust.token_issuers["bank"].audiences == ("https://dcr.example/x",)
    assert (s.sandbox.issuer, s.sandbox.access_token_audience) == ("https://dcr.example/as", "https://api.example")


def test_an_explicit_issuer_keeps_audiences_unchecked(tmp_path):
    """Audiences are derived only with the issuer: an explicit issuer without audiences keeps `aud` unchecked."""
    s = load(tmp_path, "trust: {token_issuers: {bank: {issuer: https://as.example, jwks_uri: https://as.example/k}}}\n")
    assert s.trust.token_issuers["bank"].audiences == ()


def test_empty_lists_are_explicit(tmp_path):
    """`[]` is a value, not an absence: registration aud not matched, token aud not checked."""
    s = load(tmp_path, "trust:\n  registration_audiences: []\n"
                       "  token_issuers: {bank: {jwks_uri: 'http://127.0.0.1:1/k', audiences: []}}\n")
    assert s.trust.registration_audiences == ()
    assert s.trust.token_issuers["bank"].audiences == ()
    assert s.trust.token_issuers["bank"].issuer == "http://127.0.0.1:8080"


def test_an_empty_issuer_is_an_error(tmp_path):
    """`issuer: ""` would match tokens without a real issuer: refused, with the key path."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "trust: {token_issuers: {bank: {issuer: '', jwks_uri: 'http://127.0.0.1:1/k'}}}\n")
    assert any("trust.token_issuers.bank: issuer must not be empty" in m for m in info.value.messages)


def test_an_invalid_public_url_is_reported_once(tmp_path):
    """A bad public URL is its own error; nothing is derived from it."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "server: {public_url: ftp://x}\n")
    assert len(info.value.messages) == 1 and "server.public_url" in info.value.messages[0]


HTTPS = "server: {public_url: 'https://dcr.bank.example'}\n"
SANDBOX = "sandbox: {enabled: true}\n"
LEFT_BEHIND = ("http://dcr.bank.example is server.public_url's host over plain http, but server.public_url is "
               "https://dcr.bank.example: left behind when public_url moved to https? (leave the key out to derive "
               "it from server.public_url)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HTTPS + SANDBOX + "trust: {token_issuers: {bank: {issuer: 'http://dcr.bank.example',"
                     " jwks_uri: 'http://127.0.0.1:8081/jwks'}}}\n",
                     Finding("error", "trust.token_issuers.bank.issuer", LEFT_BEHIND),
                     id="https-public-url-http-issuer-same-host"),
        pytest.param(HTTPS + "trust: {registration_audiences: ['http://dcr.bank.example']}\n",
                     Finding("error", "trust.registration_audiences[0]", LEFT_BEHIND),
                     id="https-public-url-http-registration-audience"),
        pytest.param(HTTPS + "trust: {token_issuers: {p: {issuer: 'http://as.partner.example', jwks_uri: "
                     "'https://as.partner.example/k'}}}\n",
                     Finding("warning", "trust.token_issuers.p.issuer",
                             "http://as.partner.example is an http issuer behind an https server.public_url "
                             "(https://dcr.bank.example): tokens name an issuer that is not a TLS URL"),
                     id="https-public-url-http-issuer-elsewhere"),
        pytest.param("sandbox: {enabled: true, issuer: 'https://as.example'}\ntrust: {" + SANDBOX_BANK + "}\n",
                     Finding("error", "sandbox.issuer",
                             "https://as.example is not under server.public_url's origin http://127.0.0.1:8080: the "
                             "sandbox's discovery is served through the gateway at http://127.0.0.1:8080/.well-known/"
                             "openid-configuration and its issuer must be that URL (RFC 8414 §3.3)"),
                     id="sandbox-issuer-other-origin"),
        pytest.param("sandbox: {enabled: true, issuer: 'http://127.0.0.1:8080/as'}\ntrust: {" + SANDBOX_BANK + "}\n",
                     Finding("warning", "sandbox.issuer",
                             "http://127.0.0.1:8080/as is not server.public_url (http://127.0.0.1:8080), the URL "
                             "discovery is fetched under (RFC 8414 §3.3: the issuer is the URL the well-known path is "
                             "appended to)"),
                     id="sandbox-issuer-same-origin-other-path"),
        pytest.param(SANDBOX + "trust: {token_issuers: {bank: {issuer: 'http://127.0.0.1:8080/other',"
                     " jwks_uri: 'http://127.0.0.1:8081/jwks'}}}\n",
                     Finding("error", "trust.token_issuers.bank.issuer",
                             "http://127.0.0.1:8080/other is not the sandbox's issuer http://127.0.0.1:8080 "
                             "(sandbox.issuer, default server.public_url): every token the sandbox issues would be "
                             "refused (invalid_token)"),
                     id="trusted-issuer-is-not-the-sandbox-issuer"),
        pytest.param(SANDBOX + "trust: {token_issuers: {bank: {jwks_uri: 'http://localhost:8081/jwks',"
                     " audiences: [dcr]}}}\n",
                     Finding("error", "trust.token_issuers.bank.audiences",
                             "['dcr'] does not include the sandbox's access-token audience http://127.0.0.1:8080 "
                             "(sandbox.access_token_audience, default server.public_url): every token the sandbox "
                             "issues would be refused (invalid_token)"),
                     id="trusted-audiences-miss-the-sandbox-audience"),
        pytest.param(SANDBOX + "trust: {" + SANDBOX_BANK + ", registration_audiences: ['0015800001041RHAAY']}\n",
                     Finding("error", "trust.registration_audiences",
                             "['0015800001041RHAAY'] does not include the sandbox's issuer http://127.0.0.1:8080, the "
                             "aud its TPPs put in registration requests (`dcr-gateway sandbox registration-request`): "
                             "every registration would be refused"),
                     id="registration-audiences-miss-the-sandbox-issuer"),
        pytest.param(SANDBOX + "trust: {token_issuers: {bank: {issuer: 'https://as.example', jwks_uri: "
                     "'https://as.example/jwks'}}}\n",
                     Finding("warning", "sandbox.enabled",
                             "no trust.token_issuers entry takes its keys from the sandbox (jwks_uri "
                             "http://127.0.0.1:8081/jwks): the gateway accepts none of its tokens"),
                     id="no-issuer-trusts-the-sandbox"),
    ],
)
def test_each_disagreement_is_reported(tmp_path, text, expected):
    """An https public URL with http URLs (own host: error; an issuer elsewhere: warning), and the sandbox's issuer
    and audience against the public URL and what the gateway trusts for it."""
    assert expected in found(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("trust: {token_issuers: {bank: {issuer: 'https://as.example', jwks_uri: 'https://as.example/k',"
                     " audiences: ['https://api.other.example']}}}\n",
                     Finding("warning", "trust.token_issuers.bank.audiences[0]",
                             "https://api.other.example does not name the gateway (server.public_url "
                             "http://127.0.0.1:8080): tokens addressed to another service are accepted"),
                     id="token-audience-not-the-gateway"),
        pytest.param("trust: {registration_audiences: ['https://elsewhere.example']}\n",
                     Finding("warning", "trust.registration_audiences[0]",
                             "https://elsewhere.example names neither the gateway (server.public_url "
                             "http://127.0.0.1:8080) nor a trusted token issuer (trust.token_issuers): TPPs address "
                             "registration requests to the authorization server"),
                     id="registration-audience-names-nothing-known"),
    ],
)
def test_audience_disagreements(tmp_path, text, expected):
    """Audiences that are URLs must name the gateway (or, for registrations, a trusted issuer): else a warning."""
    assert found(tmp_path, text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("trust: {registration_audiences: ['0015800001041RHAAY', dcr]}\n", id="ob-org-id-audience"),
        pytest.param("trust: {registration_audiences: ['https://as.example'], token_issuers: {bank: {issuer: "
                     "'https://as.example', jwks_uri: 'https://as.example/k', audiences: ['http://127.0.0.1:8080/x']}}}\n",
                     id="the-as-issuer-and-the-gateway"),
        pytest.param(HTTPS + "trust: {token_issuers: {bank: {jwks_uri: 'https://as.example/k'}}}\n",
                     id="https-derived"),
        pytest.param("server: {public_url: 'https://dcr.bank.example'}\n" + SANDBOX + "trust: {" + SANDBOX_BANK + "}\n",
                     id="https-sandbox-derived"),
    ],
)
def test_agreeing_urls_say_nothing(tmp_path, text):
    """Non-URL audiences (an OB org id), the AS's own issuer and derived values raise no finding."""
    assert found(tmp_path, text) == []


def test_one_finding_per_key_errors_first(tmp_path):
    """A key that breaks two rules is reported once (the first); errors come before warnings."""
    result = found(tmp_path, HTTPS + "sandbox: {enabled: true, issuer: 'http://dcr.bank.example'}\n"
                   "trust: {registration_audiences: ['https://elsewhere.example', 'https://dcr.bank.example']}\n")
    keys = [f.key for f in result]
    assert len(keys) == len(set(keys))
    assert [f.level for f in result] == sorted((f.level for f in result), key=lambda level: level != "error")
    assert result[0] == Finding("error", "sandbox.issuer", result[0].message)
    assert "over plain http" in result[0].message


def test_describe_names_file_key_and_line(tmp_path):
    """Findings read like config errors: `FILE: key: message (line N)`; a derived value names no line."""
    path = write(tmp_path, "sandbox:\n  enabled: true\n  issuer: 'https://as.example'\n"
                           "trust:\n  registration_audiences: ['0015800001041RHAAY']\n")
    lines = describe(findings(load_settings(path, env={})), path, {})
    assert f"{path}: sandbox.issuer: https://as.example is not under" in lines[0] and lines[0].endswith("(line 3)")
    assert any(line.startswith(f"{path}: trust.registration_audiences: ") and line.endswith("(line 5)")
               for line in lines)
    assert any(line.startswith(f"{path}: sandbox.enabled: no trust.token_issuers entry") and "(line" in line
               for line in lines)


def test_describe_names_the_environment_variable(tmp_path):
    """A value set by DCRGW_* is attributed to the variable, as config errors are."""
    path = write(tmp_path, SANDBOX + "trust: {" + SANDBOX_BANK + "}\n")
    env = {"DCRGW_SANDBOX__ISSUER": "https://as.example"}
    (line, *_) = describe(findings(load_settings(path, env=env)), path, env)
    assert line.startswith("environment DCRGW_SANDBOX__ISSUER: sandbox.issuer: https://as.example is not under")


def _config_check(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "config", "check", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.mark.process
def test_config_check_exits_2_on_a_disagreement(tmp_path):
    """An error-level disagreement: `error: FILE: key: message`, exit 2, no traceback; warnings print before it."""
    path = write(tmp_path, HTTPS + SANDBOX + "trust: {" + SANDBOX_BANK + ", registration_audiences: "
                 "['http://dcr.bank.example', 'https://elsewhere.example']}\n")
    proc = _config_check(path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {path}: trust.registration_audiences[0]: http://dcr.bank.example is server.public_url's host " \
           "over plain http" in proc.stderr
    assert f"warning: {path}: trust.registration_audiences[1]: https://elsewhere.example names neither" in proc.stderr


@pytest.mark.process
def test_config_check_prints_warnings_and_exits_0(tmp_path):
    """Warnings only: printed on stderr, and the check passes."""
    path = write(tmp_path, "trust: {registration_audiences: ['https://elsewhere.example']}\n")
    proc = _config_check(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"warning: {path}: trust.registration_audiences[0]: ")
    assert proc.stdout.startswith(f"{path}: ok")


def test_the_reference_shows_each_derived_default():
    """docs/configuration.md names what each derived key defaults to; every DERIVED_DEFAULTS key is a real key."""
    from gateway.config.doc import render
    from gateway.config.settings import DERIVED_DEFAULTS

    rows = render().splitlines()
    for key, derived in DERIVED_DEFAULTS.items():
        assert any(row.startswith(f"| `{key}` | ({derived}) |") for row in rows), key
