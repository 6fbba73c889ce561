"""Durability and safety of sandbox state: restarts, key reuse, hashed secrets, permissions, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from gateway.sandbox.store import DB_FILE, SCHEMA_VERSION, Client, StoreError, SyncStore, TokenState
from tests.sandbox.conftest import REDIRECT, REGISTER, Bank, tpp_key


async def test_restart_keeps_registrations_keys_and_revocations(bank: Bank) -> None:
    """After a restart on the same state_dir: registrations, keys (old tokens valid), revocations, deletes."""
    kept = await bank.new_client()
    deleted = await bank.new_client()
    kept_token = await bank.token(kept["client_id"], kept["client_secret"])
    deleted_token = await bank.token(deleted["client_id"], deleted["client_secret"])
    revoked_token = await bank.app_token()
    status, _, _ = await bank.call("GET", f"{REGISTER}/00000000-0000-4000-8000-000000000000", revoked_token)
    assert status == 401
    status, _, _ = await bank.call("DELETE", f"{REGISTER}/{deleted['client_id']}", deleted_token)
    assert status == 204
    async with bank.http.get(bank.gateway_url + "/jwks") as r:
        jwks_before = await r.json()
    async with bank.http.get(bank.sandbox_url + "/directory/jwks") as r:
        directory_before = await r.json()

    await bank.restart()

    status, got, _ = await bank.call("GET", f"{REGISTER}/{kept['client_id']}", kept_token)
    assert status == 200
    assert got == {k: v for k, v in kept.items() if k != "client_secret"}
    async with bank.http.get(bank.gateway_url + "/jwks") as r:
        assert await r.json() == jwks_before
    async with bank.http.get(bank.sandbox_url + "/directory/jwks") as r:
        assert await r.json() == directory_before
    for token in (revoked_token, deleted_token):
        status, _, _ = await bank.call("GET", f"{REGISTER}/{kept['client_id']}", token)
        assert status == 401
    await bank.token(kept["client_id"], kept["client_secret"])


async def test_second_app_on_same_state_dir_shares_state(bank_factory, tmp_path: Path) -> None:
    """A new sandbox app on the same state_dir sees the registration and reuses the keys."""
    first = await bank_factory(tmp_path / "shared")
    created = await first.new_client()
    second = await bank_factory(tmp_path / "shared")
    token = await second.token(created["client_id"], created["client_secret"])
    status, got, _ = await second.call("GET", f"{REGISTER}/{created['client_id']}", token)
    assert status == 200 and got["client_id"] == created["client_id"]
    async with (
        first.http.get(first.sandbox_url + "/directory/jwks") as a,
        second.http.get(second.sandbox_url + "/directory/jwks") as b,
    ):
        assert await a.json() == await b.json()


async def test_secrets_are_stored_as_salted_hashes(bank: Bank, tmp_path: Path) -> None:
    """No client secret appears in the database files; each is a salted scrypt hash."""
    app_id, app_secret = await bank.create_app()
    created = await bank.new_client()
    secrets = [app_secret, created["client_secret"]]
    state = tmp_path / "state"
    for path in state.glob(DB_FILE + "*"):
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, path
    db = sqlite3.connect(state / DB_FILE)
    rows = dict(db.execute("SELECT client_id, secret_hash FROM clients").fetchall())
    db.close()
    assert rows[app_id].startswith("scrypt$") and rows[created["client_id"]].startswith("scrypt$")
    salts = {h.split("$")[4] for h in rows.values()}
    assert len(salts) == len(rows)


async def test_state_files_are_private(bank: Bank, tmp_path: Path) -> None:
    """The state directory is 0700; keys and database files are 0600."""
    await bank.create_app()
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = list(state.iterdir())
    assert {p.name for p in files} >= {"token-signing-key.pem", "directory-signing-key.pem", DB_FILE}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_keys_generated_once_and_reused(bank_factory, tmp_path: Path) -> None:
    """Keys are generated on first start and the same files are used afterwards."""
    state = tmp_path / "keys"
    bank = await bank_factory(state)
    await bank.restart()
    before = {p.name: p.read_bytes() for p in state.glob("*.pem")}
    await bank_factory(state)
    assert {p.name: p.read_bytes() for p in state.glob("*.pem")} == before
    assert len(before) == 2


async def test_loose_key_permissions_are_tightened(bank_factory, tmp_path: Path) -> None:
    """A key file made group/world-readable is set back to 0600 on start."""
    state = tmp_path / "loose"
    bank = await bank_factory(state)
    key = state / "token-signing-key.pem"
    key.chmod(0o644)
    await bank.restart()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_concurrent_registrations(bank: Bank) -> None:
    """Twenty registrations at once all succeed with distinct client_ids that all work."""
    tpp = tpp_key("concurrent")
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    token = await bank.app_token()
    results = await asyncio.gather(
        *(bank.register(token, tpp.sign(bank.registration_claims(ssa))) for _ in range(20))
    )
    assert [status for status, _, _ in results] == [201] * 20
    ids = {body["client_id"] for _, body, _ in results}
    assert len(ids) == 20
    _, body, _ = results[7]
    await bank.token(body["client_id"], body["client_secret"])


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A database written by a newer sandbox is refused rather than misread."""
    path = tmp_path / DB_FILE
    SyncStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SyncStore(path)


def test_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    """The store runs in WAL mode; a second connection sees committed writes at once."""
    store = SyncStore(tmp_path / DB_FILE)
    store.add_client(Client(client_id="c1", kind="app", secret_hash="scrypt$x", created_at=1, updated_at=1))
    other = sqlite3.connect(tmp_path / DB_FILE)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT client_id FROM clients").fetchall() == [("c1",)]
    other.close()
    store.close()


def test_assertion_jti_single_use_and_pruned(tmp_path: Path) -> None:
    """A jti is accepted once per client; expired entries are pruned."""
    store = SyncStore(tmp_path / DB_FILE)
    assert store.use_assertion("c", "j1", expires_at=100, now=50)
    assert not store.use_assertion("c", "j1", expires_at=100, now=60)
    assert store.use_assertion("other", "j1", expires_at=100, now=60)
    assert store.use_assertion("c", "j2", expires_at=300, now=200)  # prunes j1 (expired at 100)
    assert store.use_assertion("c", "j1", expires_at=400, now=200)
    store.close()


def test_token_state_watermark_revocation_and_client(tmp_path: Path) -> None:
    """Tokens are valid until revoked by jti, or issued at/before the client's deletion watermark."""
    store = SyncStore(tmp_path / DB_FILE)
    store.add_client(Client(client_id="c", kind="dcr", secret_hash="scrypt$x", created_at=1, updated_at=1))
    assert store.token_state("j1", "c", iat=100) is TokenState.VALID
    store.revoke_token("j1", "c", expires_at=10**10, now=100)
    assert store.token_state("j1", "c", iat=100) is TokenState.REVOKED
    assert store.token_state("j2", "c", iat=100) is TokenState.VALID
    assert store.delete_registration("c", now=200)
    assert not store.delete_registration("c", now=201)
    assert store.token_state("j2", "c", iat=200) is TokenState.INVALIDATED
    assert store.token_state("j3", "c", iat=199) is TokenState.INVALIDATED
    assert store.token_state("j4", "c", iat=201) is TokenState.CLIENT_GONE
    assert store.token_state("j5", "unknown", iat=1) is TokenState.CLIENT_GONE
    store.close()
