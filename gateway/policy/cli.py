"""`dcr-gateway policy lint | test | explain`: the security team's tools."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..checks.facts import FactHeaders
from ..checks.services import Services
from ..config import CheckMode, Settings, load_settings
from ..observability.logging import configure_logging
from ..runtime import build_runtime
from .loader import PolicyError, compile_policies, read_source


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    configure_logging("auto", "warning")  # the tools' own output only
    return settings


def _directory(args: argparse.Namespace, settings: Settings) -> Path:
    if args.dir and args.dir_option and args.dir != args.dir_option:
        print(f"error: two policy directories ({args.dir} and --dir {args.dir_option}); give one", file=sys.stderr)
        raise SystemExit(2)
    given = args.dir_option or args.dir
    return Path(given) if given else settings.resolve_path(settings.policies.dir)


def _offline_services(settings: Settings) -> Services:
    """The services policies compile against (never started: nothing is fetched or opened)."""
    return build_runtime(settings, None).services


def cmd_lint(args: argparse.Namespace) -> int:
    """Validate a policy directory; print file:line errors and exit 1 when invalid."""
    settings = _settings(args)
    directory = _directory(args, settings)
    try:
        source = read_source(directory)
        policy_set = compile_policies(source, _offline_services(settings),
                                      unmatched_status=settings.policies.unmatched_status)
    except PolicyError as exc:
        for line in exc.messages:
            print(line, file=sys.stderr)
        print(f"{len(exc.messages)} error(s) in {directory}", file=sys.stderr)
        return 1
    problems = FactHeaders.problems(settings.policies.fact_headers)
    for line in problems:
        print(f"{args.config or 'config'}: {line}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} error(s) in the configuration of {directory}", file=sys.stderr)
        return 1
    print(f"{directory}: {len(policy_set.policies)} policies ok (version {policy_set.version})")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Show which policy a request matches and the checks that would run, in order."""
    settings = _settings(args)
    directory = _directory(args, settings)
    try:
        policy_set = compile_policies(read_source(directory), _offline_services(settings),
                                      unmatched_status=settings.policies.unmatched_status)
    except PolicyError as exc:
        for line in exc.messages:
            print(line, file=sys.stderr)
        return 1
    method = args.method.upper()
    match = policy_set.match(method, args.path)
    if match is None or match.value is None:
        denial = policy_set.unmatched(method, match)
        print(f"{method} {args.path}: no policy applies -> {denial.status} {denial.error} ({denial.reason})")
        if match is not None and match.allowed:
            print(f"  route {match.template} allows: {', '.join(match.allowed)}")
        return 0
    policy = match.value
    print(f"{method} {args.path}")
    print(f"  policy:  {policy.name}  ({policy.source})")
    if policy.description:
        print(f"           {policy.description}")
    print(f"  route:   {policy.template}  {' '.join(f'{k}={v}' for k, v in match.params.items())}".rstrip())
    print(f"  mode:    {policy.mode}" + ("  (dry run: every check's denials are reported, none enforced)"
                                             if policy.mode == "audit" else ""))
    print("  checks:  (in the order they run)" if policy.checks else "  checks:  (none: forwarded as is)")
    declared = policy.declared or tuple(range(len(policy.checks)))
    modes: tuple[CheckMode | None, ...] = policy.modes or (None,) * len(policy.checks)
    for i, (check, position, mode) in enumerate(zip(policy.checks, declared, modes, strict=True), 1):
        params = check.params.model_dump(mode="json", exclude_defaults=True)
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())
        line = f"    {i}. {check.name}" + (f"  ({shown})" if shown else "")
        if check.records_state:
            moved = f", listed {position + 1}." if position + 1 != i else ""
            line += f"  [records state: runs after the verifying checks{moved}]"
        print(line)
        print(f"       mode: {mode.describe() if mode is not None else ('audit' if check.audit_only else 'enforce')}")
    if policy.produces:
        headers = settings.policies.fact_headers
        produced = [f"{f.name} -> {headers[f.name]}" if f.name in headers and f.header is not None else f.name
                 for f in policy.produces]
        print(f"  facts:   {', '.join(produced)}")
        print("           (headers sent upstream only when every check passed)")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run the `*_test.yaml` cases beside the policies; exit 1 on any failure."""
    from .testing import run_policy_tests

    settings = _settings(args)
    return run_policy_tests(settings, _directory(args, settings), verbose=args.verbose)


def register(sub: Any) -> None:
    """Add the `policy` command tree."""
    policy = sub.add_parser("policy", help="policy tools: lint, test, explain",
                            description="The security team's tools. Each takes the policy directory as DIR or "
                                        "--dir DIR (default: policies.dir of the config).")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, fn: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = psub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", help="config file (trust anchors; default: $DCRGW_CONFIG or ./config.yaml)")
        # The directory, the same way for the three commands: `policy lint DIR` or `policy lint --dir DIR`.
        p.add_argument("dir", nargs="?", help="policy directory (default: policies.dir from config)")
        p.add_argument("--dir", dest="dir_option", metavar="DIR", help="the same as the positional DIR")
        p.set_defaults(func=fn)
        return p

    add("lint", "validate a policy directory", cmd_lint)
    test = add("test", "run the policy test cases (*_test.yaml)", cmd_test)
    test.add_argument("-v", "--verbose", action="store_true", help="print every case")
    explain = add("explain", "show the policy and checks a request would meet, and the mode of each check",
                  cmd_explain)
    explain.add_argument("--method", required=True)
    explain.add_argument("--path", required=True)
