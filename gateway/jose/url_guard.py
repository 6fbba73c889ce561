"""SSRF guard for outbound key-set fetches: scheme, host allow-list, every resolved address vetted."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from yarl import URL

from .errors import JoseError, quoted

KeyOrigin = Literal["configured", "software"]
"""Whose key-set URL a fetch is for (`UrlPolicy.origin`): the operator's config, or a TPP's signed document."""

HostResolver = Callable[[str, int], Awaitable[list[str]]]
"""Async `(host, port) -> [ip address strings]`; injectable so tests never touch real DNS."""

AddressCategory = Literal[
    "global", "loopback", "private", "link_local", "multicast", "unspecified", "reserved"
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE_NETS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_THIS_NETWORK: Final = ipaddress.ip_network("0.0.0.0/8")  # "this host" — connects to localhost on Linux
_NAT64_NETS: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")
_MAX_ADDRESSES: Final = 8


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64_NETS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_category(ip: IPAddress) -> AddressCategory:
    """Classify an address; only `global` is reachable without an explicit allowance."""
    if isinstance(ip, ipaddress.IPv6Address):
        # SECURITY: IPv4-mapped/translated IPv6 (::ffff:10.0.0.1, 64:ff9b::a00:1, 2002:a00:1::) reach the
        # embedded IPv4 address; classify that one (SSRF filter bypasses, e.g. CVE-2021-29418 family).
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_category(embedded)
        if ip.is_unspecified:
            return "unspecified"
        if ip.is_loopback:
            return "loopback"
        if ip in _IPV4_COMPATIBLE:  # deprecated IPv4-compatible ::a.b.c.d
            return "reserved"
    elif ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:  # SECURITY: 169.254.169.254 cloud metadata, fe80::/10
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if any(ip in net for net in _PRIVATE_NETS if net.version == ip.version):
        return "private"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "reserved"
    return "global"


async def default_resolver(host: str, port: int) -> list[str]:
    """Resolve with the event loop's getaddrinfo (runs in the default executor, never blocks the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out


def _host_allowed(host: str, patterns: frozenset[str]) -> bool:
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True, slots=True)
class VettedUrl:
    """A URL whose host resolved only to permitted addresses: connect to these, never re-resolve."""

    url: URL
    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which outbound URLs may be fetched: https only, public addresses only, unless explicitly allowed."""

    allow_http: bool = False
    allowed_hosts: frozenset[str] = frozenset()  # exact names or "*.suffix"; empty: any host
    allow_private: bool = False  # RFC 1918, CGNAT 100.64/10, fc00::/7
    allow_loopback: bool = False  # 127/8, ::1 (tests and the loopback sandbox)
    origin: KeyOrigin = "software"
    """Whose URLs these are: `configured` (written by the operator in config: token issuers, directories) or
    `software` (taken from documents others signed: a TPP's software_jwks_endpoint). It allows nothing by itself;
    it is the `origin` label of the key-set fetch metrics, so an alert can tell the bank's trust anchors from a
    TPP's key set."""

    def __post_init__(self) -> None:
        normalised = frozenset(h.strip().lower().rstrip(".") for h in self.allowed_hosts)
        object.__setattr__(self, "allowed_hosts", normalised)

    @classmethod
    def build(
        cls,
        *,
        allow_http: bool = False,
        allowed_hosts: Iterable[str] = (),
        allow_private: bool = False,
        allow_loopback: bool = False,
        origin: KeyOrigin = "software",
    ) -> UrlPolicy:
        """Construct from any iterable of host patterns (normalised: lower case, no trailing dot)."""
        return cls(allow_http, frozenset(allowed_hosts), allow_private, allow_loopback, origin)

    def check_syntax(self, url: str | URL, noun: str = "key set") -> URL:
        """Refuse a URL by its text alone: scheme, userinfo, host allow-list (JoseError jwks_url_refused); `noun`
        names what the URL is for in the description."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError) as exc:
            raise JoseError("jwks_url_refused", f"{noun} URL is not a valid URL") from exc
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parsed.scheme not in schemes:
            raise JoseError("jwks_url_refused", f"{noun} URL scheme {quoted(parsed.scheme)} is not allowed")
        host = (parsed.raw_host or "").lower().rstrip(".")
        if not host:
            raise JoseError("jwks_url_refused", f"{noun} URL has no host")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise JoseError("jwks_url_refused", f"{noun} URL must not carry credentials")
        if self.allowed_hosts and not _host_allowed(host, self.allowed_hosts):
            raise JoseError("jwks_url_refused", f"{noun} host {quoted(host)} is not on the allow-list")
        return parsed

    def address_allowed(self, ip: IPAddress) -> bool:
        """True when a connection to `ip` is permitted by this policy."""
        category = address_category(ip)
        return (
            category == "global"
            or (category == "loopback" and self.allow_loopback)
            or (category == "private" and self.allow_private)
        )


class UrlGuard:
    """Vets a URL under a UrlPolicy, resolving its host with an injectable resolver before any connection."""

    __slots__ = ("noun", "policy", "resolver")

    def __init__(self, policy: UrlPolicy, resolver: HostResolver | None = None, *, noun: str = "key set") -> None:
        self.policy = policy
        self.resolver: HostResolver = resolver or default_resolver
        self.noun = noun
        """What the URLs are for, in refusals ("key set", "CRL", "OCSP responder")."""

    async def check(self, url: str | URL) -> VettedUrl:
        """Resolve and vet; JoseError jwks_url_refused if ANY address is forbidden (or none resolve)."""
        parsed = self.policy.check_syntax(url, self.noun)
        noun = self.noun
        host = (parsed.raw_host or "").lower().rstrip(".")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            raw = [str(literal)]
        else:
            try:
                raw = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise JoseError("jwks_url_refused", f"{noun} host {quoted(host)} does not resolve") from exc
        if not raw:
            raise JoseError("jwks_url_refused", f"{noun} host {quoted(host)} does not resolve")
        addresses: list[str] = []
        for text in raw:
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError as exc:
                raise JoseError("jwks_url_refused", "resolver returned an invalid address") from exc
            # SECURITY: one forbidden answer refuses the URL (DNS answers mixing public and internal
            # addresses are a rebinding/SSRF trick); vetted before any connection is attempted.
            if not self.policy.address_allowed(ip):
                kind = address_category(ip).replace("_", "-")
                why = f"{noun} host {quoted(host)} resolves to a {kind} address"
                raise JoseError("jwks_url_refused", why)
            if str(ip) not in addresses:
                addresses.append(str(ip))
        return VettedUrl(parsed, host, port, tuple(addresses[:_MAX_ADDRESSES]))
