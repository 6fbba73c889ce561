"""Key sessions: in memory, with a lifetime and a bound on their number."""

from __future__ import annotations

from gateway.sandbox.crypto import generate_key
from gateway.sandbox.playground.sessions import SessionStore

KEY = generate_key("ES256")


def test_a_session_lives_for_its_ttl_then_is_gone() -> None:
    """get() finds a session until its expiry, and nothing after it."""
    store = SessionStore(ttl=60)
    session_id, session = store.add(KEY, "http://127.0.0.1/jwks", now=1000)
    assert store.get(session_id, now=1059) is session
    assert store.get(session_id, now=1060) is None
    assert len(store) == 0


def test_the_oldest_session_goes_when_there_are_too_many() -> None:
    """Past max_sessions, adding one drops the oldest; the others stay."""
    store = SessionStore(ttl=60, max_sessions=2)
    first, _ = store.add(KEY, "u1", now=1000)
    second, _ = store.add(KEY, "u2", now=1001)
    third, _ = store.add(KEY, "u3", now=1002)
    assert store.get(first, now=1003) is None
    assert store.get(second, now=1003) is not None and store.get(third, now=1003) is not None


def test_session_ids_are_unguessable() -> None:
    """Ids are 128-bit random URL-safe strings (the capability to have the key sign), never reused."""
    store = SessionStore()
    ids = {store.add(KEY, "u")[0] for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) >= 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
