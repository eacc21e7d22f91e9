"""Routes that would break the device (pure): monitor IPs, static routes via the peer and
remote selectors."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from agent.peers.guard import PeerIndex, route_problems
from agent.peers.spec import StaticRoute, TrafficSelector
from tests.spec_factory import numbered_spec

WAN = [IPv4Interface("192.168.1.10/24")]
A = IPv4Address


def ts(start: str, end: str) -> TrafficSelector:
    return TrafficSelector(0, 0, 65535, A(start), A(end))


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("monitor_ips", (A("203.0.113.1"),),
     "tunnel 1: peer.ips 203.0.113.1 is the tunnel's own peer address (dst): its IKE/ESP "
     "would be routed into itself"),
    ("monitor_ips", (A("192.168.1.1"),),
     "tunnel 1: peer.ips 192.168.1.1 is in the WAN subnet 192.168.1.0/24 (the gateway and "
     "the neighbours there must stay reachable)"),
    ("monitor_ips", (A("192.168.1.10"),),
     "tunnel 1: peer.ips 192.168.1.10 is this device's own WAN address"),
    ("monitor_ips", (A("203.0.113.2"),),
     "tunnel 1: peer.ips 203.0.113.2 is the peer address of tunnel 2: that tunnel's IKE/ESP "
     "would be diverted"),
    ("remote_ts", ts("203.0.113.0", "203.0.113.255"),
     "tunnel 1: ikev2.remote-ts 203.0.113.0-203.0.113.255 covers the tunnel's own peer "
     "address 203.0.113.1: its IKE/ESP would be routed into itself"),
    ("remote_ts", ts("192.168.0.0", "192.168.255.255"),
     "tunnel 1: ikev2.remote-ts 192.168.0.0-192.168.255.255 overlaps the WAN subnet "
     "192.168.1.0/24 of this device"),
    ("remote_ts", ts("127.0.0.0", "127.0.0.255"),
     "tunnel 1: ikev2.remote-ts 127.0.0.0-127.0.0.255 covers 127.0.0.0/8, which must never "
     "be routed into a tunnel"),
    ("static_routes", (StaticRoute(IPv4Network("203.0.113.0/24")),),
     "tunnel 1: add-route 203.0.113.0/24 via 10.100.0.19 covers the tunnel's own peer "
     "address 203.0.113.1: its IKE/ESP would be routed into itself"),
    ("static_routes", (StaticRoute(IPv4Network("192.168.0.0/16")),),
     "tunnel 1: add-route 192.168.0.0/16 via 10.100.0.19 overlaps the WAN subnet "
     "192.168.1.0/24 of this device"),
    ("static_routes", (StaticRoute(IPv4Network("224.0.0.0/8")),),
     "tunnel 1: add-route 224.0.0.0/8 via 10.100.0.19 covers 224.0.0.0/4, which must never "
     "be routed into a tunnel"),
])
def test_each_hazard_is_named(field: str, value: object, expected: str) -> None:
    spec = replace(numbered_spec(1), **{field: value})
    peers = {1: spec, 2: numbered_spec(2)}
    assert route_problems(spec, PeerIndex(peers), WAN)[0] == expected


def test_the_whole_space_but_one_is_refused_for_many_reasons() -> None:
    spec = replace(numbered_spec(1), remote_ts=ts("0.0.0.0", "255.255.255.254"))
    problems = route_problems(spec, PeerIndex({1: spec, 2: numbered_spec(2)}), WAN)
    assert any("covers the tunnel's own peer address" in p for p in problems)
    assert any("covers the peer address 203.0.113.2 of tunnel 2" in p for p in problems)
    assert any("overlaps the WAN subnet" in p for p in problems)


def test_a_new_peer_whose_address_another_tunnel_routes_is_refused() -> None:
    old = replace(numbered_spec(1), remote_ts=ts("198.18.0.0", "198.18.255.255"))
    new = replace(numbered_spec(2), dst=A("198.18.0.9"))
    assert route_problems(new, PeerIndex({1: old, 2: new}), WAN) == [
        "tunnel 2: dst 198.18.0.9 is inside the remote selector of tunnel 1, routed into "
        "that tunnel"]


def test_a_new_peer_inside_another_tunnels_static_route_is_refused() -> None:
    old = replace(numbered_spec(1), static_routes=(StaticRoute(IPv4Network("198.18.0.0/16")),))
    new = replace(numbered_spec(2), dst=A("198.18.0.9"))
    assert route_problems(new, PeerIndex({1: old, 2: new}), WAN) == [
        "tunnel 2: dst 198.18.0.9 is inside the static route 198.18.0.0/16 of tunnel 1, "
        "routed into that tunnel"]


def test_ordinary_peers_have_no_problem() -> None:
    a = replace(numbered_spec(1), remote_ts=ts("10.20.0.0", "10.20.255.255"))
    b = replace(numbered_spec(2), remote_ts=ts("10.20.0.0", "10.20.255.255"))
    assert route_problems(a, PeerIndex({1: a, 2: b}), WAN) == []
    assert route_problems(numbered_spec(3), PeerIndex({3: numbered_spec(3)}), WAN) == []


ON_LINK_GW = A("172.31.1.1")  # a cloud's on-link gateway, outside the WAN subnet


def test_a_wan_gateway_outside_the_wan_subnet_is_refused() -> None:
    spec = replace(numbered_spec(1), monitor_ips=(ON_LINK_GW,))
    assert route_problems(spec, PeerIndex({1: spec}), WAN, [ON_LINK_GW]) == [
        "tunnel 1: peer.ips 172.31.1.1 is the WAN gateway (next hop of the default route, "
        "outside the WAN subnet): the default route would resolve into the tunnel and cut "
        "the device off, IKE/ESP of every tunnel included"]
    spec = replace(numbered_spec(1), remote_ts=ts("172.31.0.0", "172.31.255.255"))
    assert route_problems(spec, PeerIndex({1: spec}), WAN, [ON_LINK_GW]) == [
        "tunnel 1: ikev2.remote-ts 172.31.0.0-172.31.255.255 covers the WAN gateway "
        "172.31.1.1 (next hop of the default route, outside the WAN subnet): the default "
        "route would resolve into the tunnel and cut the device off, IKE/ESP of every "
        "tunnel included"]
    # without the gateway known, nothing to say: these are ordinary addresses
    assert route_problems(spec, PeerIndex({1: spec}), WAN) == []


def test_a_gateway_inside_the_wan_subnet_is_named_once() -> None:
    spec = replace(numbered_spec(1), remote_ts=ts("192.168.0.0", "192.168.255.255"))
    problems = route_problems(spec, PeerIndex({1: spec}), WAN, [A("192.168.1.1")])
    assert [p for p in problems if "gateway" in p or "WAN subnet" in p] == [
        "tunnel 1: ikev2.remote-ts 192.168.0.0-192.168.255.255 overlaps the WAN subnet "
        "192.168.1.0/24 of this device"]


def test_the_index_finds_exactly_the_peers_whose_address_a_selector_covers() -> None:
    peers = {n: replace(numbered_spec(n), dst=A(f"198.18.{n % 3}.{n}")) for n in range(1, 40)}
    index = PeerIndex(peers)
    start, end = A("198.18.1.0"), A("198.18.1.255")
    expected = sorted((n, p.dst) for n, p in peers.items() if start <= p.dst <= end)
    assert index.dsts_within(start, end) == expected
    assert len(expected) == 13
