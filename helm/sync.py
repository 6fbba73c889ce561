"""Keep the chart's derived files in step with the gateway: `python helm/sync.py [--check]`.

The `config` block of helm/dcr-gateway/values.schema.json is generated from the gateway's own config
model (gateway.config.Settings), so `helm install` rejects an unknown or mistyped config key with the
same rules `dcr-gateway config check` applies. Everything else in the schema is written by hand.
(The shipped policies need no syncing: helm/dcr-gateway/files/policies is a symlink to policies/.)

Run it after changing gateway/config/settings.py; tests/helm/test_chart.py fails while the schema is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parent / "dcr-gateway"
SCHEMA = CHART / "values.schema.json"

_CHART_OWNED = (
    "Set by the chart whatever the values say: `policies.dir` (the mounted ConfigMap), `sandbox.enabled` "
    "(from `.Values.sandbox.enabled`; with the sandbox also its listener, state_dir, upstream.url and the "
    "`bank` issuer, and `upstream.signed_facts.enabled` when the sandbox needs them), `server.workers` (from "
    "`.Values.workers`), `state.backend` (from `.Values.redis.enabled`; the URL comes from "
    "`.Values.redis.existingSecret`, never from `config`) and `upstream.signed_facts.key_file` / "
    "`published_key_files` (the mounted `.Values.signedFacts.existingSecret`)."
)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve every local `$ref` in place and drop pydantic's `title`s (plain draft-07, no $defs)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def config_schema() -> dict[str, Any]:
    """The JSON Schema of config.yaml, as the gateway validates it."""
    from gateway.config import Settings

    raw = Settings.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    schema["properties"].pop("base_dir", None)  # set by the loader, not a config key
    schema["description"] = (
        "The gateway's config.yaml (generated from gateway/config/settings.py by helm/sync.py; do not edit). "
        + _CHART_OWNED
    )
    return schema


def render_schema(current: dict[str, Any]) -> str:
    """values.schema.json text with its `config` property regenerated."""
    updated = dict(current)
    props = dict(updated["properties"])
    props["config"] = config_schema()
    updated["properties"] = props
    return json.dumps(updated, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the derived files, or with --check report whether they are stale (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a derived file is out of date")
    args = parser.parse_args(argv)
    text = SCHEMA.read_text()
    wanted = render_schema(json.loads(text))
    if text == wanted:
        print(f"{SCHEMA}: up to date")
        return 0
    if args.check:
        print(f"{SCHEMA}: stale; run `python helm/sync.py`", file=sys.stderr)
        return 1
    SCHEMA.write_text(wanted)
    print(f"{SCHEMA}: updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
