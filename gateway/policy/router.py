"""Path-template routing in a segment trie: matching cost grows with path depth, not with policy count."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LITERAL = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")


class TemplateError(ValueError):
    """A path template that is not of the form /literal/{Param}/…"""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed path template: each segment a literal or a named parameter."""

    text: str
    segments: tuple[tuple[bool, str], ...]  # (is_param, literal-or-name)

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse `/a/{B}/c`; reject empty segments, dot segments and bad names."""
        if not text.startswith("/"):
            raise TemplateError(f"path template must start with '/': {text!r}")
        if text == "/":
            return cls(text, ())
        segments: list[tuple[bool, str]] = []
        names: set[str] = set()
        for raw in text[1:].split("/"):
            m = _PARAM.match(raw)
            if m:
                if m.group(1) in names:
                    raise TemplateError(f"parameter {{{m.group(1)}}} appears twice in {text!r}")
                names.add(m.group(1))
                segments.append((True, m.group(1)))
            elif raw in ("", ".", "..") or not _LITERAL.match(raw) or "{" in raw or "}" in raw:
                raise TemplateError(f"invalid path segment {raw!r} in {text!r}")
            else:
                segments.append((False, raw))
        return cls(text, tuple(segments))

    def overlaps(self, other: Template) -> bool:
        """True when some path could match both templates."""
        if len(self.segments) != len(other.segments):
            return False
        return all(a[0] or b[0] or a[1] == b[1] for a, b in zip(self.segments, other.segments, strict=True))


@dataclass(slots=True)
class _Node(Generic[T]):
    literals: dict[str, _Node[T]] = field(default_factory=dict)
    param: tuple[str, _Node[T]] | None = None
    methods: dict[str, tuple[T, str, tuple[str, ...]]] = field(default_factory=dict)  # value, template, names
    template: str | None = None


@dataclass(frozen=True, slots=True)
class Match(Generic[T]):
    """A routing result: the value for the method, or the methods the path allows."""

    value: T | None
    template: str | None
    params: dict[str, str]
    allowed: tuple[str, ...] = ()


class Router(Generic[T]):
    """Maps (method, path) to a value; templates with overlapping methods are rejected when added."""

    __slots__ = ("_root", "_templates")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._templates: list[tuple[Template, frozenset[str]]] = []

    def add(self, template: Template, methods: Iterable[str], value: T) -> None:
        """Register `value` for `methods` on `template`; raise TemplateError on any overlap."""
        mset = frozenset(m.upper() for m in methods)
        for existing, emethods in self._templates:
            common = mset & emethods
            if common and existing.overlaps(template):
                raise TemplateError(
                    f"{', '.join(sorted(common))} {template.text} overlaps {existing.text}"
                )
        self._templates.append((template, mset))
        node = self._root
        for is_param, text in template.segments:
            if is_param:
                if node.param is None:
                    node.param = (text, _Node())
                node = node.param[1]
            else:
                node = node.literals.setdefault(text, _Node())
        node.template = node.template or template.text
        names = tuple(text for is_param, text in template.segments if is_param)
        for m in mset:
            node.methods[m] = (value, template.text, names)

    def match(self, method: str, raw_path: str) -> Match[T] | None:
        """Route a raw (still percent-encoded) path; None when no template matches the path at all."""
        if raw_path == "/":
            parts: list[str] = []
        else:
            parts = raw_path[1:].split("/")
        node = self._root
        values: list[str] = []
        for raw in parts:
            try:
                seg = unquote(raw, errors="strict") if "%" in raw else raw
            except UnicodeDecodeError:
                return None
            # SECURITY: empty, dot and encoded-slash segments would let the upstream normalise the path to
            # a resource other than the one the policy was chosen for (path confusion); no template has them.
            if seg in ("", ".", "..") or "/" in seg or "\\" in seg:
                return None
            child = node.literals.get(seg)
            if child is None:
                if node.param is None:
                    return None
                values.append(seg)
                child = node.param[1]
            node = child
        if node.template is None:
            return None
        entry = node.methods.get(method)
        if entry is None:
            return Match(None, node.template, {}, tuple(sorted(node.methods)))
        value, template, names = entry
        return Match(value, template, dict(zip(names, values, strict=True)))
