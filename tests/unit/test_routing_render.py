"""Rendering the routing model to FRR lines and diffing them with a running-config (pure)."""

from __future__ import annotations

import pytest

from agent.routing.frrconf import diff, elide_defaults, mask, parse
from agent.routing.model import (
    PeerRouting,
    RoutingModelError,
    bgp_settings,
    from_params,
    merge_modify_bgp,
    peer_routing,
    routing_filter,
)
from agent.routing.render import render

PASSWORD = "Top-Secret-Key-4711"

BGP = {"routerId": "192.0.2.1", "localAsn": "65001", "redistributeOspf": True,
       "bestPathMultipathRelax": True,
       "neighbors": [{"ip": "10.100.0.17", "remoteAsn": "65010", "password": PASSWORD,
                      "inboundFilter": "in-f", "outboundFilter": "", "holdInterval": "90",
                      "keepaliveInterval": "30", "custom": [], "sendCommunity": "standard",
                      "multiHop": 1}],
       "networks": [{"ipv4": "192.168.1.1/24"}], "custom": []}

FILTER = {"name": "in-f", "description": "from the peer",
          "rules": [{"route": "0.0.0.0/0", "action": "deny", "nextHop": "", "priority": 0},
                    {"route": "10.20.0.0/16", "action": "allow", "nextHop": "", "priority": 2},
                    {"route": "10.10.0.0/16", "action": "allow", "nextHop": "", "priority": 1},
                    {"route": "10.30.0.0/16", "action": "allow", "nextHop": "10.100.0.17",
                     "priority": 3}]}


def peer7(**kw: object) -> PeerRouting:
    return peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf", "ospf-cost": "100", **kw})


def lines(paths: tuple[tuple[str, ...], ...]) -> list[str]:
    return [" / ".join(p) for p in paths]


def test_ospf_peer_renders_the_reference_commands() -> None:
    out = lines(render(from_params(peers=[peer7()], ospf={"routerId": "192.0.2.1",
                                                          "redistributeBgp": True})))
    assert "interface peer7 / ip ospf network point-to-point" in out
    assert "interface peer7 / ip ospf cost 100" in out
    assert "router ospf / network 10.100.0.16/31 area 0.0.0.0" in out
    assert "router ospf / ospf router-id 192.0.2.1" in out
    assert "router ospf / redistribute bgp" in out
    assert "router ospf / redistribute kernel route-map fw-redist-ospf-rm" in out
    assert "route-map fw-redist-ospf-rm permit 1 / match ip address fw-redist-ospf-acl" in out
    # headers come before their lines: entering them in that order creates them
    assert out.index("interface peer7") < out.index("interface peer7 / ip ospf cost 100")


def test_interfaces_with_ospf_routing_are_advertised_as_flexiagent_does() -> None:
    lan = {"dev_id": "pci:0000:00:04.00", "addr": "192.168.10.1/24", "routing": ["OSPF"],
           "ospf": {"area": "7", "helloInterval": 10}}
    dhcp = {"dev_id": "pci:0000:00:05.00", "dhcp": "yes", "routing": ["OSPF"]}
    wan = {"dev_id": "pci:0000:00:03.00", "addr": "192.0.2.10/24", "routing": ["NONE"]}
    out = lines(render(from_params(peers=[peer7()], interfaces=[lan, dhcp, wan])))
    assert [x for x in out if " / network " in x] == [
        "router ospf / network 10.100.0.16/31 area 0.0.0.0",
        "router ospf / network 192.168.10.0/24 area 0.0.0.7"]
    # alone, without a peer or add-ospf, it still makes OSPF run
    assert "router ospf / network 192.168.10.0/24 area 0.0.0.7" in lines(
        render(from_params(interfaces=[lan])))


def test_peer_area_and_address_are_canonical() -> None:
    p = peer_routing(9, {"addr": "10.100.0.19/31", "ospf-area": "5"})
    assert p.routing == "ospf" and p.ospf_cost is None and p.ospf_area == "0.0.0.5"
    assert p.interface == "peer9"
    out = lines(render(from_params(peers=[p])))
    assert "router ospf / network 10.100.0.18/31 area 0.0.0.5" in out
    assert not any("ip ospf cost" in line for line in out)


def test_bgp_peer_puts_nothing_in_ospf_and_bgp_neighbor_is_rendered_canonically() -> None:
    model = from_params(peers=[peer7(routing="bgp")], bgp=BGP, filters=[FILTER])
    out = lines(render(model))
    assert not any(line.startswith(("interface", "router ospf")) for line in out)
    head = "router bgp 65001"
    for expected in (
        f"{head} / bgp router-id 192.0.2.1",
        f"{head} / no bgp ebgp-requires-policy",
        f"{head} / bgp disable-ebgp-connected-route-check",
        f"{head} / bgp bestpath as-path multipath-relax",
        f"{head} / neighbor 10.100.0.17 remote-as 65010",
        f"{head} / neighbor 10.100.0.17 password {PASSWORD}",
        f"{head} / neighbor 10.100.0.17 disable-connected-check",
        f"{head} / neighbor 10.100.0.17 timers 30 90",
        f"{head} / address-family ipv4 unicast / network 192.168.1.0/24",
        f"{head} / address-family ipv4 unicast / redistribute ospf",
        f"{head} / address-family ipv4 unicast / neighbor 10.100.0.17 route-map in-f in",
        f"{head} / address-family ipv4 unicast / no neighbor 10.100.0.17 send-community extended",
        f"{head} / address-family ipv4 unicast / no neighbor 10.100.0.17 send-community large",
    ):
        assert expected in out, expected
    # FRR prints neither the default TTL nor the implicit activate: rendering them would churn
    assert not any("ebgp-multihop" in line or "activate" in line for line in out)
    assert out.index(f"{head} / neighbor 10.100.0.17 remote-as 65010") < out.index(
        f"{head} / neighbor 10.100.0.17 password {PASSWORD}")


@pytest.mark.parametrize(("kind", "off"), [
    ("all", []), ("both", ["large"]), ("", ["all"]),
    ("extended", ["", "large"]), ("large", ["", "extended"])])
def test_send_community_is_rendered_as_the_kinds_switched_off(kind: str, off: list[str]) -> None:
    bgp = {**BGP, "neighbors": [{**BGP["neighbors"][0], "sendCommunity": kind,  # type: ignore[index]
                                 "multiHop": 3}]}
    out = lines(render(from_params(bgp=bgp)))
    got = sorted(line.rsplit("send-community", 1)[1].strip() for line in out
                 if "send-community" in line)
    assert got == sorted(off)
    assert "router bgp 65001 / neighbor 10.100.0.17 ebgp-multihop 3" in out


def test_routing_filter_groups_rules_by_priority_and_ends_with_the_default() -> None:
    out = lines(render(from_params(filters=[FILTER])))
    assert out == [
        "access-list rm_in-f_group_0 seq 5 permit 10.10.0.0/16",
        "access-list rm_in-f_group_0 seq 10 permit 10.20.0.0/16",
        "access-list rm_in-f_group_1 seq 5 permit 10.30.0.0/16",
        "route-map in-f permit 5",
        "route-map in-f permit 5 / description from the peer",
        "route-map in-f permit 5 / match ip address rm_in-f_group_0",
        "route-map in-f permit 10",
        "route-map in-f permit 10 / description from the peer",
        "route-map in-f permit 10 / match ip address rm_in-f_group_1",
        "route-map in-f permit 10 / set ip next-hop 10.100.0.17",
        "route-map in-f deny 15",
    ]


def test_static_routes_enter_the_redistribution_access_lists_in_a_stable_order() -> None:
    routes = [{"addr": "10.9.0.0/16", "via": "10.100.0.17", "redistributeViaOSPF": True,
               "redistributeViaBGP": True},
              {"addr": "10.8.0.0/16", "via": "10.100.0.17", "redistributeViaOSPF": True,
               "redistributeViaBGP": False}]
    a = render(from_params(peers=[peer7()], bgp=BGP, routes=routes))
    b = render(from_params(peers=[peer7()], bgp=BGP, routes=routes[::-1]))
    assert a == b
    out = lines(a)
    assert "access-list fw-redist-ospf-acl seq 5 permit 10.8.0.0/16" in out
    assert "access-list fw-redist-ospf-acl seq 10 permit 10.9.0.0/16" in out
    assert "access-list fw-redist-bgp-acl seq 5 permit 10.9.0.0/16" in out
    assert not any("fw-redist-bgp-acl" in line and "10.8.0.0" in line for line in out)


def test_a_bgp_peers_ospf_fields_are_not_read_as_flexiagent_reads_them() -> None:
    """flexiManage sends ospf-cost/ospf-area for every peer (a string, only checked > 0):
    a BGP peer's are neither refused nor rendered."""
    peer = peer_routing(3, {"addr": "10.100.0.6/31", "routing": "bgp", "ospf-cost": "10.5",
                            "ospf-area": "backbone"})
    assert (peer.routing, peer.ospf_cost, peer.ospf_area) == ("bgp", None, "0.0.0.0")
    with pytest.raises(RoutingModelError, match="ospf-cost"):
        peer_routing(3, {"addr": "10.100.0.6/31", "routing": "ospf", "ospf-cost": "10.5"})


def test_empty_model_renders_nothing() -> None:
    assert render(from_params()) == ()


@pytest.mark.parametrize(("make", "field"), [
    (lambda: bgp_settings({**BGP, "localAsn": "AS1"}), "localAsn"),
    (lambda: bgp_settings({**BGP, "neighbors": [{"ip": "10.1", "remoteAsn": "1"}]}), "ip"),
    (lambda: bgp_settings({**BGP, "neighbors": [
        {"ip": "10.0.0.1", "remoteAsn": "1", "sendCommunity": "some"}]}), "sendCommunity"),
    (lambda: routing_filter({"name": "f", "rules": [
        {"route": "10.0.0.0/8", "action": "allow", "priority": 1}]}), "0.0.0.0/0"),
    (lambda: peer_routing(3, {"addr": "10.100.0.6/31", "routing": "rip"}), "routing"),
    (lambda: peer_routing(3, {"addr": "10.100.0.6/31", "ospf-area": "backbone"}), "ospf-area"),
    (lambda: from_params(interfaces=[{"dev_id": "x", "addr": "lan", "routing": ["OSPF"]}]),
     "add-interface x.addr"),
    # FRR takes one word; a newline would add lines to the vtysh -f file
    (lambda: bgp_settings({**BGP, "neighbors": [
        {"ip": "10.0.0.1", "remoteAsn": "1", "password": "two words"}]}), "password"),
    (lambda: bgp_settings({**BGP, "neighbors": [
        {"ip": "10.0.0.1", "remoteAsn": "1", "password": "pw\nrouter ospf"}]}), "password"),
])
def test_bad_params_are_refused_naming_the_field(make: object, field: str) -> None:
    with pytest.raises(RoutingModelError, match=field) as refused:
        make()  # type: ignore[operator]
    assert "words" not in str(refused.value) and "router ospf" not in str(refused.value)


RUNNING = f"""Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults traditional
hostname vm
service integrated-vtysh-config
!
interface peer7
 ip ospf cost 100
 ip ospf network point-to-point
exit
!
interface eth9
 ip ospf cost 5
exit
!
router bgp 65001
 neighbor 10.100.0.17 remote-as 65010
 neighbor 10.100.0.17 password {PASSWORD}
 !
 address-family ipv4 unicast
  network 192.168.1.0/24
  no neighbor 10.100.0.17 send-community
 exit-address-family
exit
!
router ospf
 network 10.100.0.16/31 area 0.0.0.0
 network 172.16.0.0/24 area 0.0.0.0
exit
!
end
"""


def test_running_config_parses_into_nested_paths() -> None:
    paths = lines(parse(RUNNING))
    assert "interface peer7 / ip ospf cost 100" in paths
    assert "router bgp 65001 / address-family ipv4 unicast / network 192.168.1.0/24" in paths
    assert "router ospf / network 172.16.0.0/24 area 0.0.0.0" in paths
    assert "frr version 8.4.4" in paths
    assert not any(p.endswith(("exit", "!", "end")) or "Building" in p for p in paths)


def test_desired_equal_to_running_is_an_empty_plan() -> None:
    desired = render(from_params(peers=[peer7()], ospf={}, bgp=BGP, filters=[FILTER]))
    running = desired + parse(RUNNING)
    assert diff(desired, running, set(desired)).empty


def test_removal_touches_only_owned_lines_and_keeps_operator_lines() -> None:
    running = parse(RUNNING)
    owned = {("interface peer7",), ("interface peer7", "ip ospf cost 100"),
             ("interface peer7", "ip ospf network point-to-point"),
             ("router ospf",), ("router ospf", "network 10.100.0.16/31 area 0.0.0.0")}
    plan = diff((), running, owned)
    cmds = plan.describe()
    assert "interface peer7 / no ip ospf cost 100" in cmds
    assert "interface peer7 / no ip ospf network point-to-point" in cmds
    assert "router ospf / no network 10.100.0.16/31 area 0.0.0.0" in cmds
    # the operator's network keeps `router ospf`; the interface header is never `no`-ed
    assert "no router ospf" not in cmds and "no interface peer7" not in cmds
    assert not any("172.16.0.0" in c or "eth9" in c for c in cmds)
    assert plan.additions == ()


def test_a_block_wholly_owned_is_removed_whole_and_a_neighbor_with_no_neighbor() -> None:
    running = parse(RUNNING)
    bgp_paths = {p for p in running if p[0] == "router bgp 65001"}
    assert diff((), running, bgp_paths).describe() == ["no router bgp 65001"]
    keep = {p for p in bgp_paths if "10.100.0.17" not in p[-1]}
    plan = diff(tuple(sorted(keep, key=len)), running, bgp_paths)
    assert plan.describe() == ["router bgp 65001 / no neighbor 10.100.0.17"]


def test_changed_value_is_removed_then_added_and_the_script_enters_each_context() -> None:
    running = parse(RUNNING)
    desired = render(from_params(peers=[peer7(**{"ospf-cost": "30"})]))
    plan = diff(desired, running, set(parse(RUNNING)) & {
        ("interface peer7", "ip ospf cost 100")})
    cmds = plan.describe()
    assert cmds.index("interface peer7 / no ip ospf cost 100") < cmds.index(
        "interface peer7 / ip ospf cost 30")
    script = plan.script()
    assert "interface peer7\n no ip ospf cost 100\n" in script
    assert script.count("exit") >= script.count("\ninterface ") + 1


def test_changed_remote_as_is_replaced_without_dropping_the_neighbor() -> None:
    running = parse(RUNNING)
    bgp = {**BGP, "neighbors": [{**BGP["neighbors"][0], "remoteAsn": "65011"}]}  # type: ignore[index]
    desired = render(from_params(bgp=bgp))
    plan = diff(desired, running, set(running))
    cmds = plan.describe()
    assert "router bgp 65001 / neighbor 10.100.0.17 remote-as 65011" in cmds
    assert not any(c.endswith("no neighbor 10.100.0.17") for c in cmds)


def test_passwords_are_masked_in_descriptions() -> None:
    running = parse(RUNNING)
    plan = diff((), running, set(running))
    assert PASSWORD not in " ".join(plan.describe())
    assert mask(f"neighbor 1.2.3.4 password {PASSWORD}") == "neighbor 1.2.3.4 password ******"


def test_empty_route_map_entry_is_entered_and_left() -> None:
    desired = render(from_params(filters=[FILTER]))
    script = diff(desired, (), set()).script()
    assert "route-map in-f deny 15\nexit\n" in script



def test_point_to_point_is_not_expected_in_print_on_a_point_to_point_interface() -> None:
    with_cost = render(from_params(peers=[peer7()]))
    out = lines(elide_defaults(with_cost, {"peer7"}))
    assert "interface peer7 / ip ospf cost 100" in out
    assert "interface peer7 / ip ospf network point-to-point" not in out
    assert lines(elide_defaults(with_cost, {"peer9"})) == lines(with_cost)
    no_cost = render(from_params(peers=[peer_routing(7, {"addr": "10.100.0.16/31"})]))
    out = lines(elide_defaults(no_cost, {"peer7"}))
    assert not any(line.startswith("interface") for line in out)  # FRR prints no empty block
    assert "router ospf / network 10.100.0.16/31 area 0.0.0.0" in out


def test_modify_routing_bgp_replaces_only_its_four_keys() -> None:
    modify = {"localAsn": "65001", "redistributeOspf": False,
              "neighbors": [{"ip": "10.100.0.19", "remoteAsn": "65011"}], "networks": []}
    merged = merge_modify_bgp(BGP, modify)
    bgp = bgp_settings(merged)
    assert str(bgp.router_id) == "192.0.2.1" and bgp.best_path_multipath_relax
    assert [str(n.ip) for n in bgp.neighbors] == ["10.100.0.19"]
    assert bgp.networks == () and not bgp.redistribute_ospf
