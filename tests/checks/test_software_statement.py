"""`software_statement`: the directory's key set is our trust anchor; when it cannot be fetched the check fails
closed (503)."""

from __future__ import annotations

from tests.checks.world import DIRECTORY_ISSUER, World
from tests.conftest import free_port


async def test_directory_keys_unavailable_is_503_and_never_accepts(dcr_world):
    """Our trust anchor is down: 503 temporarily_unavailable with Retry-After; nothing reaches the backend."""
    dead = f"http://127.0.0.1:{free_port()}/jwks"
    w: World = await dcr_world(trust={"directories": {"ob": {"issuer": DIRECTORY_ISSUER, "jwks_uri": dead}}})
    resp = await w.post(w.request())
    assert resp.status == 503
    assert (await resp.json())["error"] == "temporarily_unavailable" and resp.headers["Retry-After"]
    assert w.denials("directory_jwks_unavailable") == 1 and w.registrations() == 0
