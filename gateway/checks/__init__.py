"""Check kinds, registered by stable name from one explicit list (like Oathkeeper's handler registry)."""

from __future__ import annotations

from ..reasons import Reasons
from .base import Check, Denial, RequestView
from .bearer_token import BearerToken
from .body_size import BodySize
from .client_certificate import ClientCertificate
from .client_id_header import ClientIdHeader
from .client_ownership import ClientOwnership
from .content_type import ContentType
from .params import ParamError
from .rate_limit import RateLimit
from .registration_metadata import RegistrationMetadata
from .registration_request import RegistrationRequest
from .replay import Replay
from .required_headers import RequiredHeaders
from .software_statement import SoftwareStatement

_KINDS: list[type[Check]] = [  # type: ignore[type-arg]
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

for _kind in _KINDS:
    if not (isinstance(getattr(_kind, "reasons", None), type) and issubclass(_kind.reasons, Reasons)):
        raise TypeError(f"check {_kind.name!r} declares no reason table (`reasons`, a gateway.reasons.Reasons)")

REGISTRY: dict[str, type[Check]] = {k.name: k for k in _KINDS}  # type: ignore[type-arg]
"""Every check kind by name. Adding a kind: a module in this package, its import and one line above."""

__all__ = ["REGISTRY", "Check", "Denial", "ParamError", "RequestView"]
