"""`dcr-gateway sandbox …`: run the sandbox alone, and the developer tools a TPP needs to try the API.

sandbox [serve]        run the sandbox bank on sandbox.listen
sandbox create-app     a developer app's client credentials (JSON), straight into the store
sandbox mint-ssa       a test SSA signed by the sandbox directory key
sandbox tpp-key        a TPP signing key pair (private PEM 0600 + public JWKS, with --transport-cert its mTLS
                       certificate as a `use: tls` key), optionally hosted
sandbox mint-cert      a test transport (mTLS client) certificate from the sandbox's test CA; --type qwac|qseal|obwac:
                       a PSD2 certificate as a QTSP issues it (QCStatements, organizationIdentifier)
sandbox revoke-cert    revoke a certificate mint-cert issued (the test CA's CRL and OCSP responder say so)
sandbox sign-request   a signed registration request (JWS) to POST with curl
sandbox client-assertion  a private_key_jwt client assertion (RFC 7523) for the token endpoint
sandbox openapi        the OpenAPI 3.1 document of the DCR API as the configured profile's policies enforce it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..config import Settings, load_settings
from ..http.listener import ListenerRunner
from ..jose import JoseError, cert_thumbprint_s256, transport_jwk
from ..observability.logging import configure_logging, get_logger
from ..policy import PolicyError
from ..runtime import run_async
from .certificates import (
    CERT_TYPES,
    MAX_LEAF_DAYS,
    PSD2_ROLES,
    CertificateError,
    Psd2Profile,
    SandboxCa,
    certificate_der,
    certificate_pem,
    check_chain,
    generate_private_key,
    ob_subject,
    private_pem,
    psd2_subject,
    read_certificates,
)
from .credentials import hash_secret, new_client_id, new_client_secret
from .crypto import (
    CryptoError,
    KeySet,
    SigningKey,
    alg_for,
    decode_unverified,
    generate_key,
    jwks,
    load_private_pem,
    sign,
)
from .directory import DEFAULT_ORG_NAME, new_org_id, new_software_id, ssa_claims
from .keyring import KeyRing, ensure_state_dir, write_private_file
from .metadata import AUTH_METHODS, GRANT_TYPES, ROLE_SCOPES
from .openapi import FORMATS, document, render
from .portal import TPP_JWKS_PATH
from .qtsp import REASONS, parse_serial_or_pem, record_issued, revoke, with_revocation_pointers
from .service import TOKEN_PATH
from .store import DB_FILE, Client, StoreError, SyncStore

_CONFIG_HELP = "config file (default: $DCRGW_CONFIG or ./config.yaml)"
PRIVATE_KEY_FILE = "private-key.pem"
JWKS_FILE = "jwks.json"
KID_FILE = "kid"
JWKS_URI_FILE = "jwks_uri"
CERT_FILE = "transport-cert.pem"
DEFAULT_PSD2_ROLES = ("PSP_AI", "PSP_PI", "PSP_IC")
"""The PSD2 roles of the sandbox SSA's default software roles (AISP, PISP, CBPII)."""
DEFAULT_REGISTRATION_ID = "123456"
CERT_KEY_FILE = "transport-key.pem"


class CliError(Exception):
    """A user-facing failure: printed as `error: …`, exit status 1."""


def register(subparsers: Any) -> None:
    """Add the `sandbox` command tree to the `dcr-gateway` parser."""
    sandbox = subparsers.add_parser(
        "sandbox",
        help="the sandbox bank and its developer tools (never in production)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.add_argument("--config", help=_CONFIG_HELP)
    sandbox.set_defaults(func=_cmd_serve)
    sub = sandbox.add_subparsers(dest="sandbox_command", metavar="COMMAND")

    def add(name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        # SUPPRESS: `sandbox --config X serve` keeps X instead of being reset by the subcommand's default.
        p.add_argument("--config", default=argparse.SUPPRESS, help=_CONFIG_HELP)
        p.set_defaults(func=fn)
        return p

    add("serve", "run the sandbox bank alone on sandbox.listen", _cmd_serve)

    p = add("openapi", "print the OpenAPI 3.1 document of the DCR API (as served on /openapi.json)", _cmd_openapi)
    p.add_argument("--format", choices=sorted(FORMATS), default="json", help="json (default) or yaml")

    p = add(
        "create-app",
        "create a developer app; prints its client_id and client_secret as JSON",
        _cmd_create_app,
    )
    p.add_argument("--name", help="a name for the app")

    p = add("mint-ssa", "print a software statement assertion signed by the sandbox directory", _cmd_mint_ssa)
    p.add_argument("--software-id", help="Base62, up to 22 characters (default: random)")
    p.add_argument("--client-name", help="software_client_name")
    p.add_argument("--redirect-uri", action="append", help="software_redirect_uris entry (repeatable)")
    p.add_argument("--role", action="append", help="software_roles entry: AISP, PISP, CBPII (repeatable)")
    p.add_argument("--jwks-endpoint", help="software_jwks_endpoint (the TPP's JWKS URL)")
    p.add_argument("--org-id", help="org_id (default: random)")
    p.add_argument("--org-name", help="org_name")
    p.add_argument("--org-status", help="org_status: Active, Revoked, Withdrawn")

    p = add("tpp-key", "generate a TPP signing key pair; prints its kid", _cmd_tpp_key)
    p.add_argument(
        "--out", required=True, type=Path, help="directory for private-key.pem (0600), jwks.json, kid"
    )
    _tpp_key_options(p, "")
    p.add_argument(
        "--transport-cert",
        type=Path,
        metavar="PEM",
        help="the TPP's transport (mTLS) certificate, leaf first then its issuers (what mint-cert writes): "
        "listed in the JWKS as a use: tls key with x5c and x5t#S256; an existing key in --out is kept",
    )

    p = add(
        "mint-cert",
        "issue a test transport (mTLS client) certificate from the sandbox's test CA; prints what it wrote (JSON)",
        _cmd_mint_cert,
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help=f"directory for {CERT_FILE} (leaf, then the CA) and {CERT_KEY_FILE} (0600)",
    )
    p.add_argument("--software-id", help="the subject's CN (default: random, as mint-ssa's)")
    p.add_argument("--org-id", help="the subject's OU (default: random, as mint-ssa's)")
    p.add_argument("--org-name", default=DEFAULT_ORG_NAME, help=f"the subject's O (default: {DEFAULT_ORG_NAME})")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="EC P-256 (default) or RSA 2048")
    p.add_argument("--days", type=int, default=365, help=f"validity in days (default 365, at most {MAX_LEAF_DAYS})")
    p.add_argument(
        "--type",
        dest="cert_type",
        choices=CERT_TYPES,
        default="transport",
        help="transport (default): the OB-style transport certificate; qwac: a QWAC (QcCompliance, QcType web, "
        "the PSD2 statement; clientAuth and serverAuth); qseal: a QSealC (QcType eseal; digitalSignature and "
        "nonRepudiation, no TLS usage); obwac: an OB-style OBWAC (organizationIdentifier, no QCStatements)",
    )
    p.add_argument(
        "--roles",
        default=",".join(DEFAULT_PSD2_ROLES),
        help=f"PSD2 roles of a qwac or qseal, comma-separated, of {', '.join(PSD2_ROLES)} "
        f"(default {','.join(DEFAULT_PSD2_ROLES)})",
    )
    p.add_argument("--nca-id", default="FCA",
                   help="the national competent authority: FCA or GB-FCA (default FCA, country from --nca-country)")
    p.add_argument("--nca-country", help="the NCA's country, ISO 3166 alpha-2 (default GB)")
    p.add_argument("--nca-name", default="Financial Conduct Authority",
                   help="the NCA's name in the PSD2 statement (default: Financial Conduct Authority)")
    p.add_argument("--registration-id", default=DEFAULT_REGISTRATION_ID,
                   help="the NCA's registration number of the TPP: organizationIdentifier PSD<country>-<NCA>-<this> "
                   f"(default {DEFAULT_REGISTRATION_ID}, the sandbox SSA's organisation_competent_authority_claims)")
    p.add_argument(
        "--add-to-jwks",
        type=Path,
        metavar="DIR",
        help="also do what tpp-key --out DIR --transport-cert <the new certificate> does: list it as a use: tls "
        "key in DIR/jwks.json beside DIR's signing key (a new one if DIR has none)",
    )
    _tpp_key_options(p, "with --add-to-jwks: ")

    p = add(
        "revoke-cert",
        "revoke a certificate the sandbox's test CA issued: its CRL (/qtsp/crl.der) and OCSP responder (/qtsp/ocsp) "
        "then say so; prints the index entry (JSON)",
        _cmd_revoke_cert,
    )
    p.add_argument("certificate", metavar="SERIAL|PEM", help="the serial number (hex) or a PEM file (its first "
                   "certificate, e.g. the transport-cert.pem mint-cert wrote)")
    p.add_argument("--reason", choices=sorted(REASONS), default="key_compromise",
                   help="CRLReason (default key_compromise)")

    p = add("sign-request", "print a registration request JWS signed with a TPP key", _cmd_sign_request)
    p.add_argument("--key", required=True, type=Path, help="the TPP private key (PEM)")
    p.add_argument(
        "--kid", help="kid of the key in the TPP JWKS (default: its RFC 7638 thumbprint); write --kid=KID"
    )
    p.add_argument("--ssa", required=True, help="the software statement, or @FILE")
    p.add_argument("--aud", help="aud claim (default: the sandbox's issuer)")
    p.add_argument(
        "--redirect-uri", action="append", help="redirect_uris entry (default: the SSA's, repeatable)"
    )
    p.add_argument(
        "--scope", help='space-separated scope, e.g. "accounts payments" (default: the scopes the SSA\'s '
        "software_roles permit: AISP accounts, PISP payments, CBPII fundsconfirmations)",
    )
    p.add_argument("--token-endpoint-auth-method", choices=AUTH_METHODS, default="private_key_jwt")
    p.add_argument("--grant-type", action="append", choices=GRANT_TYPES, help="default: client_credentials")
    p.add_argument("--application-type", choices=("web", "mobile"), default="web")
    p.add_argument("--tls-client-auth-subject-dn", help="required with tls_client_auth")
    p.add_argument("--lifetime", type=int, default=300, help="seconds until exp (default 300)")

    p = add(
        "client-assertion",
        "print a private_key_jwt client assertion for the token endpoint",
        _cmd_client_assertion,
    )
    p.add_argument("--key", required=True, type=Path, help="the TPP private key (PEM)")
    p.add_argument(
        "--kid", help="kid of the key in the TPP JWKS (default: its RFC 7638 thumbprint); write --kid=KID"
    )
    p.add_argument("--client-id", required=True, help="the registered client_id")
    p.add_argument("--aud", help="aud claim (default: the token endpoint discovery advertises)")


def _tpp_key_options(p: argparse.ArgumentParser, when: str) -> None:
    """The signing key and hosting options of tpp-key (and of mint-cert --add-to-jwks)."""
    p.add_argument("--alg", choices=("PS256", "ES256"), default="PS256",
                   help=f"{when}PS256 (RSA) or ES256 (EC P-256), for a new signing key")
    p.add_argument("--register", action="store_true",
                   help=f"{when}host the public JWKS on the running sandbox and write DIR/jwks_uri")
    p.add_argument("--sandbox-url", help=f"{when}the sandbox's URL (default: from sandbox.listen)")


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = fn(args)
        except (CliError, CryptoError, CertificateError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return code

    run.__doc__ = fn.__doc__
    return run


# serve -------------------------------------------------------------------------------------------


@_guarded
def _cmd_serve(args: argparse.Namespace) -> int:
    """Run the sandbox alone until SIGTERM/SIGINT."""
    settings = _settings(args)
    configure_logging(settings.logging.format, settings.logging.level)
    return run_async(serve(settings))


async def serve(settings: Settings) -> int:
    """Serve the sandbox app on sandbox.listen until a stop signal."""
    from .app import build_sandbox_app

    log = get_logger("sandbox")
    runner = ListenerRunner(
        build_sandbox_app(settings), access_log=None, shutdown_timeout=settings.shutdown.drain_timeout_seconds
    )
    await runner.setup()
    try:
        listen = settings.sandbox.listen
        site = web.TCPSite(runner, listen.host, listen.port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("sandbox_listening", host=listen.host, port=listen.port)
        await stop.wait()
    finally:
        await runner.cleanup()
    log.info("sandbox_stopped")
    return 0


# create-app / mint-ssa ---------------------------------------------------------------------------


@_guarded
def _cmd_create_app(args: argparse.Namespace) -> int:
    """Create an app directly in the store (no server needed) and print its credentials."""
    settings = _settings(args)
    state_dir = ensure_state_dir(settings.resolve_path(settings.sandbox.state_dir))
    client_id, secret = new_client_id(), new_client_secret()
    now = int(time.time())
    store = SyncStore(state_dir / DB_FILE)
    try:
        store.add_client(
            Client(
                client_id=client_id,
                kind="app",
                secret_hash=hash_secret(secret),
                created_at=now,
                updated_at=now,
                name=args.name,
            )
        )
    finally:
        store.close()
    print(json.dumps({"client_id": client_id, "client_secret": secret}, indent=2))
    return 0


@_guarded
def _cmd_mint_ssa(args: argparse.Namespace) -> int:
    """Mint an SSA with the directory key from the state directory."""
    settings = _settings(args)
    keys = KeyRing.load(settings.resolve_path(settings.sandbox.state_dir))
    given: dict[str, Any] = {}
    for claim, value in (
        ("software_id", args.software_id),
        ("software_client_name", args.client_name),
        ("software_redirect_uris", args.redirect_uri),
        ("software_roles", args.role),
        ("software_jwks_endpoint", args.jwks_endpoint),
        ("org_id", args.org_id),
        ("org_name", args.org_name),
        ("org_status", args.org_status),
    ):
        if value is not None:
            given[claim] = value
    claims = ssa_claims(given, issuer=settings.sandbox.directory_issuer)
    print(sign(keys.directory, claims, typ="JWT"))
    return 0


# tpp-key -----------------------------------------------------------------------------------------


def _sandbox_url(settings: Settings, override: str | None) -> str:
    if override:
        return override.rstrip("/")
    listen = settings.sandbox.listen
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host  # noqa: S104 (mapping, not binding)
    return f"http://{host}:{listen.port}"


async def _host_jwks(url: str, document: dict[str, Any]) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.post(url + TPP_JWKS_PATH, json=document, allow_redirects=False) as resp,
        ):
            body = await resp.json(content_type=None)
            if resp.status != 201 or not isinstance(body, dict) or "jwks_uri" not in body:
                raise CliError(f"the sandbox at {url} refused the JWKS (HTTP {resp.status}): {body}")
            return str(body["jwks_uri"])
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise CliError(f"cannot reach the sandbox at {url} ({type(exc).__name__}); is it running?") from None


def _transport_key(path: Path) -> dict[str, Any]:
    """The `use: tls` JWK of the certificate chain in `path` (leaf first), checked as the sandbox hosts it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        certs = read_certificates(data)
        check_chain(certs)
        return transport_jwk([certificate_der(c) for c in certs])
    except CertificateError as exc:
        raise CliError(f"{path}: {exc}") from None
    except JoseError as exc:
        raise CliError(f"{path}: {exc.description}") from None


@_guarded
def _cmd_tpp_key(args: argparse.Namespace) -> int:
    """Generate a TPP key pair into --out; print its kid (and, with --register, the hosted jwks_uri)."""
    settings = _settings(args) if args.register else None
    transport = _transport_key(args.transport_cert) if args.transport_cert is not None else None
    kid, document = _write_tpp_key(args.out, args.alg, transport)
    print(kid)
    if settings is not None:
        print(_register_jwks(args.out, _sandbox_url(settings, args.sandbox_url), document))
    return 0


def _write_tpp_key(out: Path, alg: str, transport: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """tpp-key's files in `out`: a new signing key (or, when `transport` is added, the existing one), the public
    JWKS with `transport` as a `use: tls` key, the kid; returns the kid and the JWKS."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (out / PRIVATE_KEY_FILE).exists():
        if transport is None:
            raise CliError(f"{out / PRIVATE_KEY_FILE} already exists; choose another --out directory")
        key = _load_key(out / PRIVATE_KEY_FILE, None)  # adding a transport certificate keeps the signing key
    else:
        key = generate_key(alg)
        if not write_private_file(out / PRIVATE_KEY_FILE, key.to_pem()):
            raise CliError(f"{out / PRIVATE_KEY_FILE} already exists")
    document = jwks([key])
    if transport is not None:
        document["keys"].append(transport)
        KeySet.from_document(document)  # fail here, not at the sandbox: the same checks as hosting
    (out / JWKS_FILE).write_text(json.dumps(document, indent=2) + "\n")
    (out / KID_FILE).write_text(key.kid + "\n")
    return key.kid, document


def _register_jwks(out: Path, sandbox_url: str, document: dict[str, Any]) -> str:
    """Host `document` on the running sandbox; write and return its jwks_uri."""
    jwks_uri = asyncio.run(_host_jwks(sandbox_url, document))
    (out / JWKS_URI_FILE).write_text(jwks_uri + "\n")
    return jwks_uri


# mint-cert ---------------------------------------------------------------------------------------


@_guarded
def _cmd_mint_cert(args: argparse.Namespace) -> int:
    """Issue a transport certificate from the state directory's test CA into --out; print what was written."""
    settings = _settings(args)
    software_id = args.software_id or new_software_id()
    org_id = args.org_id or new_org_id()
    profile = _psd2_profile(args)
    if profile is None:
        subject = ob_subject(org_name=args.org_name, org_id=org_id, software_id=software_id)
    else:
        subject = psd2_subject(profile, org_name=args.org_name, org_id=org_id, software_id=software_id)
    if not 1 <= args.days <= MAX_LEAF_DAYS:
        raise CliError(f"--days must be 1 to {MAX_LEAF_DAYS}")
    if args.register and args.add_to_jwks is None:
        raise CliError("--register hosts the key set of --add-to-jwks DIR: give both")
    ca = SandboxCa.load(settings.resolve_path(settings.sandbox.state_dir))
    out: Path = args.out
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = out / CERT_FILE, out / CERT_KEY_FILE
    if key_path.exists() or cert_path.exists():
        raise CliError(f"{key_path} or {cert_path} already exists; choose another --out directory")
    private = generate_private_key(args.key_type)
    cert = ca.issue(private.public_key(), subject, days=args.days, psd2=profile)
    cert = with_revocation_pointers(ca, cert, _sandbox_url(settings, args.sandbox_url))  # its CRL and OCSP URLs
    record_issued(settings.resolve_path(settings.sandbox.state_dir), cert)
    if not write_private_file(key_path, private_pem(private)):
        raise CliError(f"{key_path} already exists")
    cert_path.write_bytes(certificate_pem(cert) + certificate_pem(ca.cert))
    der = certificate_der(cert)
    report: dict[str, Any] = {
        "certificate": str(cert_path),
        "private_key": str(key_path),
        "ca_certificate": str(ca.cert_path),
        "subject_dn": cert.subject.rfc4514_string(),
        "software_id": software_id,
        "org_id": org_id,
        "x5t#S256": cert_thumbprint_s256(der),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "type": args.cert_type,
    }
    if profile is not None:
        report["organization_identifier"] = profile.organization_identifier
        if profile.cert_type != "obwac":
            report["psd2_roles"] = list(profile.roles)
            report["nca_id"] = profile.nca_id
    jwks_dir: Path | None = args.add_to_jwks
    if jwks_dir is None:
        report["next"] = f"dcr-gateway sandbox tpp-key --out {out} --transport-cert {cert_path} --register"
    else:  # tpp-key --out DIR --transport-cert <this certificate> [--register], in the same step
        report["kid"], document = _write_tpp_key(jwks_dir, args.alg, _transport_key(cert_path))
        report["jwks"] = str(jwks_dir / JWKS_FILE)
        if args.register:
            report["jwks_uri"] = _register_jwks(jwks_dir, _sandbox_url(settings, args.sandbox_url), document)
    print(json.dumps(report, indent=2))
    return 0


def _psd2_profile(args: argparse.Namespace) -> Psd2Profile | None:
    """The PSD2 profile --type and its options ask for; None for the OB transport certificate."""
    if args.cert_type == "transport":
        return None
    country, _, nca = args.nca_id.rpartition("-")
    if country and args.nca_country is not None and country != args.nca_country:
        raise CliError(f"--nca-id {args.nca_id} names another country than --nca-country {args.nca_country}")
    country = country or args.nca_country or "GB"
    roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
    if args.cert_type == "obwac":
        roles = roles or DEFAULT_PSD2_ROLES  # an OBWAC carries no roles; the profile still validates
    try:
        return Psd2Profile(args.cert_type, roles, country, nca, args.nca_name,
                           args.registration_id)
    except CertificateError as exc:
        raise CliError(str(exc)) from None


@_guarded
def _cmd_revoke_cert(args: argparse.Namespace) -> int:
    """Mark a certificate of the test CA's index revoked; print its entry."""
    settings = _settings(args)
    state_dir = settings.resolve_path(settings.sandbox.state_dir)
    entry = revoke(state_dir, parse_serial_or_pem(args.certificate), reason=args.reason)
    print(json.dumps(entry, indent=2))
    return 0


# sign-request / client-assertion -----------------------------------------------------------------


def _load_key(path: Path, kid: str | None) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_private_pem(data, kid=kid)


def _read_ssa(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {value[1:]}: {exc.strerror or exc}") from None
    return value.strip()


def roles_scope(ssa_payload: dict[str, Any]) -> str | None:
    """The scope an SSA's software_roles permit (AISP → accounts, PISP → payments, CBPII → fundsconfirmations),
    space-separated in role order; None when it names no known role."""
    roles = ssa_payload.get("software_roles")
    if not isinstance(roles, list):
        return None
    scopes = [ROLE_SCOPES[r] for r in roles if isinstance(r, str) and r in ROLE_SCOPES]
    return " ".join(dict.fromkeys(scopes)) or None


def registration_claims(
    key: SigningKey,
    ssa: str,
    *,
    aud: str,
    redirect_uris: list[str] | None = None,
    scope: str | None = None,
    method: str = "private_key_jwt",
    grant_types: list[str] | None = None,
    application_type: str = "web",
    subject_dn: str | None = None,
    lifetime: int = 300,
) -> dict[str, Any]:
    """The claims of an OBClientRegistrationRequest1 for `ssa` signed by `key` (what `sign-request` signs).

    Without `redirect_uris` the SSA's; without `scope` the one its software_roles permit (`roles_scope`)."""
    _, ssa_payload = decode_unverified(ssa)
    software_id = ssa_payload.get("software_id")
    if not isinstance(software_id, str):
        raise CliError("the SSA has no software_id")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": software_id,
        "iat": now,
        "exp": now + lifetime,
        "aud": aud,
        "jti": str(uuid.uuid4()),
        "software_id": software_id,
        "redirect_uris": redirect_uris or ssa_payload.get("software_redirect_uris") or [],
        "token_endpoint_auth_method": method,
        "grant_types": grant_types or ["client_credentials"],
        "software_statement": ssa,
        "application_type": application_type,
        "id_token_signed_response_alg": alg_for(key),
        "request_object_signing_alg": alg_for(key),
    }
    scope = scope or roles_scope(ssa_payload)
    if scope:
        claims["scope"] = scope
    if method == "private_key_jwt":
        claims["token_endpoint_auth_signing_alg"] = alg_for(key)
    if method == "tls_client_auth":
        if not subject_dn:
            raise CliError("tls_client_auth needs --tls-client-auth-subject-dn")
        claims["tls_client_auth_subject_dn"] = subject_dn
    return claims


@_guarded
def _cmd_sign_request(args: argparse.Namespace) -> int:
    """Build and sign an OBClientRegistrationRequest1 from an SSA and a TPP key."""
    settings = _settings(args)
    key = _load_key(args.key, args.kid)
    claims = registration_claims(
        key, _read_ssa(args.ssa), aud=args.aud or settings.sandbox.issuer or settings.server.public_url,
        redirect_uris=args.redirect_uri, scope=args.scope, method=args.token_endpoint_auth_method,
        grant_types=args.grant_type, application_type=args.application_type,
        subject_dn=args.tls_client_auth_subject_dn, lifetime=args.lifetime)
    print(sign(key, claims, typ="JWT"))
    return 0


@_guarded
def _cmd_client_assertion(args: argparse.Namespace) -> int:
    """Sign a client assertion (iss = sub = client_id, aud = token endpoint, 5 minutes, fresh jti)."""
    settings = _settings(args)
    key = _load_key(args.key, args.kid)
    now = int(time.time())
    claims = {
        "iss": args.client_id,
        "sub": args.client_id,
        "aud": args.aud or settings.server.public_url + TOKEN_PATH,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    print(sign(key, claims, typ="JWT"))
    return 0


@_guarded
def _cmd_openapi(args: argparse.Namespace) -> int:
    """Print the document the sandbox serves on /openapi.json (or .yaml), byte for byte."""
    try:
        doc = document(_settings(args))
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.write(render(doc, args.format))
    return 0
