"""Path choice per rule from link health: priority, load-balancing, link-quality, fallback."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from agent.policy.decide import Choice, Hysteresis, Kind, Link, LinkHealth, decide
from agent.policy.model import parse_policy

A = Link("peer 1", "A", 11, IPv4Address("10.100.0.1"), 1)
A2 = Link("peer 2", "A", 12, IPv4Address("10.100.0.3"), 2)
B = Link("peer 3", "B", 13, IPv4Address("10.100.0.5"), 3)
LINKS = {"A": [A, A2], "B": [B]}
UP = LinkHealth(True, 10.0, 0.0)
DOWN = LinkHealth(False, 0.0, 100.0, "3 probes lost")


def rule(groups: list[tuple[list[str], str]], order: str = "priority",
         fallback: str = "drop") -> Any:
    raw = {"id": "r", "priority": 1,
           "classification": {"prefix": {"ip": "10.9.0.0/16"}},
           "action": {"links": [{"pathlabels": ls, "order": o} for ls, o in groups],
                      "order": order, "fallback": fallback}}
    return parse_policy({"id": "p", "rules": [raw]}).rules[0]


def health(**by_key: LinkHealth) -> dict[str, LinkHealth]:
    return {k.replace("_", " "): v for k, v in by_key.items()}


def test_priority_takes_the_first_usable_group_and_link() -> None:
    r = rule([(["A"], "priority"), (["B"], "priority")])
    c = decide(r, LINKS, health(peer_1=UP, peer_2=UP, peer_3=UP))
    assert c.kind is Kind.PATHS and c.links == (A,) and c.group == 1
    c = decide(r, LINKS, health(peer_1=DOWN, peer_2=UP, peer_3=UP))
    assert c.links == (A2,) and c.group == 1
    c = decide(r, LINKS, health(peer_1=DOWN, peer_2=DOWN, peer_3=UP))
    assert c.links == (B,) and c.group == 2
    assert "peer 1 down (3 probes lost)" in c.reason and "peer 3 up" in c.reason


def test_a_link_without_vpp_interface_or_health_is_not_usable() -> None:
    r = rule([(["A"], "priority"), (["B"], "priority")])
    ghost = Link("peer 1", "A", None, A.next_hop, 1)
    c = decide(r, {"A": [ghost], "B": [B]}, health(peer_1=UP, peer_3=UP))
    assert c.links == (B,) and "peer 1 has no VPP interface" in c.reason
    c = decide(r, LINKS, health(peer_3=UP))
    assert c.links == (B,) and "peer 1 not monitored" in c.reason


def test_fallback_drop_versus_by_destination() -> None:
    all_down = health(peer_1=DOWN, peer_2=DOWN, peer_3=DOWN)
    drop = decide(rule([(["A"], "priority"), (["B"], "priority")]), LINKS, all_down)
    assert drop.kind is Kind.DROP and drop.links == () and "fallback drop" in drop.reason
    fib = decide(rule([(["A"], "priority")], fallback="by-destination"), LINKS, all_down)
    assert fib.kind is Kind.FIB and "by-destination" in fib.reason
    nolabel = decide(rule([(["Z"], "priority")]), LINKS, all_down)
    assert nolabel.kind is Kind.DROP and "no link carries them" in nolabel.reason


def test_load_balancing_inside_a_group_and_between_groups() -> None:
    h = health(peer_1=UP, peer_2=DOWN, peer_3=UP)
    inside = decide(rule([(["A", "B"], "load-balancing")]), LINKS, h)
    assert inside.links == (A, B)
    between = decide(rule([(["A"], "priority"), (["B"], "priority")], order="load-balancing"),
                     LINKS, h)
    assert set(between.links) == {A, B} and between.group is None
    h2 = health(peer_1=UP, peer_2=UP, peer_3=DOWN)
    assert set(decide(rule([(["A"], "load-balancing")]), LINKS, h2).links) == {A, A2}


def test_link_quality_picks_the_best_and_holds_it_within_the_margins() -> None:
    r = rule([(["A", "B"], "link-quality")])
    h = health(peer_1=LinkHealth(True, 50.0, 0.0), peer_2=LinkHealth(True, 20.0, 0.0),
               peer_3=LinkHealth(True, 5.0, 3.0))
    first = decide(r, LINKS, h)
    assert first.links == (A2,)  # lowest drop first, then rtt
    # peer 1 gets 25 ms better than peer 2: within the 30 ms margin, no switch
    h["peer 1"] = LinkHealth(True, 1.0, 0.0)
    held = decide(r, LINKS, h, previous=first)
    assert held.links == (A2,) and "kept" in held.reason
    # ... without a previous choice the best wins outright
    assert decide(r, LINKS, h).links == (A,)
    # 40 ms better: switch
    h["peer 2"] = LinkHealth(True, 41.0, 0.0)
    moved = decide(r, LINKS, h, previous=held)
    assert moved.links == (A,)
    # drop beyond the margin beats rtt
    h["peer 1"] = LinkHealth(True, 1.0, 5.0)
    assert decide(r, LINKS, h, previous=moved).links == (A2,)
    # a wider margin holds where the default would not
    h2 = health(peer_1=LinkHealth(True, 100.0, 0.0), peer_2=LinkHealth(True, 50.0, 0.0),
                peer_3=DOWN)
    prev = Choice(Kind.PATHS, (A,), 1)
    assert decide(r, LINKS, h2, prev).links == (A2,)
    assert decide(r, LINKS, h2, prev, Hysteresis(rtt_ms=60.0)).links == (A,)


def test_link_quality_leaves_a_link_that_went_down() -> None:
    r = rule([(["A"], "link-quality")])
    prev = Choice(Kind.PATHS, (A,), 1)
    c = decide(r, LINKS, health(peer_1=DOWN, peer_2=LinkHealth(True, 300.0, 10.0)), prev)
    assert c.links == (A2,)


def test_same_forwarding_ignores_the_reason_and_order() -> None:
    x = Choice(Kind.PATHS, (A, B), None, "x")
    assert x.same_forwarding(Choice(Kind.PATHS, (B, A), None, "y"))
    assert not x.same_forwarding(Choice(Kind.PATHS, (A,), 1))
    assert not Choice(Kind.DROP).same_forwarding(Choice(Kind.FIB))
    assert not x.same_forwarding(None)


def test_a_wan_dia_label_leaves_the_traffic_to_the_routing_table() -> None:
    """The agent does not steer to a WAN: a DIA group reached before any usable tunnel
    leaves the traffic to the FIB (out of the WAN, as flexiagent's DIA link), never to
    a later tunnel group nor to the drop fallback."""
    all_up = health(peer_1=UP, peer_2=UP, peer_3=UP)
    dia_first = rule([(["WAN1"], "priority"), (["B"], "priority")], fallback="drop")
    c = decide(dia_first, LINKS, all_up, dia_labels=frozenset({"WAN1"}))
    assert c.kind is Kind.FIB and c.links == ()
    assert c.reason == "group 1 [WAN1]: WAN1 is a WAN (DIA) label: left to the routing table"
    # without knowing the label it went into the tunnel of the second group
    assert decide(dia_first, LINKS, all_up).links == (B,)
    # a tunnel group first is still used while it is up; the DIA group backs it up
    tunnel_first = rule([(["B"], "priority"), (["WAN1"], "priority")], fallback="drop")
    assert decide(tunnel_first, LINKS, all_up, dia_labels=frozenset({"WAN1"})).links == (B,)
    c = decide(tunnel_first, LINKS, health(peer_1=UP, peer_2=UP, peer_3=DOWN),
               dia_labels=frozenset({"WAN1"}))
    assert c.kind is Kind.FIB and c.reason.startswith("group 1 [B]: peer 3 down")
