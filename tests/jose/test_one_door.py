"""JOSE has one door: only gateway/jose/ imports jwcrypto, and a JWS is verified only by the one path
(`JwsVerifier`, gateway/jose/verifier.py). Both read the source with `ast`, so a fourth copy of the verification
steps — or a module that goes round gateway/jose to jwcrypto — fails here, whatever it is named."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
JOSE = GATEWAY / "jose"

PRIMITIVES = frozenset({"verify_signature", "check_algorithm", "engine", "_check_key", "_check_ecdsa_shape"})
"""The low-level steps of JWS verification: whoever calls them outside the one path verifies a JWS by hand."""
PRIMITIVE_HOMES = {
    "verify_signature": {"jws.py", "verifier.py"},
    "check_algorithm": {"jws.py", "verifier.py"},
    "_check_key": {"jws.py"},
    "_check_ecdsa_shape": {"jws.py"},
    "engine": {"algorithms.py", "jws.py", "keys.py"},  # the jwcrypto signing engines: sign (keys), verify (jws)
}
RAW_PARTS = frozenset({"signing_input", "signature", "jwk", "get_op_key"})
"""What a hand-made verifier needs from a parsed JWS or key: the signed bytes, the signature, the jwcrypto key."""
X509_SIGNATURES = {("pki/revocation.py", "signature")}
"""Not JWS: the one place an X.509 signed object's signature is read, the OCSP response's (RFC 6960 §4.2.1), which
`cryptography` offers no verifier for (CRLs and certificates are verified by `cryptography` itself)."""


def modules(root: Path) -> Iterator[tuple[Path, ast.Module]]:
    """Every Python module under `root`, parsed."""
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for every import, at any depth (late imports included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            yield node.lineno, node.module


def referenced_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, name) for every name read, attribute read and name imported: `f`, `x.f` and `from m import f`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield node.lineno, alias.name


def attributes_read(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, attribute) for every `x.attr`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.lineno, node.attr


def outside_jose() -> Iterator[tuple[Path, ast.Module]]:
    """Every module of gateway/ except those of gateway/jose/."""
    for path, tree in modules(GATEWAY):
        if JOSE not in path.parents:
            yield path, tree


def test_the_scan_sees_the_code() -> None:
    """The scan finds the package, the sandbox, and jwcrypto inside gateway/jose (so the rules below can fail)."""
    paths = {p.relative_to(GATEWAY).as_posix() for p, _ in modules(GATEWAY)}
    assert {"checks/token_verifier.py", "sandbox/crypto.py", "policy/testing.py", "jose/verifier.py"} <= paths
    jose_imports = {m for _, tree in modules(JOSE) for _, m in imported_modules(tree)}
    assert any(m == "jwcrypto" or m.startswith("jwcrypto.") for m in jose_imports)


def test_only_gateway_jose_imports_jwcrypto() -> None:
    """No module outside gateway/jose/ (the sandbox included) imports jwcrypto, at any depth."""
    offenders = [
        f"{path.relative_to(GATEWAY.parent)}:{line} imports {module}"
        for path, tree in outside_jose()
        for line, module in imported_modules(tree)
        if module == "jwcrypto" or module.startswith("jwcrypto.")
    ]
    assert offenders == []


def test_no_jws_is_verified_outside_the_one_path() -> None:
    """Outside gateway/jose/ nothing names a verification step (verify_signature, check_algorithm, the signing
    engines) or reads what a hand-made verifier needs (signing input, signature bytes, the jwcrypto key)."""
    offenders = [
        f"{path.relative_to(GATEWAY.parent)}:{line} uses {name}"
        for path, tree in outside_jose()
        for line, name in referenced_names(tree)
        if name in PRIMITIVES
    ]
    offenders += [
        f"{path.relative_to(GATEWAY.parent)}:{line} reads .{name}"
        for path, tree in outside_jose()
        for line, name in attributes_read(tree)
        if name in RAW_PARTS and (path.relative_to(GATEWAY).as_posix(), name) not in X509_SIGNATURES
    ]
    assert offenders == []
    exempt = {(p.relative_to(GATEWAY).as_posix(), n) for p, tree in outside_jose() for _, n in attributes_read(tree)}
    assert X509_SIGNATURES <= exempt, "an X.509 exemption no longer needed: remove it"


def test_inside_jose_the_steps_are_taken_only_by_the_one_path() -> None:
    """Inside gateway/jose/ the steps are defined in jws.py / algorithms.py and called only by verifier.py (and the
    engines by keys.py, to sign): no second verifier can grow inside the package either."""
    offenders = [
        f"{path.relative_to(GATEWAY.parent)}:{line} uses {name}"
        for path, tree in modules(JOSE)
        for line, name in referenced_names(tree)
        if name in PRIMITIVE_HOMES and path.name not in PRIMITIVE_HOMES[name] and path.name != "__init__.py"
    ]
    assert offenders == []


def test_one_verifier_class() -> None:
    """JwsVerifier is the only verifier class in gateway/jose/, and verify_signature is called exactly once there."""
    verifier = ast.parse((JOSE / "verifier.py").read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(verifier) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "verify_signature"]
    assert len(calls) == 1
    classes = {n.name for _, tree in modules(JOSE) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
               and n.name.endswith("Verifier")}
    assert classes == {"JwsVerifier"}


def test_every_verifying_caller_goes_through_the_one_path() -> None:
    """The token, SSA and registration-request checks and the sandbox build a JwsVerifier; `policy test` serves
    its generated keys with the one StaticKeys."""
    users = {
        "checks/token_verifier.py": "JwsVerifier",
        "checks/software_statement.py": "JwsVerifier",
        "checks/registration_request.py": "JwsVerifier",
        "sandbox/crypto.py": "JwsVerifier",
        "policy/testing.py": "StaticKeys",
    }
    for module, name in users.items():
        tree = ast.parse((GATEWAY / module).read_text(encoding="utf-8"))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id == name]
        assert calls, f"{module} does not build a {name}"
    definitions = [f"{p.relative_to(GATEWAY)}" for p, tree in modules(GATEWAY) for n in ast.walk(tree)
                   if isinstance(n, ast.ClassDef) and n.name in {"StaticKeys", "SigningKey", "KeyProvider"}]
    assert sorted(definitions) == ["jose/keys.py", "jose/verifier.py", "jose/verifier.py"]
