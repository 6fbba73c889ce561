"""Client identifiers and secrets: generation, salted scrypt hashes, constant-time verification."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import string
import uuid
from typing import Final

_BASE62: Final = string.digits + string.ascii_letters

# scrypt cost (RFC 7914): n=2^14, r=8, p=1 uses 16 MiB and ~50 ms; parameters are stored with each hash.
_N: Final = 1 << 14
_R: Final = 8
_P: Final = 1
_DKLEN: Final = 32


def base62(length: int) -> str:
    """A random Base62 string (the OB Directory's id alphabet)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def new_client_id() -> str:
    """A client_id: a UUID, 36 characters (OB: String(36))."""
    return str(uuid.uuid4())


def new_client_secret() -> str:
    """A client secret with 216 bits of entropy, 36 characters (OB: String(36))."""
    return secrets.token_urlsafe(27)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=64 << 20)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str) -> str:
    """`scrypt$n$r$p$salt$hash`, with a fresh 16-byte salt (CPU-heavy: call off the event loop)."""
    salt = secrets.token_bytes(16)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_scrypt(secret, salt, _N, _R, _P))}"


@functools.cache
def _dummy_hash() -> str:
    return hash_secret(secrets.token_urlsafe(27))


def verify_secret(secret: str, stored: str | None) -> bool:
    """True if `secret` matches the stored hash; unknown clients cost the same time (CPU-heavy)."""
    # SECURITY: hash even when there is nothing to compare, so timing does not reveal which client ids exist.
    encoded = stored or _dummy_hash()
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
        if scheme != "scrypt":
            return False
        actual = _scrypt(secret, salt, int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected) and stored is not None
