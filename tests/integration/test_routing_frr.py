"""RoutingManager against real FRR (zebra, ospfd, bgpd) in test namespaces.

Topology: namespace ``dev`` (the device's FRR, driven only through RoutingManager)
and namespace ``peer`` (a third party's FRR, configured by hand) joined by a veth
standing in for the tunnel's Linux side: ``peer7`` 10.100.0.16/31 on the device,
``p7`` 10.100.0.17/31 on the peer. Each FRR has private vty/pid directories
(agent/lab/frr.py), never the host's frr service.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from probe_netns import Lab, netns_unavailable_reason, run_in_netns

from agent.lab.frr import Frr, missing
from agent.lab.vppsim.ike_strongswan import open_tun
from agent.routing.manager import RoutingError, RoutingManager, Vtysh
from agent.routing.model import RoutingModel, from_params, peer_routing
from tests.waiting import until

pytestmark = pytest.mark.netns

_SKIP = netns_unavailable_reason() or missing()
PASSWORD = "Top-Secret-Key-4711"
PEER_PREFIX = "198.51.100.0/24"  # the third party's network, advertised to the device
DEVICE_LAN = "192.168.1.0/24"  # the device's network (BGP `networks`)
DEVICE_STATIC = "10.77.0.0/16"  # an add-route via a LAN gateway, redistributed to the peer


def _strip(config: str) -> str:
    """running-config without the lines FRR varies by itself (none today; kept explicit)."""
    return "\n".join(line for line in config.splitlines()
                     if not line.startswith(("Building", "Current")))


@dataclass
class Topo:
    lab: Lab
    dev_ns: str
    peer_ns: str
    dev: Frr
    peer: Frr


@pytest.fixture
def topo() -> Iterator[Topo]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Lab() as lab:
        dev_ns, peer_ns = lab.netns("rdev"), lab.netns("rpeer")
        lab.veth(dev_ns, "peer7", "10.100.0.16/31", peer_ns, "p7", "10.100.0.17/31")
        lab.sh(dev_ns, "ip", "route", "add", "blackhole", DEVICE_LAN)
        # the kernel route add-route makes; a blackhole here: no LAN in this topology
        lab.sh(dev_ns, "ip", "route", "add", "blackhole", DEVICE_STATIC)
        lab.sh(peer_ns, "ip", "route", "add", "blackhole", PEER_PREFIX)
        with Frr(dev_ns, "dev") as dev, Frr(peer_ns, "peer") as peer:
            yield Topo(lab, dev_ns, peer_ns, dev, peer)


@pytest.fixture
async def manager(topo: Topo, tmp_path: Path) -> AsyncIterator[RoutingManager]:
    yield RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), tmp_path / "frr-owned.json")


def ospf_model(cost: str = "100", **extra: object) -> RoutingModel:
    peer = peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf", "ospf-cost": cost})
    return from_params(peers=[peer], ospf={"routerId": "192.0.2.1", "redistributeBgp": False},
                       **extra)  # type: ignore[arg-type]


BGP = {"routerId": "192.0.2.1", "localAsn": "65001", "redistributeOspf": False,
       "bestPathMultipathRelax": True,
       "neighbors": [{"ip": "10.100.0.17", "remoteAsn": "65010", "password": PASSWORD,
                      "inboundFilter": "from-peer", "outboundFilter": "",
                      "holdInterval": "9", "keepaliveInterval": "3",
                      "sendCommunity": "standard", "multiHop": 1}],
       "networks": [{"ipv4": "192.168.1.1/24"}]}
FILTER = {"name": "from-peer", "description": "what we take from the peer",
          "rules": [{"route": "0.0.0.0/0", "action": "deny", "nextHop": "", "priority": 0},
                    {"route": PEER_PREFIX, "action": "allow", "nextHop": "", "priority": 1}]}
ROUTE = {"addr": DEVICE_STATIC, "via": "192.168.1.254", "redistributeViaOSPF": True,
         "redistributeViaBGP": True}


def bgp_model() -> RoutingModel:
    peer = peer_routing(7, {"addr": "10.100.0.16/31", "routing": "bgp"})
    return from_params(peers=[peer], ospf={}, bgp=BGP, filters=[FILTER], routes=[ROUTE])


def full_model() -> RoutingModel:
    peer = peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf", "ospf-cost": "100"})
    return from_params(peers=[peer], ospf={"routerId": "192.0.2.1", "redistributeBgp": True},
                       bgp=BGP, filters=[FILTER], routes=[ROUTE])


async def test_apply_then_reapply_changes_nothing(topo: Topo, manager: RoutingManager) -> None:
    plan = await manager.apply(full_model())
    assert not plan.empty
    config = topo.dev.running_config()
    for line in ("interface peer7", " ip ospf network point-to-point", " ip ospf cost 100",
                 " network 10.100.0.16/31 area 0.0.0.0", " ospf router-id 192.0.2.1",
                 "router bgp 65001", " neighbor 10.100.0.17 remote-as 65010",
                 " neighbor 10.100.0.17 timers 3 9", "  network 192.168.1.0/24",
                 "  neighbor 10.100.0.17 route-map from-peer in",
                 f"access-list fw-redist-bgp-acl seq 5 permit {DEVICE_STATIC}",
                 "route-map from-peer deny 10"):
        assert line in config.splitlines(), line
    again = await manager.apply(full_model())
    assert again.empty, again.describe()
    assert topo.dev.running_config() == config


async def test_every_send_community_and_multihop_form_converges(
        topo: Topo, manager: RoutingManager) -> None:
    for kind in ("all", "both", "standard", "extended", "large", ""):
        for hop in (1, 4):
            neighbor = {**BGP["neighbors"][0], "sendCommunity": kind,  # type: ignore[index]
                        "multiHop": hop}
            model = from_params(bgp={**BGP, "neighbors": [neighbor]})
            await manager.apply(model)
            assert (await manager.apply(model)).empty, (kind, hop)


async def test_an_ibgp_neighbour_with_multihop_and_a_spaced_description_converge(
        topo: Topo, manager: RoutingManager) -> None:
    """FRR ignores ebgp-multihop for an iBGP neighbour (it is never printed) and prints
    a route-map description with single spaces: neither may fail the read-back."""
    ibgp = {**BGP["neighbors"][0], "remoteAsn": "65001", "multiHop": 3}  # type: ignore[index]
    spaced = {**FILTER, "description": "  what we  take\tfrom the peer "}
    model = from_params(bgp={**BGP, "neighbors": [ibgp]}, filters=[spaced])
    await manager.apply(model)
    config = topo.dev.running_config().splitlines()
    assert " description what we take from the peer" in config
    assert (await manager.apply(model)).empty


async def test_interfaces_with_ospf_routing_converge(
        topo: Topo, manager: RoutingManager) -> None:
    """The `network` lines of LAN interfaces with OSPF routing, as FRR prints them."""
    lan = {"dev_id": "pci:0000:00:04.00", "addr": "192.168.10.1/24", "routing": ["OSPF"],
           "ospf": {"area": "7"}}
    model = ospf_model(interfaces=[lan])
    await manager.apply(model)
    config = topo.dev.running_config().splitlines()
    assert " network 192.168.10.0/24 area 0.0.0.7" in config
    assert (await manager.apply(model)).empty
    await manager.apply(ospf_model())  # the interface unassigned: its line goes
    assert " network 192.168.10.0/24 area 0.0.0.7" not in topo.dev.running_config()


async def test_removing_the_peer_leaves_no_trace(topo: Topo, manager: RoutingManager) -> None:
    before = _strip(topo.dev.running_config())
    await manager.apply(full_model())
    assert _strip(topo.dev.running_config()) != before
    await manager.apply(RoutingModel())
    assert _strip(topo.dev.running_config()) == before
    assert "10.100.0.1" not in topo.dev.running_config()


async def test_changing_the_cost_and_dropping_bgp_changes_only_that(
        topo: Topo, manager: RoutingManager) -> None:
    await manager.apply(full_model())
    await manager.apply(ospf_model(cost="30"))
    lines = topo.dev.running_config().splitlines()
    assert " ip ospf cost 30" in lines and " ip ospf cost 100" not in lines
    assert not any(line.startswith(("router bgp", "route-map from-peer")) for line in lines)
    assert (await manager.apply(ospf_model(cost="30"))).empty


async def test_operator_lines_survive_apply_and_removal(
        topo: Topo, manager: RoutingManager) -> None:
    operator = ("interface eth9", "ip ospf cost 5", "exit",
                "router ospf", "network 172.16.0.0/24 area 0.0.0.0", "exit",
                "access-list operator-acl seq 5 permit 10.55.0.0/16")
    topo.dev.configure(*operator)
    await manager.apply(full_model())
    # an operator line inside the agent's own BGP block
    topo.dev.configure("router bgp 65001", "neighbor 10.9.9.9 remote-as 65099")
    assert (await manager.apply(full_model())).empty
    await manager.apply(RoutingModel())
    lines = topo.dev.running_config().splitlines()
    for line in ("interface eth9", " ip ospf cost 5", " network 172.16.0.0/24 area 0.0.0.0",
                 "access-list operator-acl seq 5 permit 10.55.0.0/16",
                 "router bgp 65001", " neighbor 10.9.9.9 remote-as 65099"):
        assert line in lines, line
    assert not any("10.100.0." in line or "peer7" in line or "fw-redist" in line
                   for line in lines)


async def test_frr_restart_and_agent_restart_converge(topo: Topo, tmp_path: Path) -> None:
    state = tmp_path / "owned.json"
    first = RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), state)
    await first.apply(full_model())
    config = topo.dev.running_config()
    assert state.stat().st_mode & 0o777 == 0o600
    # agent restart: a new manager knows what it owns, and finds nothing to do
    second = RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), state)
    assert (await second.apply(full_model())).empty
    # FRR restart: it comes back empty; one apply restores exactly the same configuration
    topo.dev.restart()
    second = RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), state)
    assert not (await second.apply(full_model())).empty
    assert topo.dev.running_config() == config
    assert (await second.apply(full_model())).empty
    # what the first manager applied is removed by the restarted one
    await second.apply(RoutingModel())
    assert "peer7" not in topo.dev.running_config()


async def test_a_tunnel_tun_interface_converges_with_and_without_cost(
        topo: Topo, manager: RoutingManager, request: pytest.FixtureRequest) -> None:
    # a linux-cp TUN is POINTOPOINT: FRR takes `ip ospf network point-to-point` silently
    fd = run_in_netns(topo.dev_ns, lambda: open_tun("peer8"))  # held open: carrier up
    request.addfinalizer(lambda: os.close(fd))
    topo.lab.sh(topo.dev_ns, "ip", "addr", "add", "10.100.0.18/31", "dev", "peer8")
    topo.lab.sh(topo.dev_ns, "ip", "link", "set", "peer8", "up")
    before = topo.dev.running_config()
    for cost in ("7", ""):
        peer = peer_routing(8, {"addr": "10.100.0.18/31", "ospf-cost": cost})
        model = from_params(peers=[peer], ospf={})
        await manager.apply(model)
        assert (await manager.apply(model)).empty, cost
        iface = _vtysh_json(topo.dev, "show ip ospf interface peer8 json")["interfaces"]["peer8"]
        assert iface["networkType"] == "POINTOPOINT"
        assert iface["cost"] == (7 if cost else 10)  # 10: FRR's reference bandwidth default
    await manager.apply(RoutingModel())
    assert topo.dev.running_config() == before


async def test_a_refused_line_restores_the_previous_configuration(
        topo: Topo, manager: RoutingManager) -> None:
    await manager.apply(ospf_model())
    before = topo.dev.running_config()
    # FRR refuses the device's own address as a BGP neighbor
    bad = {**BGP, "neighbors": [{**BGP["neighbors"][0], "ip": "10.100.0.16"}]}  # type: ignore[index]
    with pytest.raises(RoutingError) as failed:
        await manager.apply(ospf_model(bgp=bad))
    assert "10.100.0.16" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    assert topo.dev.running_config() == before
    assert (await manager.apply(ospf_model())).empty


def _peer_ospf(topo: Topo) -> None:
    topo.peer.configure("interface p7", "ip ospf network point-to-point", "exit",
                        "router ospf", "ospf router-id 203.0.113.10",
                        "network 10.100.0.16/31 area 0.0.0.0", "redistribute kernel")


def _vtysh_json(frr: Frr, command: str) -> dict:  # type: ignore[type-arg]
    r = frr.vtysh(command)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}


def _kernel_routes(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "route"],
                          capture_output=True, text=True).stdout


async def test_ospf_adjacency_full_and_routes_learned(topo: Topo, manager: RoutingManager) -> None:
    _peer_ospf(topo)
    await manager.apply(ospf_model(routes=[ROUTE]))

    def full() -> bool:
        nbrs = _vtysh_json(topo.dev, "show ip ospf neighbor json").get("neighbors", {})
        return any(n.get("state", n.get("nbrState", "")).startswith("Full")
                   for entries in nbrs.values() for n in entries)

    await until(full, timeout=60)
    iface = _vtysh_json(topo.dev, "show ip ospf interface peer7 json")
    assert iface["interfaces"]["peer7"]["cost"] == 100
    await until(lambda: PEER_PREFIX in _vtysh_json(topo.dev, "show ip route ospf json"),
                timeout=30)
    # zebra installed it in the device's kernel table, via the peer's end of the /31
    learned = re.compile(rf"{re.escape(PEER_PREFIX)} (nhid \d+ )?via 10\.100\.0\.17 dev peer7")
    await until(lambda: learned.search(_kernel_routes(topo.dev_ns)) is not None, timeout=10)
    # the device's redistributed static route reaches the peer
    await until(lambda: DEVICE_STATIC in _vtysh_json(topo.peer, "show ip route ospf json"),
                timeout=30)
    [status] = await manager.peer_status()
    assert status == {"tunnel_id": 7, "interface": "peer7", "protocol": "ospf",
                      "neighbor": "10.100.0.17", "state": "Full/-", "learned": 1,
                      "advertised": 1}


async def test_a_new_ospf_router_id_takes_effect_while_adjacent(
        topo: Topo, manager: RoutingManager) -> None:
    """FRR keeps the old router-id while an area has a full neighbour (it only prints
    "use clear ip ospf process"), though its running-config shows the new one."""
    _peer_ospf(topo)
    await manager.apply(ospf_model())

    def full() -> bool:
        nbrs = _vtysh_json(topo.dev, "show ip ospf neighbor json").get("neighbors", {})
        return any(n.get("state", n.get("nbrState", "")).startswith("Full")
                   for entries in nbrs.values() for n in entries)

    await until(full, timeout=60)
    peer = peer_routing(7, {"addr": "10.100.0.16/31", "routing": "ospf", "ospf-cost": "100"})
    await manager.apply(from_params(peers=[peer], ospf={"routerId": "192.0.2.99"}))
    assert _vtysh_json(topo.dev, "show ip ospf json")["routerId"] == "192.0.2.99"


async def test_bgp_established_prefixes_both_ways_and_status(
        topo: Topo, manager: RoutingManager) -> None:
    assert await manager.bgp_status() == {}  # nothing configured yet
    topo.peer.configure("router bgp 65010", "bgp router-id 203.0.113.10",
                        "no bgp ebgp-requires-policy",
                        "neighbor 10.100.0.16 remote-as 65001",
                        f"neighbor 10.100.0.16 password {PASSWORD}",
                        "neighbor 10.100.0.16 timers 3 9",
                        "neighbor 10.100.0.16 timers connect 1",
                        "address-family ipv4 unicast", f"network {PEER_PREFIX}")
    await manager.apply(bgp_model())

    status: dict = {}  # type: ignore[type-arg]

    async def established() -> bool:
        status.clear()
        status.update(await manager.bgp_status())
        return status.get("peers", {}).get("10.100.0.17", {}).get("state") == "Established"

    await eventually(established, timeout=60, what=lambda: f"BGP Established: {status}")
    assert set(status) == {"routerId", "as", "failedPeers", "displayedPeers", "totalPeers",
                           "peers"}
    assert status["routerId"] == "192.0.2.1" and status["as"] == 65001
    peer = status["peers"]["10.100.0.17"]
    assert set(peer) == {"remoteAs", "msgRcvd", "msgSent", "peerUptime", "peerUptimeMsec",
                         "pfxRcd", "pfxSnt", "state", "peerState"}
    assert peer["remoteAs"] == 65010
    # prefixes both ways: the peer's network through the inbound filter, the device's
    # network and its redistributed static route to the peer
    await until(lambda: PEER_PREFIX in _vtysh_json(topo.dev, "show ip route bgp json"),
                timeout=30)
    await until(lambda: {DEVICE_LAN, DEVICE_STATIC}
                <= set(_vtysh_json(topo.peer, "show ip route bgp json")), timeout=30)
    status = await manager.bgp_status()
    assert status["peers"]["10.100.0.17"]["pfxRcd"] == 1
    assert status["peers"]["10.100.0.17"]["pfxSnt"] >= 2
    [peer_status] = await manager.peer_status()
    assert peer_status["protocol"] == "bgp" and peer_status["state"] == "Established"
    assert peer_status["learned"] == 1
    assert peer_status["advertised"] == status["peers"]["10.100.0.17"]["pfxSnt"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float,
                     what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout:g} s: {what()}")
        await asyncio.sleep(0.1)


def _bgp(**changes: Any) -> dict[str, Any]:
    neighbor = {**BGP["neighbors"][0], **changes.pop("neighbor", {})}  # type: ignore[index]
    return {**BGP, "neighbors": [neighbor, *changes.pop("more", [])], **changes}


def _filter(**changes: Any) -> dict[str, Any]:
    return {**FILTER, **changes}


# each step changes something the previous one had; applied in order
TRANSITIONS: list[tuple[str, RoutingModel]] = [
    ("full", full_model()),
    ("cost and area", from_params(
        peers=[peer_routing(7, {"addr": "10.100.0.16/31", "ospf-cost": "30",
                                "ospf-area": "0.0.0.4"})],
        ospf={"routerId": "192.0.2.2"}, bgp=BGP, filters=[FILTER], routes=[ROUTE])),
    ("second neighbor, new password, timers, community", from_params(
        ospf={}, filters=[FILTER], routes=[ROUTE],
        bgp=_bgp(neighbor={"password": "other-pw", "keepaliveInterval": "10",
                           "holdInterval": "30", "sendCommunity": "", "multiHop": 3},
                 more=[{"ip": "10.100.0.19", "remoteAsn": "65011", "sendCommunity": "large"}],
                 bestPathMultipathRelax=False, routerId=""))),
    ("first neighbor removed, remote-as changed", from_params(
        ospf={}, filters=[FILTER],
        bgp={**BGP, "neighbors": [{"ip": "10.100.0.19", "remoteAsn": "65012"}],
             "networks": []})),
    ("filter rules and description changed", from_params(
        ospf={}, bgp={**BGP, "neighbors": [{"ip": "10.100.0.19", "remoteAsn": "65012",
                                             "inboundFilter": "from-peer"}]},
        filters=[_filter(description="changed", rules=[
            {"route": "0.0.0.0/0", "action": "allow", "nextHop": "", "priority": 0},
            {"route": "10.1.0.0/16", "action": "deny", "nextHop": "", "priority": 1},
            {"route": "10.2.0.0/16", "action": "allow", "nextHop": "10.100.0.19",
             "priority": 2}])])),
    ("local ASN changed", from_params(ospf={}, bgp={**BGP, "localAsn": "65002"})),
    ("nothing", RoutingModel()),
]


async def test_every_transition_ends_where_a_fresh_apply_ends(topo: Topo, tmp_path: Path) -> None:
    state = tmp_path / "owned.json"
    for i, (name, model) in enumerate(TRANSITIONS):
        await RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), state).apply(model)
        changed = topo.dev.running_config()
        again = RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket), state)
        assert (await again.apply(model)).empty, name
        # the same model applied to an FRR that never saw the earlier steps
        topo.dev.restart()
        await RoutingManager(Vtysh(vty_socket=topo.dev.vty_socket),
                             tmp_path / f"fresh-{i}.json").apply(model)
        assert topo.dev.running_config() == changed, name
