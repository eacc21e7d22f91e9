"""Which peer tunnel each recorded `add-route` enters (pure)."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Any

from agent.jobs.validation import peer_static_routes
from agent.peers.spec import StaticRoute
from tests.spec_factory import numbered_spec


def item(addr: object, via: object, metric: object = None) -> tuple[str, tuple[str, Any]]:
    params = {"addr": addr, "via": via} | ({} if metric is None else {"metric": metric})
    return (f"route:{addr}:{via}::{metric}", ("add-route", params))


def route(net: str, preference: int = 0) -> StaticRoute:
    return StaticRoute(IPv4Network(net), preference)


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
    assert routes == {1: (route("10.50.0.0/16"), route("10.51.0.0/16")),
                      2: (route("10.60.0.0/16"),)}


def test_a_metric_is_the_paths_preference_while_the_prefixs_metrics_fit_a_byte() -> None:
    specs = [numbered_spec(n) for n in (1, 2, 3)]
    via = {n: str(specs[n - 1].peer_inner_addr) for n in (1, 2, 3)}
    items = dict([
        item("10.50.0.0/16", via[1], 10),  # sync-device: an integer
        item("10.50.0.0/16", via[2], "20"),  # add-route: the route's text
        item("10.50.0.0/16", via[3], 10),  # equal metrics share the traffic
        item("10.70.0.0/16", via[1], ""),  # empty is 0, as flexiagent reads it
        item("10.70.0.0/16", via[2], 255),
    ])
    routes, problems = peer_static_routes(items, specs)
    assert problems == []
    assert routes == {1: (route("10.50.0.0/16", 10), route("10.70.0.0/16")),
                      2: (route("10.50.0.0/16", 20), route("10.70.0.0/16", 255)),
                      3: (route("10.50.0.0/16", 10),)}


def test_bigger_metrics_are_ranked_so_their_order_holds() -> None:
    specs = [numbered_spec(n) for n in (1, 2, 3)]
    via = {n: str(specs[n - 1].peer_inner_addr) for n in (1, 2, 3)}
    items = dict([
        item("10.50.0.0/16", via[1], 300),
        item("10.50.0.0/16", via[2], 1000),
        item("10.50.0.0/16", via[3], 20),
        item("10.60.0.0/16", via[2], 70000),  # alone: the best, whatever the metric
    ])
    routes, _ = peer_static_routes(items, specs)
    assert routes == {1: (route("10.50.0.0/16", 1),),
                      2: (route("10.50.0.0/16", 2), route("10.60.0.0/16")),
                      3: (route("10.50.0.0/16"),)}


def test_one_tunnel_routing_a_prefix_twice_keeps_its_best_metric() -> None:
    one, two = numbered_spec(1), numbered_spec(2)
    items = dict([item("10.50.0.0/16", str(one.peer_inner_addr), 50),
                  item("10.50.0.0/16", str(one.addr.ip), 5),
                  item("10.50.0.0/16", str(two.peer_inner_addr), 20)])
    routes, _ = peer_static_routes(items, [one, two])
    assert routes == {1: (route("10.50.0.0/16", 5),), 2: (route("10.50.0.0/16", 20),)}


def test_a_bad_metric_through_a_peer_is_named() -> None:
    one = numbered_spec(1)
    routes, problems = peer_static_routes(dict([item("10.50.0.0/16", "10.100.0.19", -1),
                                                item("10.51.0.0/16", "10.100.0.19", "1e3"),
                                                item("10.52.0.0/16", "10.100.0.19", True)]),
                                          [one])
    assert routes == {}
    assert [(p.field, p.value) for p in problems] == [("add-route.metric", "-1"),
                                                      ("add-route.metric", "'1e3'"),
                                                      ("add-route.metric", "true")]
    assert problems[0].reason == "not a metric, route 10.50.0.0/16 via 10.100.0.19 of peer tunnel 1"


def test_a_bad_prefix_through_a_peer_is_named() -> None:
    one = numbered_spec(1)
    routes, problems = peer_static_routes(dict([item("10.50.0.1/16", "10.100.0.19"),
                                                item("banana", "10.100.0.19")]), [one])
    assert routes == {}
    assert [(p.field, p.value) for p in problems] == [("add-route.addr", "'10.50.0.1/16'"),
                                                      ("add-route.addr", "'banana'")]
    assert problems[0].reason == ("not an IPv4 prefix (10.50.0.1/16 has host bits set), "
                                  "via 10.100.0.19 of peer tunnel 1")
