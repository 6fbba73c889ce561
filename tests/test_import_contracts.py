"""The import contracts of pyproject.toml ([tool.importlinter]) hold: the layers of docs/architecture.md, the
HTTP side reaching the engine only through `gateway.policy`, jwcrypto only under `gateway.jose`, a core that
never imports the sandbox. `make lint` runs the same contracts; this test makes `make test` fail too."""

from __future__ import annotations

import pytest
from importlinter.cli import lint_imports

from tests.conftest import ROOT


def test_the_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
