"""The sandbox's private keys: generated on first start into the state directory (0600), reused afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .crypto import SigningKey, generate_key, load_private_pem

TOKEN_KEY_FILE: Final = "token-signing-key.pem"  # noqa: S105 (a file name)
DIRECTORY_KEY_FILE: Final = "directory-signing-key.pem"


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory (0700) if needed and return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private_file(path: Path, data: bytes) -> bool:
    """Write `data` to `path` (0600, atomically, never replacing an existing file); True if written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # SECURITY: created 0600 from the start (O_EXCL), never world-readable even for an instant.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key first; theirs wins
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def load_or_create_private_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The private file at `path` (0600), written from `make()` the first time (a racing writer's file wins)."""
    if not path.exists():
        write_private_file(path, make())
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # SECURITY: a private key readable by others is tightened on load
    return path.read_bytes()


def load_or_create_key(path: Path, alg: str = "PS256") -> SigningKey:
    """The key stored at `path`, generating and storing a new one the first time."""
    return load_private_pem(load_or_create_private_file(path, lambda: generate_key(alg).to_pem()))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The token-signing key (access tokens) and the directory key (SSAs)."""

    token: SigningKey
    directory: SigningKey

    @classmethod
    def load(cls, state_dir: Path) -> KeyRing:
        """Load (or create on first use) both keys from the state directory."""
        ensure_state_dir(state_dir)
        return cls(
            token=load_or_create_key(state_dir / TOKEN_KEY_FILE),
            directory=load_or_create_key(state_dir / DIRECTORY_KEY_FILE),
        )
