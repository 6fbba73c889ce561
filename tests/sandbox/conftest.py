"""Sandbox fixtures: the real sandbox app on 127.0.0.1 behind a real gateway, a TPP with its own JWKS server.

The test client (`Bank`) only speaks HTTP to public endpoints: the gateway's port for the token, discovery
and DCR endpoints, the sandbox port for the developer portal. TPP keys and signatures are made here with
jwcrypto directly, independently of the sandbox's own JOSE module.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jwcrypto import jwk, jws

from gateway.config import Settings
from gateway.sandbox import build_sandbox_app
from gateway.sandbox.keyring import KeyRing
from gateway.sandbox.service import SANDBOX, Sandbox
from tests.conftest import ROOT, SHIPPED_POLICIES, RunningGateway, StartServer, make_settings

PASSTHROUGH_POLICIES = ROOT / "tests" / "data" / "passthrough_policies"
SANDBOX_ISSUER = "http://sandbox.bank.test"

REGISTER = "/open-banking/v3.1/register"
TOKEN = "/oauth2/token"
JOSE = "application/jose"
CLIENT_CERT_HEADER = "ssl-client-cert"
REDIRECT = "https://tpp.example.com/callback"
REDIRECT_2 = "https://tpp.example.com/other"

_KEY_CACHE: dict[str, jwk.JWK] = {}


@dataclass
class TppKey:
    """A TPP signing key (private), its kid and algorithm."""

    key: jwk.JWK
    kid: str
    alg: str

    def public(self) -> dict[str, Any]:
        """The public JWK with kid, use and alg."""
        return {**self.key.export_public(as_dict=True), "kid": self.kid, "use": "sig", "alg": self.alg}

    def sign(
        self,
        claims: dict[str, Any],
        *,
        typ: str | None = "JWT",
        alg: str | None = None,
        kid: str | None = None,
    ) -> str:
        """A compact JWS over `claims` (jwcrypto directly)."""
        return sign_jws(self.key, alg or self.alg, kid or self.kid, claims, typ)


def sign_jws(key: jwk.JWK, alg: str, kid: str | None, claims: dict[str, Any], typ: str | None = "JWT") -> str:
    """Sign `claims` with jwcrypto; header {alg, kid, typ}."""
    header: dict[str, Any] = {"alg": alg}
    if kid is not None:
        header["kid"] = kid
    if typ is not None:
        header["typ"] = typ
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=alg, protected=json.dumps(header))
    return token.serialize(compact=True)


def tpp_key(name: str, alg: str = "PS256") -> TppKey:
    """A cached TPP key per name (RSA 2048 for PS256, EC P-256 for ES256)."""
    cache_key = f"{name}/{alg}"
    if cache_key not in _KEY_CACHE:
        if alg == "ES256":
            _KEY_CACHE[cache_key] = jwk.JWK.generate(kty="EC", crv="P-256")
        else:
            _KEY_CACHE[cache_key] = jwk.JWK.generate(kty="RSA", size=2048)
    return TppKey(_KEY_CACHE[cache_key], f"{name}-{alg.lower()}", alg)


def with_overrides(claims: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`claims` with `overrides` applied: a value replaces, None deletes."""
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def b64url_json(part: str) -> dict[str, Any]:
    """Decode one base64url JSON part of a compact JWS."""
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, payload) of a compact JWS without verification (test inspection only)."""
    header, payload, _ = token.split(".")
    return b64url_json(header), b64url_json(payload)


def verify_with_jwks(
    token: str, jwks_doc: dict[str, Any], alg: str = "PS256"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a compact JWS against a JWKS document with jwcrypto; return (header, claims)."""
    header, _ = unverified(token)
    keyset = jwk.JWKSet.from_json(json.dumps(jwks_doc))
    key = keyset.get_key(header["kid"])
    assert key is not None, "kid not in JWKS"
    parsed = jws.JWS()
    parsed.deserialize(token)
    parsed.verify(key, alg=alg)
    return header, json.loads(parsed.payload)


class TppJwksServer:
    """The TPP's own JWKS hosting, on its own 127.0.0.1 server; counts fetches."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, int] = {}
        self.base = ""
        self.app = web.Application()
        self.app.router.add_get("/jwks/{name}", self._serve)

    async def _serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name not in self.documents:
            raise web.HTTPNotFound()
        return web.json_response(self.documents[name])

    def publish(self, name: str, *keys: TppKey) -> str:
        """Serve the public halves of `keys` at /jwks/<name>; return the URL."""
        self.documents[name] = {"keys": [k.public() for k in keys]}
        return f"{self.base}/jwks/{name}"


@dataclass
class Bank:
    """What a TPP developer can reach: the gateway (public URL) and the sandbox port (portal)."""

    http: aiohttp.ClientSession
    gateway_url: str
    sandbox_url: str
    settings: Settings
    tpp: TppJwksServer
    restart: Callable[[], Awaitable[None]]
    extra: dict[str, Any] = field(default_factory=dict)
    service: Callable[[], Sandbox] | None = None
    """The running sandbox service (its token service takes `now=`: a token issued in the past, no sleeping)."""
    gateway: RunningGateway | None = None
    """The gateway in front (its `assertion` signs the facts the sandbox is handed the key of)."""

    @property
    def token_endpoint(self) -> str:
        """The token endpoint discovery advertises."""
        return self.gateway_url + TOKEN

    async def create_app(self, name: str | None = None) -> tuple[str, str]:
        """POST /sandbox/apps on the sandbox port; returns (client_id, client_secret)."""
        async with self.http.post(
            self.sandbox_url + "/sandbox/apps", json={"name": name} if name else None
        ) as r:
            assert r.status == 201, await r.text()
            body = await r.json()
        return body["client_id"], body["client_secret"]

    async def token_request(
        self,
        data: dict[str, str] | str | bytes | None,
        *,
        auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """POST the token endpoint through the gateway; returns (status, JSON body, headers)."""
        hdrs = dict(headers or {})
        if auth is not None:
            hdrs["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        async with self.http.post(self.token_endpoint, data=data, headers=hdrs) as r:
            return r.status, await r.json(), dict(r.headers)

    async def token(self, client_id: str, secret: str, scope: str | None = None) -> str:
        """An access token by client_secret_basic."""
        data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        status, body, _ = await self.token_request(data, auth=(client_id, secret))
        assert status == 200, body
        return str(body["access_token"])

    async def app_token(self) -> str:
        """A fresh developer app and a token for it."""
        return await self.token(*await self.create_app())

    async def mint_ssa(self, **claims: Any) -> str:
        """POST /sandbox/ssa on the sandbox port."""
        async with self.http.post(self.sandbox_url + "/sandbox/ssa", json=claims) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["software_statement"])

    def registration_claims(self, ssa: str, **overrides: Any) -> dict[str, Any]:
        """A valid OBClientRegistrationRequest1 payload for `ssa`; overrides replace (None deletes)."""
        software_id = unverified(ssa)[1]["software_id"]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": software_id,
            "iat": now,
            "exp": now + 300,
            "aud": "0015800001041REAAY",
            "jti": str(uuid.uuid4()),
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["client_credentials"],
            "software_id": software_id,
            "scope": "accounts payments",
            "software_statement": ssa,
            "application_type": "web",
            "id_token_signed_response_alg": "PS256",
            "request_object_signing_alg": "PS256",
        }
        return with_overrides(claims, overrides)

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: str | bytes | None = None,
        content_type: str = JOSE,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """Call the gateway; returns (status, JSON body or None, headers)."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            hdrs["Content-Type"] = content_type
        async with self.http.request(method, self.gateway_url + path, data=body, headers=hdrs) as r:
            raw = await r.read()
            return r.status, json.loads(raw) if raw else None, dict(r.headers)

    async def register(
        self,
        token: str | None,
        request_jws: str | bytes,
        *,
        content_type: str = JOSE,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """POST a registration request through the gateway."""
        return await self.call("POST", REGISTER, token, request_jws, content_type, headers)

    async def new_client(
        self,
        tpp: TppKey | None = None,
        *,
        method: str = "client_secret_basic",
        ssa_claims: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Register a client end to end (app token, SSA, signed request); returns the 201 body."""
        tpp = tpp or tpp_key("tpp")
        jwks_uri = self.tpp.publish(tpp.kid, tpp)
        ssa = await self.mint_ssa(
            software_jwks_endpoint=jwks_uri,
            software_redirect_uris=[REDIRECT, REDIRECT_2],
            **(ssa_claims or {}),
        )
        extra = {"token_endpoint_auth_signing_alg": tpp.alg} if method == "private_key_jwt" else {}
        claims = self.registration_claims(ssa, token_endpoint_auth_method=method, **{**extra, **overrides})
        status, body, _ = await self.register(await self.app_token(), tpp.sign(claims))
        assert status == 201, body
        assert isinstance(body, dict)
        return body

    def assertion(self, tpp: TppKey, client_id: str, **overrides: Any) -> str:
        """A private_key_jwt client assertion (RFC 7523) signed by `tpp`; overrides replace (None deletes)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.token_endpoint,
            "iat": now,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
        }
        return tpp.sign(with_overrides(claims, overrides))

    async def assertion_token(
        self, tpp: TppKey, client_id: str, **overrides: Any
    ) -> tuple[int, dict[str, Any]]:
        """Ask for a token with a client assertion; returns (status, body)."""
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(tpp, client_id, **overrides),
        }
        status, body, _ = await self.token_request(data)
        return status, body


BankFactory = Callable[..., Awaitable[Bank]]


def _bound_socket(port: int) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:`port` (0: any free port), not yet listening."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@pytest.fixture
async def tpp_jwks(start_server: StartServer) -> TppJwksServer:
    """The TPP's JWKS server on 127.0.0.1."""
    server = TppJwksServer()
    started = await start_server(server.app)
    server.base = str(started.make_url("")).rstrip("/")
    return server


@pytest.fixture(scope="session")
def seeded_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sandbox keys generated once per session by the real KeyRing (RSA generation is slow)."""
    state = tmp_path_factory.mktemp("seed")
    KeyRing.load(state)
    return state


def _seeded_state_dir(state_dir: Path, seed: Path) -> Path:
    """A state directory holding copies of the seed keys (once)."""
    if not state_dir.exists():
        state_dir.mkdir(mode=0o700)
        for key in seed.glob("*.pem"):
            shutil.copy2(key, state_dir / key.name)
    return state_dir


@pytest.fixture
async def bank_factory(
    tmp_path: Path, running_gateway: Callable[..., Awaitable[RunningGateway]], tpp_jwks: TppJwksServer,
    seeded_keys: Path
) -> AsyncIterator[BankFactory]:
    """Start sandbox + gateway; each call gets its own pair.

    Without `state_dir` the state lives in tmp_path/state, seeded with the session's keys (so the sandbox
    takes its "reuse existing keys" path); with `state_dir` it generates its own keys on first start. The
    gateway signs its facts for the sandbox (`upstream.signed_facts`) unless `signed_facts=False`, and the
    sandbox is handed the gateway's key, as in one `serve` process (`hand_key=False`: it fetches it from its
    `gateway_jwks_uri`, as a sandbox run on its own does). With `shipped_policies`, `policy_dir` replaces the
    shipped directory and `gateway_trust` adds to the gateway's trust section; `audit_path`: the decision events'
    file.
    """
    sandboxes: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(state_dir: Path | None = None, *, shipped_policies: bool = False,
                    enforce_client_certificate: bool = False, trust: dict[str, Any] | None = None,
                    signed_facts: bool = True, facts_key_file: Path | None = None, profile: str = "bank",
                    hand_key: bool = True, policy_dir: Path | None = None,
                    gateway_trust: dict[str, Any] | None = None, audit_path: Path | None = None,
                    **sandbox_overrides: Any) -> Bank:
        if state_dir is None:
            state_dir = _seeded_state_dir(tmp_path / "state", seeded_keys)
        # Reserve the sandbox's port before the gateway starts (so the gateway cannot be given it), and hand
        # the bound socket to the sandbox's server: the gateway's URL must be known before the sandbox's app.
        reserved = [_bound_socket(0)]
        sandbox_port = reserved[0].getsockname()[1]
        upstream = f"http://127.0.0.1:{sandbox_port}"
        # The gateway's socket too: its public URL is the `iss` of its signed facts and the sandbox's issuer.
        public_socket = _bound_socket(0)
        public_url = f"http://127.0.0.1:{public_socket.getsockname()[1]}"
        # Generous upstream timeouts: registrations hash secrets with scrypt, and CI machines are slow.
        policy: dict[str, Any] = {"policy_dir": PASSTHROUGH_POLICIES}
        if shipped_policies:
            # The shipped policies trust the sandbox as the bank's authorization server; its issuer is fixed
            # here because the gateway (and so its URL) must exist before the sandbox's settings.
            policy = {
                "policy_dir": SHIPPED_POLICIES / "ob_standard" if profile == "ob_standard" else SHIPPED_POLICIES,
                "trust": {
                    "token_issuers": {"bank": {"issuer": SANDBOX_ISSUER, "jwks_uri": f"{upstream}/jwks",
                                               "audiences": [SANDBOX_ISSUER], "token_types": ["at+jwt"]}},
                    "directories": {"sandbox": {"issuer": "OpenBanking Ltd",
                                                "jwks_uri": f"{upstream}/directory/jwks"}},
                    "software_jwks": {"allow_http": True, "allow_loopback": True},
                    "registration_audiences": [SANDBOX_ISSUER],
                },
                "policies": {"check_modes": {"client_certificate": "audit"}},
            }
            if enforce_client_certificate:
                # As behind an mTLS ingress on this host: the test client sends the ingress's header itself.
                policy["trust"]["client_certificate"] = {"header": CLIENT_CERT_HEADER, "format": "nginx",
                                                         "trusted_proxies": ["127.0.0.1"]}
                policy["policies"] = {"check_modes": {}}
            sandbox_overrides = {"issuer": SANDBOX_ISSUER, "access_token_audience": SANDBOX_ISSUER,
                                 **sandbox_overrides}
            # `policy_dir`: the test's own copy of a shipped directory; `gateway_trust`: more of the gateway's
            # trust section (certificate_authorities, revocation).
            policy["policy_dir"] = policy_dir or policy["policy_dir"]
            policy["trust"].update(gateway_trust or {})
        upstream_section = {"url": upstream, "timeouts": {"connect": 2, "read": 20, "total": 30},
                            "signed_facts": {"enabled": signed_facts,
                                             "key_file": str(facts_key_file) if facts_key_file else None}}
        policy.setdefault("policies", {})["profile"] = profile
        gw = await running_gateway(upstream, upstream=upstream_section, server={"public_url": public_url},
                                   public_socket=public_socket, audit_path=audit_path, **policy)
        # `hand_key=False`: the sandbox fetches the key (sandbox.gateway_jwks_uri), as when run on its own.
        gateway_jwks = gw.assertion.jwks() if gw.assertion is not None and hand_key else None
        sandbox_section = {
            "listen": {"port": sandbox_port},
            "state_dir": str(state_dir),
            **sandbox_overrides,
        }
        # `trust`: the sandbox's own trust section (trust.client_certificate: where its mTLS certificates come from).
        settings = make_settings(upstream, server={"public_url": public_url}, sandbox=sandbox_section,
                                 policies={"profile": profile}, **({"trust": trust} if trust is not None else {}))
        holder: list[TestServer] = []

        async def boot() -> None:
            sock = (
                reserved.pop() if reserved else _bound_socket(sandbox_port)
            )  # a restart binds the port again
            server = TestServer(
                build_sandbox_app(settings, gateway_jwks),
                host="127.0.0.1",
                port=sandbox_port,
                socket_factory=lambda *_: sock,
            )
            await server.start_server()
            holder[:] = [server]
            sandboxes.append(server)

        async def restart() -> None:
            await holder[0].close()
            await boot()

        await boot()
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Bank(
            http=http,
            gateway_url=public_url,
            sandbox_url=upstream,
            settings=settings,
            tpp=tpp_jwks,
            restart=restart,
            service=lambda: holder[0].app[SANDBOX],
            gateway=gw,
        )

    yield start
    for http in sessions:
        await http.close()
    for server in reversed(sandboxes):
        await server.close()


@pytest.fixture
async def bank(bank_factory: BankFactory) -> Bank:
    """A sandbox behind a gateway with default settings."""
    return await bank_factory()
