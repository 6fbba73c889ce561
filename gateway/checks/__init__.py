"""Check kinds, registered by stable name from one explicit list (like Oathkeeper's handler registry)."""

from __future__ import annotations

from collections.abc import Sequence

from ..reasons import Reasons
from .base import Check, Denial, RequestView


class ParamError(ValueError):
    """A parameter that validates on its own but not in context (e.g. an issuer name not in config)."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = list(loc)
        self.message = message


def _registry() -> dict[str, type[Check]]:  # type: ignore[type-arg]
    from .bearer_token import BearerToken
    from .body_size import BodySize
    from .client_certificate import ClientCertificate
    from .client_id_header import ClientIdHeader
    from .client_ownership import ClientOwnership
    from .content_type import ContentType
    from .rate_limit import RateLimit
    from .registration_metadata import RegistrationMetadata
    from .registration_request import RegistrationRequest
    from .replay import Replay
    from .required_headers import RequiredHeaders
    from .software_statement import SoftwareStatement

    kinds: list[type[Check]] = [  # type: ignore[type-arg]
        BearerToken,
        BodySize,
        ClientCertificate,
        ClientIdHeader,
        ClientOwnership,
        ContentType,
        RateLimit,
        RegistrationMetadata,
        RegistrationRequest,
        Replay,
        RequiredHeaders,
        SoftwareStatement,
    ]
    for kind in kinds:
        table = getattr(kind, "reasons", None)
        if not (isinstance(table, type) and issubclass(table, Reasons)):
            raise TypeError(f"check {kind.name!r} declares no reason table (`reasons`, a gateway.reasons.Reasons)")
    return {k.name: k for k in kinds}


REGISTRY = _registry()
"""Every check kind by name. Adding a kind: a module in this package and one line above."""

__all__ = ["REGISTRY", "Check", "Denial", "ParamError", "RequestView"]
