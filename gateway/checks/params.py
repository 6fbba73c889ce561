"""What a check's constructor raises when its parameters do not fit the configuration."""

from __future__ import annotations

from collections.abc import Sequence


class ParamError(ValueError):
    """A parameter that validates on its own but not in context (e.g. an issuer name not in config)."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = list(loc)
        self.message = message
