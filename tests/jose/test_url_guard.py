"""The SSRF guard: address classes, URL syntax, refusal before any connection (injected resolvers only)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.jose import JoseError, JwksCache, JwksCacheSettings, UrlGuard, UrlPolicy, address_category

from ..conftest import StartServer
from .conftest import TestKeys

CATEGORIES = [
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "link_local"),
    ("fe80::1", "link_local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link_local"),
    ("64:ff9b::a00:1", "private"),
    ("2002:a00:1::1", "private"),
    ("2001::f5ff:fffe", "private"),  # Teredo, client 10.0.0.1 (bits inverted)
    ("::10.0.0.1", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("8.8.8.8", "global"),
    ("2001:4860:4860::8888", "global"),
]


@pytest.mark.parametrize(("address", "category"), CATEGORIES, ids=[a for a, _ in CATEGORIES])
def test_address_categories(address: str, category: str) -> None:
    """Each address lands in the class that decides whether it may be fetched."""
    assert address_category(ipaddress.ip_address(address)) == category


OB_HOSTS = UrlPolicy.build(allowed_hosts=["*.openbanking.org.uk"])


@pytest.mark.parametrize(
    ("url", "policy", "ok"),
    [
        ("https://jwks.example/keys", UrlPolicy(), True),
        ("http://jwks.example/keys", UrlPolicy(), False),
        ("http://jwks.example/keys", UrlPolicy(allow_http=True), True),
        ("ftp://jwks.example/keys", UrlPolicy(allow_http=True), False),
        ("file:///etc/passwd", UrlPolicy(), False),
        ("https://user:pw@jwks.example/keys", UrlPolicy(), False),
        ("https:///keys", UrlPolicy(), False),
        ("keys.json", UrlPolicy(), False),
        ("https://keysets.openbanking.org.uk/x", OB_HOSTS, True),
        ("https://openbanking.org.uk/x", OB_HOSTS, False),
        ("https://evilopenbanking.org.uk/x", OB_HOSTS, False),
        ("https://KEYS.Example./x", UrlPolicy.build(allowed_hosts=["keys.example"]), True),
        ("https://keys.example.evil/x", UrlPolicy.build(allowed_hosts=["keys.example"]), False),
        ("https://keys.example/x", UrlPolicy(allowed_hosts=frozenset({" KEYS.Example. "})), True),
    ],
    ids=[
        "https", "http_default_refused", "http_allowed", "ftp", "file", "userinfo", "no_host", "relative",
        "wildcard_subdomain", "wildcard_not_apex", "wildcard_not_suffix_trick", "exact_case_trailing_dot",
        "exact_not_prefix", "direct_constructor_normalises",
    ],
)
def test_url_syntax(url: str, policy: UrlPolicy, ok: bool) -> None:
    """Scheme, credentials and the host allow-list are checked from the URL text alone."""
    if ok:
        policy.check_syntax(url)
        return
    with pytest.raises(JoseError) as info:
        policy.check_syntax(url)
    assert info.value.reason == "jwks_url_refused"


@dataclass
class FakeResolver:
    """Maps host names to answers without DNS; records every lookup."""

    answers: dict[str, list[str]]
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise OSError(f"NXDOMAIN {host}")
        return self.answers[host]


REFUSED = [
    ("private", ["10.0.0.1"]),
    ("metadata", ["169.254.169.254"]),
    ("mapped_private", ["::ffff:10.0.0.1"]),
    ("mapped_metadata", ["::ffff:a9fe:a9fe"]),
    ("ula", ["fc00::5"]),
    ("loopback", ["127.0.0.1"]),
    ("v6_loopback", ["::1"]),
    ("unspecified", ["0.0.0.0"]),
    ("public_and_private_mix", ["93.184.216.34", "10.0.0.1"]),
    ("nothing", []),
    ("garbage", ["not-an-ip"]),
]


@pytest.mark.parametrize("answer", [a for _, a in REFUSED], ids=[n for n, _ in REFUSED])
async def test_guard_refuses_internal_answers(answer: list[str]) -> None:
    """A host resolving to ANY internal address (or nothing usable) is refused."""
    guard = UrlGuard(UrlPolicy(), FakeResolver({"jwks.example": answer}))
    with pytest.raises(JoseError) as info:
        await guard.check("https://jwks.example/keys")
    assert info.value.reason == "jwks_url_refused"
    assert "10.0.0.1" not in info.value.description


async def test_guard_accepts_public_and_pins_addresses() -> None:
    """Public answers pass and are returned for the connection to use."""
    resolver = FakeResolver({"jwks.example": ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]})
    vetted = await UrlGuard(UrlPolicy(), resolver).check("https://jwks.example:8443/keys")
    assert vetted.addresses == ("93.184.216.34", "2606:2800:220:1::1")
    assert (vetted.host, vetted.port) == ("jwks.example", 8443)
    assert resolver.calls == [("jwks.example", 8443)]


async def test_guard_unresolvable_host() -> None:
    """A resolver error refuses the URL."""
    with pytest.raises(JoseError) as info:
        await UrlGuard(UrlPolicy(), FakeResolver({})).check("https://nowhere.example/")
    assert info.value.reason == "jwks_url_refused"


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/jwks", "https://169.254.169.254/latest/meta-data", "https://[::ffff:a00:1]/x",
            "https://[::1]/x", "https://0.0.0.0/"],
)
async def test_ip_literal_urls_refused_without_resolving(url: str) -> None:
    """IP-literal hosts are vetted directly; the resolver is not even asked."""
    resolver = FakeResolver({})
    with pytest.raises(JoseError) as info:
        await UrlGuard(UrlPolicy(), resolver).check(url)
    assert info.value.reason == "jwks_url_refused"
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("policy", "address", "ok"),
    [
        (UrlPolicy(allow_private=True), "10.0.0.1", True),
        (UrlPolicy(allow_private=True), "127.0.0.1", False),
        (UrlPolicy(allow_loopback=True), "127.0.0.1", True),
        (UrlPolicy(allow_loopback=True), "10.0.0.1", False),
        (UrlPolicy(allow_private=True, allow_loopback=True), "169.254.169.254", False),
        (UrlPolicy(allow_private=True, allow_loopback=True), "0.0.0.0", False),
        (UrlPolicy(allow_private=True, allow_loopback=True), "224.0.0.1", False),
    ],
    ids=["private_allowed", "private_not_loopback", "loopback_allowed", "loopback_not_private",
         "metadata_never", "unspecified_never", "multicast_never"],
)
async def test_explicit_allowances(policy: UrlPolicy, address: str, ok: bool) -> None:
    """allow_private / allow_loopback open exactly their class; link-local, 0.0.0.0, multicast never."""
    guard = UrlGuard(policy, FakeResolver({"h.example": [address]}))
    if ok:
        assert (await guard.check("https://h.example/")).addresses == (address,)
        return
    with pytest.raises(JoseError):
        await guard.check("https://h.example/")


# -- no connection is ever attempted to a refused address -------------------------------------------------


class RecordingConnectorResolver(AbstractResolver):
    """The HTTP client's own resolver: records lookups (the cache must never need one)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        self.calls.append(host)
        raise OSError("the JWKS cache must connect to vetted addresses only")

    async def close(self) -> None:
        return None


@dataclass
class Traced:
    session: aiohttp.ClientSession
    requests: list[str]
    connector_resolver: RecordingConnectorResolver


@pytest.fixture
async def traced() -> AsyncIterator[Traced]:
    """A client session that records every request start and blocks any that is not to 127.0.0.1."""
    requests: list[str] = []

    async def on_request_start(_: Any, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        requests.append(str(params.url))
        if params.url.host != "127.0.0.1":  # safety net: never let a packet leave loopback
            raise RuntimeError(f"test refused to connect to {params.url.host}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)
    resolver = RecordingConnectorResolver()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver), trace_configs=[trace])
    yield Traced(session, requests, resolver)
    await session.close()


@pytest.mark.parametrize("answer", [["10.0.0.1"], ["169.254.169.254"], ["::ffff:10.0.0.1"], ["fd00::1"]],
                         ids=["private", "metadata", "mapped_private", "ula"])
async def test_refused_fetch_attempts_no_connection(traced: Traced, answer: list[str]) -> None:
    """The cache refuses a JWKS host resolving internally before any request starts."""
    resolver = FakeResolver({"jwks.example": answer})
    cache = JwksCache(session=traced.session, policy=UrlPolicy(), resolver=resolver)
    with pytest.raises(JoseError) as info:
        await cache.get_key("https://jwks.example/jwks.json", "kid-1")
    assert info.value.reason == "jwks_url_refused"
    assert resolver.calls == [("jwks.example", 443)]
    assert traced.requests == []
    assert traced.connector_resolver.calls == []


async def test_allowed_fetch_connects_to_vetted_address_with_host_header(
    traced: Traced, start_server: StartServer, keys: TestKeys
) -> None:
    """Positive control: the request goes to the vetted IP, with the real Host header, no re-resolution."""
    seen_hosts: list[str] = []

    async def jwks(request: web.Request) -> web.Response:
        seen_hosts.append(request.host)
        return web.json_response(keys.jwks.to_dict())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await start_server(app)
    assert server.port is not None
    resolver = FakeResolver({"jwks.test": ["127.0.0.1"]})
    cache = JwksCache(
        session=traced.session, policy=UrlPolicy(allow_http=True, allow_loopback=True), resolver=resolver
    )
    key = await cache.get_key(f"http://jwks.test:{server.port}/jwks", "ec-1")
    assert key.thumbprint == keys.ec.thumbprint
    assert seen_hosts == [f"jwks.test:{server.port}"]
    assert traced.requests == [f"http://127.0.0.1:{server.port}/jwks"]
    assert traced.connector_resolver.calls == []


async def test_dns_rebinding_is_vetted_on_every_fetch(
    traced: Traced, start_server: StartServer, keys: TestKeys
) -> None:
    """A host that later resolves to an internal address is refused on the refetch, with no request."""
    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(keys.jwks.to_dict())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await start_server(app)
    resolver = FakeResolver({"jwks.test": ["127.0.0.1"]})
    now = [0.0]
    cache = JwksCache(
        session=traced.session,
        policy=UrlPolicy(allow_http=True, allow_loopback=True),
        resolver=resolver,
        settings=JwksCacheSettings(ttl_seconds=10, stale_max_seconds=0),
        clock=lambda: now[0],
    )
    uri = f"http://jwks.test:{server.port}/jwks"
    await cache.get_key(uri, "ec-1")
    resolver.answers["jwks.test"] = ["10.0.0.1"]
    now[0] = 11.0
    with pytest.raises(JoseError) as info:
        await cache.get_key(uri, "ec-1")
    assert info.value.reason == "jwks_url_refused"
    assert len(resolver.calls) == 2
    assert traced.requests == [f"http://127.0.0.1:{server.port}/jwks"]


def _tls_server_context(tmp_path: Path, dns_name: str) -> tuple[ssl.SSLContext, str]:
    """A server TLS context with a self-signed certificate for `dns_name`, and that certificate as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "key.pem").write_bytes(key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return ctx, cert_pem.decode()


@pytest.mark.parametrize(("cert_name", "ok"), [("jwks.test", True), ("other.test", False)])
async def test_https_pinned_address_still_verifies_the_host_name(
    tmp_path: Path, keys: TestKeys, cert_name: str, ok: bool
) -> None:
    """Over TLS the pinned connection verifies the certificate against the URL's host name, not the IP."""

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(keys.jwks.to_dict())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server_ctx, cert_pem = _tls_server_context(tmp_path, cert_name)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_ctx)
    try:
        cache = JwksCache(
            policy=UrlPolicy(allow_loopback=True),
            resolver=FakeResolver({"jwks.test": ["127.0.0.1"]}),
            ssl_context=ssl.create_default_context(cadata=cert_pem),
        )
        async with cache:
            uri = f"https://jwks.test:{server.port}/jwks"
            if ok:
                assert (await cache.get_key(uri, "ec-1")).thumbprint == keys.ec.thumbprint
            else:
                with pytest.raises(JoseError) as info:
                    await cache.get_key(uri, "ec-1")
                assert info.value.reason == "jwks_unavailable"
                assert "Certificate" in info.value.description
    finally:
        await server.close()


async def test_unexpected_fetch_failure_still_maps_to_a_reason() -> None:
    """An unforeseen exception inside a fetch (here: a crashing resolver) is jwks_unavailable, not a crash."""

    async def crashing(host: str, port: int) -> list[str]:
        raise RuntimeError("resolver bug")

    async with JwksCache(policy=UrlPolicy(), resolver=crashing) as cache:
        with pytest.raises(JoseError) as info:
            await cache.get_key("https://jwks.example/jwks", "k")
    assert info.value.reason == "jwks_unavailable"
    assert "RuntimeError" in info.value.description
