"""Trusted proxies: whether an address is one of ours, and the client's address behind them.

Behind a load balancer the connection's peer is the balancer, so a per-address budget would be one budget
for every TPP. `X-Forwarded-For` names the hops, but anyone can write it: only the entries appended by
proxies we trust mean anything. As nginx's realip module (`real_ip_recursive on`) and Envoy's trusted hops
do, the client is the nearest address, walking right to left from the peer, that is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or an X-Forwarded-For entry (IPv4-mapped IPv6 as IPv4, zone dropped); None if
    it is not an address (`unknown`, a hostname, garbage)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


REMEMBERED_PEERS: Final = 1024
"""Peer addresses whose verdict `ProxyTrust.trusts` remembers; beyond this the memo starts again."""


class ProxyTrust:
    """A set of trusted proxy networks (addresses or CIDRs, already validated by config)."""

    __slots__ = ("_networks", "_verdicts")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._verdicts: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str | None) -> bool:
        """True when `address` is inside one of the trusted networks (remembered: peers repeat)."""
        if address is None:
            return False
        verdict = self._verdicts.get(address)
        if verdict is None:
            if len(self._verdicts) >= REMEMBERED_PEERS:
                self._verdicts.clear()
            ip = parse_ip(address)
            verdict = self._verdicts[address] = ip is not None and self._trusts_ip(ip)
        return verdict

    def _trusts_ip(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks)

    def client_address(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address: `peer` unless it is a trusted proxy; then, right to left through the
        X-Forwarded-For entries (`forwarded_for`: the header's values in order), the first address that is
        not trusted. An entry that is not an address stops the walk at the last trusted hop (it cannot be
        vouched for); if every entry is trusted, the leftmost one."""
        if not self._networks or peer is None or not self.trusts(peer):
            return peer
        client = peer
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            ip = parse_ip(hop)
            if ip is None:
                return client
            client = str(ip)
            if not self._trusts_ip(ip):
                return client
        return client
