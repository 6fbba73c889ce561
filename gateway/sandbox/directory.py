"""The sandbox directory: mints Software Statement Assertions (OB Directory profile, digest §6).

It signs what it is given, filling sensible defaults for anything missing; judging an SSA (trusted issuer,
org_status, roles, age) is the gateway's job. Header `typ: JWT`, `alg: PS256`, `kid`; claims `iss` (the
directory's name, never taken from the input), `iat`, `jti`, no `exp` unless given.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from .credentials import base62
from .crypto import SigningKey, sign

DEFAULT_ROLES: Final = ("AISP", "PISP", "CBPII")
_PLACEHOLDER_HOST: Final = "keystore.sandbox.invalid"  # RFC 6761 §6.4: never resolves


DEFAULT_ORG_NAME: Final = "Sandbox TPP Ltd"


def new_software_id() -> str:
    """A random software_id: Base62, 22 characters (as the OB Directory's)."""
    return base62(22)


def new_org_id() -> str:
    """A random org_id: Base62, 18 characters (as the OB Directory's)."""
    return base62(18)


def ssa_claims(given: Mapping[str, Any], *, issuer: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a new SSA: defaults, overridden by `given`, with `iss` set to the directory's name."""
    software_id = given.get("software_id") or new_software_id()
    org_id = given.get("org_id") or new_org_id()
    roles = given["software_roles"] if "software_roles" in given else list(DEFAULT_ROLES)
    keystore = f"https://{_PLACEHOLDER_HOST}/{org_id}"
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": int(now if now is not None else time.time()),
        "jti": str(uuid.uuid4()),
        "software_environment": "sandbox",
        "software_mode": "Test",
        "software_id": software_id,
        "software_client_id": software_id,
        "software_client_name": "Sandbox TPP app",
        "software_client_description": "A TPP application registered in the dcr-gateway sandbox",
        "software_version": "1.0",
        "software_client_uri": "https://tpp.example.com",
        "software_redirect_uris": ["https://tpp.example.com/callback"],
        "software_roles": roles,
        "organisation_competent_authority_claims": {
            "authority_id": "FCAGBR",
            "registration_id": "123456",
            "status": "Active",
            "authorisations": [{"member_state": "GB", "roles": roles}],
        },
        "software_logo_uri": "https://tpp.example.com/logo.png",
        "org_status": "Active",
        "org_id": org_id,
        "org_name": DEFAULT_ORG_NAME,
        "org_contacts": [
            {
                "name": "Developer",
                "email": "developer@tpp.example.com",
                "phone": "+440000000000",
                "type": "Technical",
            }
        ],
        "org_jwks_endpoint": f"{keystore}/{org_id}.jwks",
        "org_jwks_revoked_endpoint": f"{keystore}/revoked/{org_id}.jwks",
        "software_jwks_endpoint": f"{keystore}/{software_id}.jwks",
        "software_jwks_revoked_endpoint": f"{keystore}/revoked/{software_id}.jwks",
        "software_policy_uri": "https://tpp.example.com/policy",
        "software_tos_uri": "https://tpp.example.com/tos",
    }
    claims.update({k: v for k, v in given.items() if k != "iss"})
    claims["software_id"] = software_id  # an empty or null software_id/org_id gets a generated one
    claims["org_id"] = org_id
    return claims


def mint_ssa(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Sign SSA claims with the directory key (header typ JWT, alg PS256, kid)."""
    return sign(key, claims, typ="JWT")
