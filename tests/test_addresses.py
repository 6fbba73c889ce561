"""Trusted proxies and the client address behind them (gateway/addresses.py)."""

from __future__ import annotations

import pytest

from gateway.addresses import ProxyTrust, parse_ip

LB = ["10.0.0.0/8", "192.168.1.1"]


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # untrusted peer: its X-Forwarded-For is ignored
        ("10.1.2.3", [], "10.1.2.3"),  # trusted peer, nothing forwarded: the peer itself
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),  # the client wrote 1.1.1.1: not believed
        ("10.1.2.3", ["1.1.1.1, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # two trusted hops skipped
        ("10.1.2.3", ["1.1.1.1", "198.51.100.1, 192.168.1.1"], "198.51.100.1"),  # several header lines
        ("10.1.2.3", ["10.0.0.5, 10.0.0.6"], "10.0.0.5"),  # every hop trusted: the leftmost
        ("10.1.2.3", ["198.51.100.1, garbage"], "10.1.2.3"),  # not an address: stop at the last trusted hop
        ("10.1.2.3", ["198.51.100.1, unknown, 10.0.0.9"], "10.0.0.9"),
        ("10.1.2.3", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.1.2.3", ["198.51.100.1:5555"], "198.51.100.1"),
        ("::ffff:10.1.2.3", ["::ffff:198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peers and entries
        ("10.1.2.3", [" , ,198.51.100.1 "], "198.51.100.1"),
    ],
)
def test_client_address(peer, xff, client):
    assert ProxyTrust(LB).client_address(peer, xff) == client


def test_no_trusted_proxies_means_the_peer_whatever_is_forwarded():
    trust = ProxyTrust(())
    assert not trust
    assert trust.client_address("10.1.2.3", ["198.51.100.1"]) == "10.1.2.3"
    assert not trust.trusts("10.1.2.3")


def test_parse_ip():
    assert str(parse_ip("fe80::1%eth0")) == "fe80::1"
    assert parse_ip("example.com") is None and parse_ip("") is None and parse_ip("1.2.3.4.5") is None


def test_verdicts_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch):
    import gateway.addresses as addresses

    monkeypatch.setattr(addresses, "REMEMBERED_PEERS", 4)
    trust = ProxyTrust(LB)
    for i in range(10):
        assert trust.trusts(f"203.0.113.{i}") is False
        assert len(trust._verdicts) <= 4
    assert trust.trusts("10.9.8.7") is True and trust.trusts("10.9.8.7") is True
    assert trust.trusts("garbage") is False and trust.trusts(None) is False
