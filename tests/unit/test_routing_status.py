"""Per-peer routing state from FRR's JSON (shapes captured from FRR 8.4.4)."""

from __future__ import annotations

from agent.routing.model import from_params, peer_routing
from agent.routing.status import format_table, peer_statuses

OSPF_NEIGHBORS = {"neighbors": {"203.0.113.10": [
    {"priority": 1, "state": "Full/-", "nbrState": "Full/-", "address": "10.100.0.17",
     "ifaceName": "peer7:10.100.0.16"}]}}


def route(prefix: str, protocol: str, selected: bool, **hop: object) -> dict[str, object]:
    entry: dict[str, object] = {"prefix": prefix, "protocol": protocol, "nexthops": [hop]}
    if selected:
        entry["selected"] = True
    return entry


ROUTES = {
    "10.100.0.16/31": [route("10.100.0.16/31", "ospf", False, interfaceName="peer7"),
                       route("10.100.0.16/31", "connected", True, interfaceName="peer7")],
    "198.51.100.0/24": [route("198.51.100.0/24", "ospf", True, ip="10.100.0.17",
                              interfaceName="peer7")],
    "10.200.9.0/24": [route("10.200.9.0/24", "bgp", True, ip="10.100.0.19",
                            interfaceName="peer9")],
    "10.200.8.0/24": [route("10.200.8.0/24", "bgp", True, ip="10.100.0.19",
                            interfaceName="peer9")],
}
BGP = {"ipv4Unicast": {"as": 65001, "peers": {
    "10.100.0.19": {"state": "Established", "pfxRcd": 2, "pfxSnt": 3}}}}
EXTERNAL = {"routerId": "192.0.2.1", "AS External Link States": {"10.77.0.0": {}}}


def test_each_peer_gets_its_protocol_state_and_route_counts() -> None:
    model = from_params(
        peers=[peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf"}),
               peer_routing(9, {"addr": "10.100.0.18/31", "routing": "bgp"}),
               peer_routing(11, {"addr": "10.100.0.22/31", "routing": "bgp"})],
        bgp={"localAsn": "65001"})
    got = [s.as_dict() for s in peer_statuses(
        model, ospf_neighbors=OSPF_NEIGHBORS, bgp_summary=BGP, routes=ROUTES,
        ospf_self_external=EXTERNAL)]
    assert got == [
        {"tunnel_id": 7, "interface": "peer7", "protocol": "ospf", "neighbor": "10.100.0.17",
         "state": "Full/-", "learned": 1, "advertised": 1},
        {"tunnel_id": 9, "interface": "peer9", "protocol": "bgp", "neighbor": "10.100.0.19",
         "state": "Established", "learned": 2, "advertised": 3},
        # no BGP neighbor for this peer's far end: no session, nothing known
        {"tunnel_id": 11, "interface": "peer11", "protocol": "bgp", "neighbor": "10.100.0.23",
         "state": "", "learned": 0, "advertised": None},
    ]


def test_no_adjacency_is_an_empty_state() -> None:
    model = from_params(peers=[peer_routing(7, {"addr": "10.100.0.16/31"})])
    [s] = peer_statuses(model, ospf_neighbors={}, bgp_summary={}, routes={},
                        ospf_self_external={})
    assert (s.state, s.learned, s.advertised) == ("", 0, 0)


def test_table_shows_one_line_per_peer() -> None:
    model = from_params(
        peers=[peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf"}),
               peer_routing(11, {"addr": "10.100.0.22/31", "routing": "bgp"})],
        bgp={"localAsn": "65001"})
    statuses = [s.as_dict() for s in peer_statuses(
        model, ospf_neighbors=OSPF_NEIGHBORS, bgp_summary=BGP, routes=ROUTES,
        ospf_self_external=EXTERNAL)]
    lines = format_table(statuses).splitlines()
    assert lines[0].split() == ["tunnel", "interface", "protocol", "neighbor", "state",
                                "learned", "advertised"]
    assert lines[1].split() == ["7", "peer7", "ospf", "10.100.0.17", "Full/-", "1", "1"]
    assert lines[2].split() == ["11", "peer11", "bgp", "10.100.0.23", "down", "0", "-"]
    assert format_table([]) == "no peer routing configured\n"
