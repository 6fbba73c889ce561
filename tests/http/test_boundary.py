"""The HTTP side knows no check: `gateway/http/*` reaches the engine only through `gateway.policy` (its public
surface), never `gateway.checks` or the engine's modules directly."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

HTTP = ROOT / "gateway" / "http"
ALLOWED = {"config", "errors", "jsonutil", "observability", "policy", "reasons", "runtime"}
"""Top-level gateway packages and modules the HTTP side may import from (besides its own)."""


def _gateway_imports(source: str) -> list[str]:
    """Dotted names (relative to `gateway`) of every `from ..x import` in a module of gateway/http."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            names.append(node.module or "")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gateway."):
            names.append((node.module or "").removeprefix("gateway."))
        elif isinstance(node, ast.Import):
            names.extend(a.name.removeprefix("gateway.") for a in node.names if a.name.startswith("gateway."))
    return names


def test_http_imports_only_the_engines_public_surface() -> None:
    """No module of gateway/http imports gateway.checks.*, gateway.policy.<module>, jose, state or sandbox (the
    reason registry, `gateway.reasons`, is shared vocabulary like `gateway.errors`)."""
    wrong = {}
    for path in sorted(HTTP.glob("*.py")):
        bad = [m for m in _gateway_imports(path.read_text()) if m.split(".")[0] not in ALLOWED or
               (m.startswith("policy.") and m != "policy")]
        if bad:
            wrong[path.name] = bad
    assert wrong == {}
