"""URLs that must agree with `server.public_url`, and profile overrides: what `config check` reports.

Each finding names its key path. Errors are combinations that cannot work (the gateway would refuse every
token or registration the configured sandbox makes, or discovery would name an issuer TPPs cannot use);
warnings are combinations that work but are probably not meant (docs/deployment.md, "URLs that agree").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .settings import ENV_PREFIX, ConfigError, Settings
from .yamlsource import YamlSourceError, load_yaml

Level = Literal["error", "warning"]

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARD = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 -- compared with, never bound


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement: its level, the key path it is about and a sentence that names both sides."""

    level: Level
    key: str
    message: str


def _origin(url: str) -> str | None:
    """scheme://host[:port] of an http(s) URL (lower case, default port dropped); None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname if _origin(url) else None
    except ValueError:
        return None


def _served_by_sandbox(url: str | None, settings: Settings) -> bool:
    """True when `url` points at the sandbox's own listener (its JWKS: the sandbox is the issuer)."""
    if url is None or _origin(url) is None:
        return False
    parts = urlsplit(url)
    listen = settings.sandbox.listen
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port != listen.port:
        return False
    host = parts.hostname or ""
    return host == listen.host or listen.host in _WILDCARD or (listen.host in _LOOPBACK and host in _LOOPBACK)


def _gateway_urls(settings: Settings) -> Iterator[tuple[str, str]]:
    """(key path, value) of every configured URL that is meant to name the gateway or its issuer."""
    for name, issuer in settings.trust.token_issuers.items():
        yield f"trust.token_issuers.{name}.issuer", issuer.issuer
        for i, aud in enumerate(issuer.audiences):
            yield f"trust.token_issuers.{name}.audiences[{i}]", aud
    for i, aud in enumerate(settings.trust.registration_audiences):
        yield f"trust.registration_audiences[{i}]", aud
    if settings.sandbox.enabled:
        for key in ("issuer", "access_token_audience"):
            value = getattr(settings.sandbox, key)
            if value is not None:
                yield f"sandbox.{key}", value


def _scheme_findings(settings: Settings) -> Iterator[Finding]:
    """An https public URL with http URLs: on its own host an error (left behind), elsewhere a warning."""
    public = settings.server.public_url
    if urlsplit(public).scheme != "https":
        return
    public_host = _host(public)
    for key, value in _gateway_urls(settings):
        if urlsplit(value).scheme != "http":
            continue
        if _host(value) == public_host:
            yield Finding("error", key, f"{value} is server.public_url's host over plain http, but server.public_url "
                                        f"is {public}: left behind when public_url moved to https? (leave the key "
                                        "out to derive it from server.public_url)")
        elif key.endswith(".issuer"):
            yield Finding("warning", key, f"{value} is an http issuer behind an https server.public_url ({public}): "
                                          "tokens name an issuer that is not a TLS URL")


def _audience_findings(settings: Settings) -> Iterator[Finding]:
    """Audiences that are URLs but name neither the gateway nor (registration) a trusted issuer."""
    public = settings.server.public_url
    gateway = _origin(public)
    issuers = {i.issuer for i in settings.trust.token_issuers.values()}
    for name, issuer in settings.trust.token_issuers.items():
        for i, aud in enumerate(issuer.audiences):
            if _origin(aud) is not None and _origin(aud) != gateway:
                yield Finding("warning", f"trust.token_issuers.{name}.audiences[{i}]",
                              f"{aud} does not name the gateway (server.public_url {public}): tokens addressed to "
                              "another service are accepted")
    for i, aud in enumerate(settings.trust.registration_audiences):
        if _origin(aud) is not None and _origin(aud) != gateway and aud not in issuers:
            yield Finding("warning", f"trust.registration_audiences[{i}]",
                          f"{aud} names neither the gateway (server.public_url {public}) nor a trusted token "
                          "issuer (trust.token_issuers): TPPs address registration requests to the "
                          "authorization server")


def _sandbox_findings(settings: Settings) -> Iterator[Finding]:
    """The sandbox's issuer and audience against the public URL and the trust the gateway gives it."""
    if not settings.sandbox.enabled:
        return
    public = settings.server.public_url
    issuer = settings.sandbox.issuer or public
    audience = settings.sandbox.access_token_audience or public
    if _origin(issuer) != _origin(public):
        yield Finding("error", "sandbox.issuer",
                      f"{issuer} is not under server.public_url's origin {_origin(public)}: the sandbox's discovery "
                      f"is served through the gateway at {public}/.well-known/openid-configuration and its issuer "
                      "must be that URL (RFC 8414 §3.3)")
    elif issuer != public:
        yield Finding("warning", "sandbox.issuer",
                      f"{issuer} is not server.public_url ({public}), the URL discovery is fetched under "
                      "(RFC 8414 §3.3: the issuer is the URL the well-known path is appended to)")
    trusted = {n: t for n, t in settings.trust.token_issuers.items() if _served_by_sandbox(t.jwks_uri, settings)}
    if not trusted:
        listen = settings.sandbox.listen
        yield Finding("warning", "sandbox.enabled",
                      f"no trust.token_issuers entry takes its keys from the sandbox (jwks_uri "
                      f"http://{listen.host}:{listen.port}/jwks): the gateway accepts none of its tokens")
    for name, trust in trusted.items():
        if trust.issuer != issuer:
            yield Finding("error", f"trust.token_issuers.{name}.issuer",
                          f"{trust.issuer} is not the sandbox's issuer {issuer} (sandbox.issuer, default "
                          "server.public_url): every token the sandbox issues would be refused (invalid_token)")
        if trust.audiences and audience not in trust.audiences:
            yield Finding("error", f"trust.token_issuers.{name}.audiences",
                          f"{list(trust.audiences)} does not include the sandbox's access-token audience {audience} "
                          "(sandbox.access_token_audience, default server.public_url): every token the sandbox "
                          "issues would be refused (invalid_token)")
    registration = settings.trust.registration_audiences
    if registration and issuer not in registration:
        yield Finding("error", "trust.registration_audiences",
                      f"{list(registration)} does not include the sandbox's issuer {issuer}, the aud its TPPs put in "
                      "registration requests (`dcr-gateway sandbox registration-request`): every registration "
                      "would be refused")


def _profile_findings(settings: Settings) -> Iterator[Finding]:
    for check in settings.policies.ignored_check_modes:
        yield Finding("warning", f"policies.check_modes.{check}",
                      f"audit is ignored: the {settings.policies.profile} profile authenticates requests with "
                      f"{check}, so it is always enforced")
    if settings.policies.profile == "ob_standard" and not settings.upstream.signed_facts.enabled:
        yield Finding("warning", "upstream.signed_facts.enabled",
                      "the ob_standard profile forwards registrations authenticated by the TPP's certificate "
                      "alone, which the backend cannot see (the gateway keeps the certificate header): without "
                      "signed facts it can only trust the network that its requests came through the gateway")


def findings(settings: Settings) -> list[Finding]:
    """Every URL disagreement and profile override in `settings`, one finding per key path, errors first."""
    seen: dict[str, Finding] = {}
    for finding in (*_scheme_findings(settings), *_sandbox_findings(settings), *_audience_findings(settings),
                    *_profile_findings(settings)):
        seen.setdefault(finding.key, finding)
    return sorted(seen.values(), key=lambda f: f.level != "error")


def check(settings: Settings, path: str | os.PathLike[str], env: Mapping[str, str],
          warn: Callable[[Finding, str], None]) -> None:
    """The verdict of `config check`, which `serve` applies at start too: each warning to `warn` (the finding and
    its `describe` line), then a ConfigError holding every error's line (the CLI exits 2)."""
    found = findings(settings)
    warnings = [f for f in found if f.level == "warning"]
    for finding, line in zip(warnings, describe(warnings, path, env), strict=True):
        warn(finding, line)
    errors = describe([f for f in found if f.level == "error"], path, env)
    if errors:
        raise ConfigError(errors)


def _loc(key: str) -> list[str | int]:
    """`a.b[1].c` → ["a", "b", 1, "c"]."""
    loc: list[str | int] = []
    for part in key.split("."):
        name, _, rest = part.partition("[")
        loc.append(name)
        if rest:
            loc.append(int(rest.rstrip("]")))
    return loc


def describe(found: list[Finding], path: str | os.PathLike[str], env: Mapping[str, str]) -> list[str]:
    """Lines in the config-error style: `FILE: key.path: message (line N)`, or the variable that set it."""
    try:
        doc = load_yaml(Path(path))
    except YamlSourceError:
        doc = None
    lines = []
    for f in found:
        loc = _loc(f.key)
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in loc if isinstance(p, str))
        if env_name in env:
            lines.append(f"environment {env_name}: {f.key}: {f.message}")
            continue
        line = doc.line_of(loc) if doc is not None and _key_present(doc.data, loc) else None
        suffix = f" (line {line})" if line is not None else ""
        lines.append(f"{path}: {f.key}: {f.message}{suffix}")
    return lines


def _key_present(data: object, loc: list[str | int]) -> bool:
    """Only a key written in the file has a line; a derived value names none."""
    node = data
    for part in loc:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True
