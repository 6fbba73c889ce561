"""The sandbox's durable state in SQLite: clients, token watermarks, revocations, used assertions, TPP JWKS.

WAL with synchronous=FULL: a write is on disk when its call returns, so a restart or a kill -9 loses
nothing that was acknowledged. `SyncStore` is the blocking implementation (one connection, one thread);
`Store` is its asyncio face, running every call on one dedicated thread so the event loop never blocks
and writes are serialised.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeVar

DB_FILE: Final = "sandbox.db"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS clients (
    client_id    TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('app', 'dcr')),
    secret_hash  TEXT NOT NULL,
    name         TEXT,
    software_id  TEXT,
    auth_method  TEXT,
    jwks_uri     TEXT,
    registration TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS clients_by_software_id ON clients (software_id);
CREATE TABLE IF NOT EXISTS token_watermarks (
    client_id  TEXT PRIMARY KEY,
    not_before INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS used_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE TABLE IF NOT EXISTS tpp_jwks (
    jwks_id    TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


class StoreError(Exception):
    """The store cannot be opened or used (wrong schema, unreadable file)."""


class TokenState(enum.Enum):
    """Whether a signature-valid access token is still honoured."""

    VALID = "valid"
    REVOKED = "revoked"
    CLIENT_GONE = "client_gone"
    INVALIDATED = "invalidated"  # issued before the client's watermark (client deleted)


@dataclass(frozen=True, slots=True)
class Client:
    """A client: a developer-portal app or a DCR registration (its metadata in `registration`)."""

    client_id: str
    kind: Literal["app", "dcr"]
    secret_hash: str
    created_at: int
    updated_at: int
    name: str | None = None
    software_id: str | None = None
    auth_method: str | None = None
    jwks_uri: str | None = None
    registration: dict[str, Any] | None = None


def _client(row: sqlite3.Row) -> Client:
    reg = row["registration"]
    return Client(
        client_id=row["client_id"],
        kind=row["kind"],
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        name=row["name"],
        software_id=row["software_id"],
        auth_method=row["auth_method"],
        jwks_uri=row["jwks_uri"],
        registration=json.loads(reg) if reg is not None else None,
    )


def _registration_text(registration: dict[str, Any] | None) -> str | None:
    """The stored form of a registration, made before its transaction begins (ASCII: any str is storable)."""
    return json.dumps(registration, allow_nan=False) if registration is not None else None


class SyncStore:
    """Blocking store on one SQLite connection; use it from a single thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # SECURITY: the database holds secret hashes; create it 0600 (SQLite gives WAL/SHM the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot enable WAL journal (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{path}: schema version {version} is newer than this sandbox ({SCHEMA_VERSION})"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of failing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self._db.close()

    # clients -------------------------------------------------------------------------------------

    def add_client(self, client: Client) -> None:
        """Insert a new client (one transaction: on any error nothing is stored)."""
        registration = _registration_text(client.registration)
        with self._write() as db:
            db.execute(
                "INSERT INTO clients (client_id, kind, secret_hash, name, software_id, auth_method, jwks_uri,"
                " registration, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    client.client_id,
                    client.kind,
                    client.secret_hash,
                    client.name,
                    client.software_id,
                    client.auth_method,
                    client.jwks_uri,
                    registration,
                    client.created_at,
                    client.updated_at,
                ),
            )

    def get_client(self, client_id: str) -> Client | None:
        """The client with this id, or None."""
        row = self._db.execute("SELECT * FROM clients WHERE client_id = ?", (client_id,)).fetchone()
        return _client(row) if row is not None else None

    def clients_of_software(self, software_id: str) -> list[str]:
        """Client ids registered under one software_id (several are allowed)."""
        rows = self._db.execute(
            "SELECT client_id FROM clients WHERE software_id = ? ORDER BY created_at", (software_id,)
        ).fetchall()
        return [r["client_id"] for r in rows]

    def update_registration(
        self,
        client_id: str,
        *,
        registration: dict[str, Any],
        auth_method: str,
        jwks_uri: str | None,
        now: int,
    ) -> bool:
        """Replace a DCR client's metadata; False if there is no such registration."""
        text = _registration_text(registration)
        with self._write() as db:
            cur = db.execute(
                "UPDATE clients SET registration = ?, auth_method = ?, jwks_uri = ?, updated_at = ?"
                " WHERE client_id = ? AND kind = 'dcr'",
                (text, auth_method, jwks_uri, now, client_id),
            )
            return cur.rowcount == 1

    def delete_registration(self, client_id: str, now: int) -> bool:
        """Delete a DCR client and invalidate every token issued to it up to `now`; False if absent."""
        with self._write() as db:
            cur = db.execute("DELETE FROM clients WHERE client_id = ? AND kind = 'dcr'", (client_id,))
            if cur.rowcount != 1:
                return False
            db.execute(
                "INSERT INTO token_watermarks (client_id, not_before) VALUES (?, ?)"
                " ON CONFLICT (client_id) DO UPDATE SET not_before = MAX(not_before, excluded.not_before)",
                (client_id, now),
            )
            return True

    # tokens --------------------------------------------------------------------------------------

    def token_state(self, jti: str, client_id: str, iat: int) -> TokenState:
        """Revocation, watermark and client existence for a signature-valid token."""
        if self._db.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)).fetchone():
            return TokenState.REVOKED
        row = self._db.execute(
            "SELECT not_before FROM token_watermarks WHERE client_id = ?", (client_id,)
        ).fetchone()
        if row is not None and iat <= row["not_before"]:
            return TokenState.INVALIDATED
        if not self._db.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone():
            return TokenState.CLIENT_GONE
        return TokenState.VALID

    def revoke_token(self, jti: str, client_id: str, expires_at: int, now: int) -> None:
        """Revoke one token by jti (kept until it would have expired anyway)."""
        with self._write() as db:
            db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, client_id, expires_at) VALUES (?, ?, ?)",
                (jti, client_id, expires_at),
            )

    def use_assertion(self, client_id: str, jti: str, expires_at: int, now: int) -> bool:
        """Record a client assertion's jti; False if it was already used (RFC 7523 §3 item 7)."""
        with self._write() as db:
            db.execute("DELETE FROM used_assertions WHERE expires_at < ?", (now,))
            cur = db.execute(
                "INSERT OR IGNORE INTO used_assertions (client_id, jti, expires_at) VALUES (?, ?, ?)",
                (client_id, jti, expires_at),
            )
            return cur.rowcount == 1

    # hosted TPP key sets -------------------------------------------------------------------------

    def put_tpp_jwks(self, jwks_id: str, document: dict[str, Any], now: int) -> None:
        """Store a public TPP JWKS under a new id."""
        with self._write() as db:
            db.execute(
                "INSERT INTO tpp_jwks (jwks_id, document, created_at) VALUES (?, ?, ?)",
                (jwks_id, json.dumps(document), now),
            )

    def get_tpp_jwks(self, jwks_id: str) -> dict[str, Any] | None:
        """A hosted TPP JWKS, or None."""
        row = self._db.execute("SELECT document FROM tpp_jwks WHERE jwks_id = ?", (jwks_id,)).fetchone()
        if row is None:
            return None
        doc: dict[str, Any] = json.loads(row["document"])
        return doc


P = ParamSpec("P")
T = TypeVar("T")


class Store:
    """The asyncio face of `SyncStore`: every call runs on one dedicated thread, in order."""

    def __init__(self, executor: ThreadPoolExecutor, db: SyncStore) -> None:
        self._executor = executor
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) the store at `path`."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-store")
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, SyncStore, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, db)

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        """Close the connection and stop the thread."""
        await self._call(self._db.close)
        self._executor.shutdown(wait=False)

    async def add_client(self, client: Client) -> None:
        """See `SyncStore.add_client`."""
        await self._call(self._db.add_client, client)

    async def get_client(self, client_id: str) -> Client | None:
        """See `SyncStore.get_client`."""
        return await self._call(self._db.get_client, client_id)

    async def update_registration(
        self,
        client_id: str,
        *,
        registration: dict[str, Any],
        auth_method: str,
        jwks_uri: str | None,
        now: int,
    ) -> bool:
        """See `SyncStore.update_registration`."""
        return await self._call(
            self._db.update_registration,
            client_id,
            registration=registration,
            auth_method=auth_method,
            jwks_uri=jwks_uri,
            now=now,
        )

    async def delete_registration(self, client_id: str, now: int) -> bool:
        """See `SyncStore.delete_registration`."""
        return await self._call(self._db.delete_registration, client_id, now)

    async def token_state(self, jti: str, client_id: str, iat: int) -> TokenState:
        """See `SyncStore.token_state`."""
        return await self._call(self._db.token_state, jti, client_id, iat)

    async def revoke_token(self, jti: str, client_id: str, expires_at: int, now: int) -> None:
        """See `SyncStore.revoke_token`."""
        await self._call(self._db.revoke_token, jti, client_id, expires_at, now)

    async def use_assertion(self, client_id: str, jti: str, expires_at: int, now: int) -> bool:
        """See `SyncStore.use_assertion`."""
        return await self._call(self._db.use_assertion, client_id, jti, expires_at, now)

    async def put_tpp_jwks(self, jwks_id: str, document: dict[str, Any], now: int) -> None:
        """See `SyncStore.put_tpp_jwks`."""
        await self._call(self._db.put_tpp_jwks, jwks_id, document, now)

    async def get_tpp_jwks(self, jwks_id: str) -> dict[str, Any] | None:
        """See `SyncStore.get_tpp_jwks`."""
        return await self._call(self._db.get_tpp_jwks, jwks_id)
