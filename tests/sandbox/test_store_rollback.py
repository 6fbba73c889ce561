"""A client write is one SQLite transaction: whatever fails inside it leaves no trace and the store usable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox.store import DB_FILE, Client, SyncStore


def dcr_client(client_id: str, **fields: Any) -> Client:
    values: dict[str, Any] = {
        "client_id": client_id, "kind": "dcr", "secret_hash": "scrypt$x", "created_at": 1, "updated_at": 1,
        "name": "TPP", "software_id": "s1", "auth_method": "client_secret_basic", "jwks_uri": None,
        "registration": {"client_id": client_id, "scope": "accounts"},
    }
    values.update(fields)
    return Client(**values)


@pytest.fixture
def store(tmp_path: Path) -> SyncStore:
    return SyncStore(tmp_path / DB_FILE)


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"name": "\ud800"}, UnicodeEncodeError),  # SQLite binds text as UTF-8
        ({"jwks_uri": "https://x/\udfff"}, UnicodeEncodeError),
        ({"registration": {"n": float("nan")}}, ValueError),  # serialised before the transaction
    ],
)
def test_a_failed_insert_stores_nothing(store: SyncStore, fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        store.add_client(dcr_client("c1", **fields))
    assert store.get_client("c1") is None
    store.add_client(dcr_client("c2"))  # no transaction left open
    assert store.get_client("c2") is not None


def test_a_failed_update_changes_nothing(store: SyncStore) -> None:
    store.add_client(dcr_client("c1"))
    with pytest.raises(UnicodeEncodeError):
        store.update_registration("c1", registration={"scope": "payments"}, auth_method="private_key_jwt",
                                  jwks_uri="https://x/\ud800", now=2)
    kept = store.get_client("c1")
    assert kept is not None and kept.registration == {"client_id": "c1", "scope": "accounts"}
    assert (kept.auth_method, kept.updated_at) == ("client_secret_basic", 1)


def test_a_duplicate_client_id_rolls_back_and_keeps_the_first(store: SyncStore) -> None:
    store.add_client(dcr_client("c1"))
    with pytest.raises(Exception, match="UNIQUE"):
        store.add_client(dcr_client("c1", name="other"))
    kept = store.get_client("c1")
    assert kept is not None and kept.name == "TPP"
