"""The import graph of `gateway/`, read with `ast`: no cycles, and no function-level imports in the core.

Every `import` counts, at module level or inside a function: a late import that dodges a cycle still makes
one, so it is an edge like any other. Importing `gateway.a.b` also runs `gateway/a/__init__.py` first, so an
import reaches every package above its target that is not already above the importer. Imports under
`if TYPE_CHECKING:` never run and are left out (a check names `Services` in its annotations that way).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"

NO_FUNCTION_LEVEL_IMPORTS = ("gateway.checks", "gateway.policy.engine", "gateway.state", "gateway.jose")
"""Modules (and packages, with everything below them) whose imports all sit at the top of the file."""

FUNCTION_LEVEL_ALLOWED: dict[tuple[str, str], str] = {
    # (importing module, imported module): why it is imported inside a function. Empty: none is needed.
}


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, where it is and whether it runs inside a function."""

    importer: str
    target: str
    line: int
    in_function: bool
    names: tuple[str, ...] = ()
    """The names a `from … import` takes from the target (empty for `import x` and for a submodule)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node` that can run, with whether it sits inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _walk(ast.Module(body=[other], type_ignores=[]), in_function)
        else:
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _walk(child, inner)


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str | None]]:
    """(module, name taken from it) for each name of an import statement; a gateway submodule that
    `from pkg import name` names is the module itself (name None), as with `import x`."""
    if isinstance(node, ast.Import):
        yield from ((alias.name, None) for alias in node.names)
        return
    if node.level:
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield (sub, None) if sub in MODULES else (base, alias.name)


def _imports() -> list[Import]:
    found: list[Import] = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _walk(tree, False):
            found.extend(Import(name, target, node.lineno, in_function, () if taken is None else (taken,))
                         for target, taken in _resolve(name, node))
    return found


def _edges(imports: list[Import]) -> dict[str, set[str]]:
    """Module → the modules its imports run: the target and the packages above it not above the importer."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in imports:
        if imp.target not in MODULES:
            continue  # the standard library and third parties
        own = imp.importer.split(".")
        parts = imp.target.split(".")
        for depth in range(1, len(parts)):
            if parts[:depth] != own[:depth] and ".".join(parts[:depth]) in MODULES:
                graph[imp.importer].add(".".join(parts[:depth]))
        if imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


IMPORTS = _imports()


def test_the_graph_is_read() -> None:
    """The walk finds the package's modules and the imports that wire them (a broken walk proves nothing)."""
    graph = _edges(IMPORTS)
    assert "gateway.checks.services" in MODULES and "gateway.runtime" in MODULES
    assert "gateway.checks.services" in graph["gateway.runtime"]
    assert "gateway.runtime" in graph["gateway.cli"]  # a module-level import
    assert "gateway.http.app" in graph["gateway.cli"]  # a function-level one (the `serve` subcommand)
    assert "gateway.jose" in graph["gateway.checks.token_verifier"]  # the package a submodule import runs


def test_no_import_cycles() -> None:
    """No module of gateway/ imports, directly or through others, a module that imports it back."""
    cycles = _cycles(_edges(IMPORTS))
    assert not cycles, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_cycle_detection_sees_a_late_import() -> None:
    """A function-level import closing a loop is reported as a cycle, like a module-level one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from . import x\nif TYPE_CHECKING:\n    import y\n")
    assert [(type(n).__name__, inside) for n, inside in _walk(tree, False)] == [("ImportFrom", True)]


def _strict(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in NO_FUNCTION_LEVEL_IMPORTS)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _strict(m)))
def test_no_function_level_imports(module: str) -> None:
    """The checks, the engine, the state stores and jose import everything at the top of the file."""
    late = [f"{MODULES[module].relative_to(ROOT)}:{imp.line} imports {imp.target}"
            for imp in IMPORTS
            if imp.importer == module and imp.in_function and (module, imp.target) not in FUNCTION_LEVEL_ALLOWED]
    assert not late, "function-level imports:\n" + "\n".join(late)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _named(imp: Import) -> set[str]:
    """What an import brings in, as modules and `module.name`s."""
    return {imp.target, *(f"{imp.target}.{n}" for n in imp.names)}


CONCRETE_STORES = {"gateway.state.memory", "gateway.state.redis", "gateway.state.MemoryStore",
                   "gateway.state.RedisStore", "gateway.state.CircuitBreaker"}
WIRING = {"gateway.jose.jwks_cache", "gateway.jose.JwksCache", "gateway.observability.metrics", "gateway.runtime"}


def test_concrete_stores_are_named_only_in_gateway_state():
    """Outside gateway/state/ the store is the StateStore protocol: nothing imports a backend to build it or to
    ask which one it is (gateway.state.build_store builds the configured one)."""
    found = [f"{i.importer}:{i.line}" for i in IMPORTS
             if not _under(i.importer, "gateway.state") and _named(i) & CONCRETE_STORES]
    assert not found, "a concrete store imported outside gateway/state: " + ", ".join(found)


def test_checks_are_handed_what_they_share():
    """No check module builds what checks share: no JWKS cache class, no metrics, no runtime (gateway/runtime.py
    builds them into Services)."""
    found = [f"{i.importer}:{i.line} imports {i.target}" for i in IMPORTS
             if _under(i.importer, "gateway.checks") and _named(i) & WIRING]
    assert not found, "\n".join(found)
