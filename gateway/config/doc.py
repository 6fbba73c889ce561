"""docs/configuration.md, generated from the config models so the reference never drifts from the code.

`python -m gateway.config.doc > docs/configuration.md`; a test fails when the file is stale.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from .settings import DERIVED_DEFAULTS, ENV_PREFIX, Settings, TokenIssuer

_HEADER = """# Configuration reference

`config.yaml` (or the file given by `--config` / `DCRGW_CONFIG`) is validated before anything starts;
unknown keys are errors. Relative paths resolve against the config file's directory. Any key can be
overridden by an environment variable: `{prefix}` + the key path in upper case with `__` between levels,
e.g. `{prefix}UPSTREAM__TIMEOUTS__READ=10`; values are read as YAML scalars.

This file is generated from `gateway/config/settings.py` (`python -m gateway.config.doc > docs/configuration.md`).

| key | default | description |
| --- | --- | --- |
"""


def _default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, tuple):
        value = list(value)
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}…`"


def _rows(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        # A nested section's defaults are those of its parent's default instance (admin.port is 9090).
        value = getattr(defaults, name) if defaults is not None else field.default
        key = f"{prefix}{name}"
        annotation = field.annotation
        sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        doc = (field.description or (sub.__doc__ if sub else "") or "").replace("\n", " ").strip()
        derived = DERIVED_DEFAULTS.get(key)
        default = "(required)" if field.is_required() else f"({derived})" if derived else _default(value)
        rows.append(f"| `{key}` | {default} | {' '.join(doc.split())} |")
        if sub is not None:
            rows.extend(_rows(sub, key + ".", value if isinstance(value, BaseModel) else None))
        elif name == "token_issuers":
            rows.extend(_rows(TokenIssuer, key + ".<name>."))
    return rows


def render() -> str:
    """The whole markdown document."""
    return _HEADER.format(prefix=ENV_PREFIX) + "\n".join(_rows(Settings, "")) + "\n"


if __name__ == "__main__":
    print(render(), end="")
