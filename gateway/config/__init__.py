"""Configuration: `config.yaml` (and `DCRGW_*` environment overrides) to frozen, validated settings.

`settings` holds the models of every section; `schema` the strict model base and the number, port and
duration types policies reuse; `yamlsource` reads YAML with line marks so that an error names file, key
and line; `doc` renders docs/configuration.md from the models. Nothing here imports the rest of the
gateway.
"""

from .settings import (
    ENV_PREFIX,
    FACTS_JWKS_PATH,
    CertificateRevocationSettings,
    CheckMode,
    ClientCertificateSettings,
    ConfigError,
    Directory,
    ServerSettings,
    Settings,
    SignedFactsSettings,
    TokenIssuer,
    TrustSettings,
    UpstreamSettings,
    check_workers,
    config_path,
    load_settings,
    resolve_check_mode,
)

__all__ = [
    "ENV_PREFIX",
    "FACTS_JWKS_PATH",
    "CertificateRevocationSettings",
    "CheckMode",
    "ClientCertificateSettings",
    "ConfigError",
    "Directory",
    "ServerSettings",
    "Settings",
    "SignedFactsSettings",
    "TokenIssuer",
    "TrustSettings",
    "UpstreamSettings",
    "check_workers",
    "config_path",
    "load_settings",
    "resolve_check_mode",
]
