"""`dcr-gateway` entry point: the command tree (`serve`, `config`, `audit`, then the policy tools and the sandbox's,
which register their own subcommands), and `main`, which turns errors into one line and an exit status."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .config import ConfigError, Settings, check_workers, config_path, load_settings
from .observability.logging import configure_logging
from .pki.chain import TrustAnchors
from .policy import FactAssertion, FactAssertionError
from .policy.loader import PolicyError, compile_policies, read_source
from .runtime import build_runtime, run_async


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    configure_logging(settings.logging.format, settings.logging.level)
    return settings


def _cmd_serve(args: argparse.Namespace) -> int:
    from .http.app import Listener, serve

    settings = _load(args)
    worker_index: int | None = args.worker_index
    if worker_index is None:  # a worker's parent has checked
        _check_at_start(settings, args.config)
    workers: int = args.workers or settings.server.workers
    if worker_index is None and workers > 1:
        try:
            check_workers(settings, workers)
        except ValueError as exc:
            raise ConfigError([f"--workers {workers}: {exc}"]) from None
        from .supervisor import run_workers

        return run_workers(["--config", args.config] if args.config else [], workers)
    try:
        assertion = FactAssertion.from_settings(settings)
    except FactAssertionError as exc:
        raise ConfigError([str(exc)]) from None
    extra: list[Listener] = []
    if settings.sandbox.enabled:
        from .sandbox import build_sandbox_app

        # In one process the sandbox is handed the key of the gateway's signed facts: nothing to fetch.
        jwks = assertion.jwks() if assertion is not None else None
        extra.append(
            Listener("sandbox", build_sandbox_app(settings, jwks), settings.sandbox.listen.host,
                     settings.sandbox.listen.port)
        )
    return run_async(serve(settings, extra, worker_index=worker_index, assertion=assertion))


def _check_at_start(settings: Settings, config: str | None) -> None:
    """`config check` before serving: each warning logged (`config_warning`), errors refuse to start (exit 2)."""
    import os

    from .config.consistency import check
    from .observability.logging import get_logger

    log = get_logger("config")
    check(settings, config_path(config), os.environ,
          lambda finding, line: log.warning("config_warning", key=finding.key, message=line))


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .observability.audit import verify_file

    result = verify_file(Path(args.file))
    if result.ok:
        print(f"{args.file}: ok, {result.events} events in {result.chains} chain(s)")
        return 0
    print(f"{args.file}:{result.line}: {result.problem} ({result.events} events verified before it)")
    return 1


def _cmd_config_check(args: argparse.Namespace) -> int:
    import os

    from .config.consistency import check

    settings = load_settings(args.config)
    name = args.config or "config.yaml"
    # URLs that disagree with server.public_url, and profile overrides: errors exit 2, warnings only print.
    check(settings, config_path(args.config), os.environ, lambda _, line: print(f"warning: {line}", file=sys.stderr))
    # The trust anchors' PEM files, read as the gateway reads them at start (serve reads them once, then).
    try:
        TrustAnchors.load(settings.trust.certificate_authorities)
    except ConfigError as exc:
        raise ConfigError([f"{name}: {line}" for line in exc.messages]) from None
    # The policies hold rules that depend on config (issuer names, token lifetimes within
    # trust.revocation_ttl_seconds): check the configured set too when it is here to be read.
    directory = settings.resolve_path(settings.policies.dir)
    if not directory.is_dir():
        print(f"{name}: ok (policies.dir {directory} not found here, not checked: "
              f"run dcr-gateway policy lint DIR --config {name})")
        return 0
    configure_logging("auto", "warning")
    policy_set = compile_policies(read_source(directory), build_runtime(settings, None).services,
                                  unmatched_status=settings.policies.unmatched_status)
    # The operator's check_modes overruling what a policy says for a check: allowed (it wins), and said.
    for policy in policy_set.policies:
        for policy_check, mode in zip(policy.checks, policy.modes, strict=True):
            if mode.source == "config" and mode.policy is not None and mode.policy != mode.mode:
                print(f"warning: {name}: policies.check_modes.{policy_check.name}: {mode.mode} overrides `mode: "
                      f"{mode.policy}` of policy {policy.name} ({policy.source})", file=sys.stderr)
    print(f"{name}: ok; {directory}: {len(policy_set.policies)} policies ok")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


DESCRIPTION = """\
A security gateway for UK Open Banking Dynamic Client Registration: it checks every request to the bank's DCR
API (tokens, software statements, signed registration requests, client certificates) against the bank's
YAML policies and forwards only what they allow."""

EPILOG = """\
examples:
  dcr-gateway serve --config config.yaml        run the gateway (and the sandbox bank, when sandbox.enabled)
  dcr-gateway config check                      validate config.yaml (and the policies it names)
  dcr-gateway policy test policies/             run the policies' *_test.yaml cases
  dcr-gateway policy explain --method POST --path /open-banking/v3.1/register
  dcr-gateway audit verify audit.log            check the audit trail's hash chain

The config file is --config, else $DCRGW_CONFIG, else ./config.yaml; DCRGW_<SECTION>__<KEY> variables override
it. `dcr-gateway COMMAND --help` for each command. Docs: README.md, docs/configuration.md, docs/policies.md."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="dcr-gateway", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dcr-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", help="config file (default: $DCRGW_CONFIG or ./config.yaml)")
        p.set_defaults(func=fn)
        return p

    serve = add("serve", "run the gateway (and the sandbox when sandbox.enabled)", _cmd_serve)
    serve.add_argument("--workers", type=_positive, metavar="N",
                       help="worker processes sharing the ports (default: server.workers, 1)")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the parent for its workers
    config = sub.add_parser("config", help="configuration tools: check")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = config_sub.add_parser("check", help="validate the configuration and exit")
    check.add_argument("--config", help="config file (default: $DCRGW_CONFIG or ./config.yaml)")
    check.set_defaults(func=_cmd_config_check)
    audit = sub.add_parser("audit", help="audit trail tools: verify")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = audit_sub.add_parser("verify", help="check an audit file's hash chain; report the first broken, "
                                  "missing or reordered event")
    verify.add_argument("file")
    verify.set_defaults(func=_cmd_audit_verify)
    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    """Subcommands of other components (policy tools, sandbox) register themselves here."""
    from .policy.cli import register as register_policy

    register_policy(sub)
    try:
        from .sandbox.cli import register as register_sandbox
    except ImportError:
        return
    register_sandbox(sub)


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""The exit status of a command whose output pipe closed (`dcr-gateway … | head`): that of a process ended by
SIGPIPE, as shells report it (141)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run; configuration errors exit 2 with one clear message, no traceback. A closed
    output pipe ends the command quietly (EXIT_BROKEN_PIPE)."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # buffered output meets a closed pipe here, not in the interpreter's exit
    except BrokenPipeError:
        # As the Python documentation advises (signal module, "Note on SIGPIPE"): stdout to /dev/null, so that
        # the interpreter's own last flush does not fail again and print "Exception ignored".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, PolicyError) as exc:
        for line in exc.messages:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # main's: not an error to report
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
