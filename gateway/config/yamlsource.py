"""YAML documents that remember where each value came from, so errors can name file and line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Loc = Sequence[str | int]


class YamlSourceError(Exception):
    """A YAML file that cannot be read or parsed; the message names file and line."""


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """Parsed data plus the node tree it came from."""

    path: Path
    data: Any
    root: yaml.Node | None

    def has(self, loc: Loc) -> bool:
        """True when the file itself holds a value at `loc` (not only a parent of it)."""
        node = self.root
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                            None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                return False
        return node is not None

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the value at `loc` (or of its closest existing parent)."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        node = value_node
                        line = key_node.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _reject_duplicate_keys(node: yaml.Node, path: Path) -> None:
    """Duplicate mapping keys are silently merged by PyYAML; for config they are a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise YamlSourceError(
                        f"{path}: line {key_node.start_mark.line + 1}: duplicate key {key_node.value!r} "
                        f"(first at line {seen[key_node.value]})"
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
            _reject_duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path)


def load_yaml(path: Path) -> YamlDocument:
    """Read one YAML document with safe types only; errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlSourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise YamlSourceError(f"{path}: not UTF-8 text") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    """Parse YAML text as if it were the file `path`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _reject_duplicate_keys(root, path)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise YamlSourceError(f"{path}: {where}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlSourceError(f"{path}: invalid YAML: {exc}") from None
    return YamlDocument(path=path, data=data, root=root)
