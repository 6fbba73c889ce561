"""Strict schema building blocks shared by config and policies, and error messages that name the key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from .yamlsource import YamlDocument


class StrictModel(BaseModel):
    """Immutable model: unknown keys are errors; strings and booleans are never coerced."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, strict=False, coerce_numbers_to_str=False
    )


def _number(v: Any, *, minimum: float | None, exclusive: bool, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PydanticCustomError("expected", f"expected {what}")
    if minimum is not None and (v <= minimum if exclusive else v < minimum):
        raise PydanticCustomError("expected", f"expected {what}")
    return float(v)


def _integer(v: Any, *, minimum: int, maximum: int | None, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PydanticCustomError("expected", f"expected {what}")
    if v < minimum or (maximum is not None and v > maximum):
        raise PydanticCustomError("expected", f"expected {what}")
    return v


def _validator(fn: Callable[[Any], Any], schema: dict[str, Any]) -> tuple[PlainValidator, WithJsonSchema]:
    return PlainValidator(fn), WithJsonSchema(schema)


PositiveSeconds = Annotated[
    float,
    *_validator(
        lambda v: _number(v, minimum=0, exclusive=True, what="a positive number"),
        {"type": "number", "exclusiveMinimum": 0},
    ),
]
"""A duration in seconds, > 0."""

NonNegativeSeconds = Annotated[
    float,
    *_validator(
        lambda v: _number(v, minimum=0, exclusive=False, what="a number >= 0"),
        {"type": "number", "minimum": 0},
    ),
]
"""A duration in seconds, >= 0."""

PositiveInt = Annotated[
    int,
    *_validator(
        lambda v: _integer(v, minimum=1, maximum=None, what="a positive integer"),
        {"type": "integer", "minimum": 1},
    ),
]

Port = Annotated[
    int,
    *_validator(
        lambda v: _integer(v, minimum=0, maximum=65535, what="a port number from 0 to 65535"),
        {"type": "integer", "minimum": 0, "maximum": 65535},
    ),
]


def _describe(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = ("expected " if prefix.startswith("Input") else "") + msg[len(prefix) :]
    if kind in ("model_type", "dict_type"):
        msg = "expected a mapping"
    return f"{msg}, got {_describe(err['input'])}" if "input" in err and kind != "value_error" else msg


def iter_errors(
    exc: ValidationError, doc: YamlDocument | None, *, base_loc: Sequence[str | int] = ()
) -> Iterator[tuple[str, int | None, str]]:
    """Yield (key path, line, message) for each validation error, in document order."""
    for _, dotted, line, message in located_errors(exc, doc, base_loc=base_loc):
        yield dotted, line, message


def located_errors(
    exc: ValidationError, doc: YamlDocument | None, *, base_loc: Sequence[str | int] = ()
) -> Iterator[tuple[list[str | int], str, int | None, str]]:
    """Yield (location, key path, line, message) for each validation error, in document order."""
    for err in exc.errors():
        loc = [*base_loc, *[p for p in err["loc"] if not _is_union_tag(p)]]
        yield loc, key_path(loc), doc.line_of(loc) if doc is not None else None, _message(err)


def key_path(loc: Sequence[str | int]) -> str:
    """Render a location as `policies[0].checks[1].bearer_token`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the tag of a discriminated union or a function name into the location
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def format_errors(exc: ValidationError, doc: YamlDocument | None, *, source: str,
                  base_loc: Sequence[str | int] = ()) -> list[str]:
    """Human messages like `config.yaml: upstream.url: expected a string, got 3 (line 4)`."""
    out = []
    for dotted, line, msg in iter_errors(exc, doc, base_loc=base_loc):
        suffix = f" (line {line})" if line is not None else ""
        out.append(f"{source}: {dotted}: {msg}{suffix}")
    return out
