"""Which peer tunnel each recorded `add-route` enters (pure)."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from agent.jobs.validation import peer_static_routes
from tests.spec_factory import numbered_spec


def item(addr: object, via: object) -> tuple[str, tuple[str, Any]]:
    return (f"route:{addr}:{via}::", ("add-route", {"addr": addr, "via": via}))


def test_routes_enter_the_tunnel_whose_subnet_holds_via() -> None:
    one, two = numbered_spec(1), numbered_spec(2)  # 10.100.0.18/31, 10.100.0.20/31
    items = dict([
        item("10.50.0.0/16", str(one.peer_inner_addr)),
        item("10.51.0.0/16", str(one.addr.ip)),  # either /31 address, as flexiManage finds them
        item("10.60.0.0/16", str(two.peer_inner_addr)),
        item("10.77.0.0/16", "192.168.1.254"),  # another next hop: recorded only
        item("10.78.0.0/16", "not-an-address"),  # not through a peer: recorded only
    ])
    routes, problems = peer_static_routes(items, [one, two])
    assert problems == []
    assert routes == {1: (IPv4Network("10.50.0.0/16"), IPv4Network("10.51.0.0/16")),
                      2: (IPv4Network("10.60.0.0/16"),)}


def test_a_bad_prefix_through_a_peer_is_named() -> None:
    one = numbered_spec(1)
    routes, problems = peer_static_routes(dict([item("10.50.0.1/16", "10.100.0.19"),
                                                item("banana", "10.100.0.19")]), [one])
    assert routes == {}
    assert [(p.field, p.value) for p in problems] == [("add-route.addr", "'10.50.0.1/16'"),
                                                      ("add-route.addr", "'banana'")]
    assert problems[0].reason == ("not an IPv4 prefix (10.50.0.1/16 has host bits set), "
                                  "via 10.100.0.19 of peer tunnel 1")
