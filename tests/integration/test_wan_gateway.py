"""A WAN gateway outside the WAN subnet (issue 15, case 6): a route into a tunnel to it, or
covering it, would take the default route's next hop into the tunnel. Against vppsim,
through the manager as the daemon wires it."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from agent.jobs.info import interface_entry
from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer, ModifyTargets
from agent.peers.manager import JobError
from agent.peers.spec import TrafficSelector
from agent.vpp.client import VppClient
from agent.vpp.readers import read_gateways, read_interfaces, read_observed, read_wan_facts
from tests.conftest import WAN
from tests.integration.test_peers_vpp import Agent
from tests.spec_factory import numbered_spec

GW = IPv4Address("172.31.1.1")  # on-link gateway of a cloud WAN, outside 192.168.1.0/24
HARM = "is the WAN gateway (next hop of the default route, outside the WAN subnet)"


async def _default_route_via(agent: Agent, gw: IPv4Address) -> None:
    wan = next(i.sw_if_index for i in (await read_interfaces(agent.vpp)).values()
               if i.name == "GigabitEthernet0/3/0")
    await agent.vpp.call("ip_route_add_del", is_add=True, is_multipath=False, route={
        "table_id": 0, "prefix": IPv4Network("0.0.0.0/0"), "n_paths": 1,
        "paths": [{"sw_if_index": wan, "table_id": 0, "weight": 1, "preference": 0,
                   "type": 0, "flags": 0, "proto": 0, "nh": {"address": {"ip4": gw}},
                   "n_labels": 0, "label_stack": [{}] * 16}]})


@pytest.mark.parametrize(("change", "needle"), [
    (lambda: AddPeer(replace(numbered_spec(2), monitor_ips=(GW,))),
     f"tunnel 2: peer.ips 172.31.1.1 {HARM}"),
    (lambda: AddPeer(replace(numbered_spec(2), remote_ts=TrafficSelector(
        0, 0, 65535, IPv4Address("172.31.0.0"), IPv4Address("172.31.255.255")))),
     "tunnel 2: ikev2.remote-ts 172.31.0.0-172.31.255.255 covers the WAN gateway 172.31.1.1"),
    (lambda: ModifyTargets(1, (GW,), ()), f"tunnel 1: peer.ips 172.31.1.1 {HARM}"),
])
async def test_routes_to_a_gateway_outside_the_wan_subnet_are_refused(
        sim: VppSim, agent: Agent, change: object, needle: str) -> None:
    await _default_route_via(agent, GW)
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    writes = sim.write_count
    with pytest.raises(JobError, match=re.escape(needle)):
        await agent.manager.apply([change()])  # type: ignore[operator]
    assert sim.write_count == writes and set(agent.manager.desired) == {1}


async def test_a_monitor_url_resolving_to_the_gateway_is_not_routed(
        sim: VppSim, agent: Agent) -> None:
    await _default_route_via(agent, GW)
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    good = IPv4Address("198.51.100.77")
    await agent.manager.set_dynamic_routes(1, [GW, good])
    assert agent.manager.dynamic_routes[1] == (good,)
    obs = await read_observed(agent.vpp)
    assert IPv4Network(f"{GW}/32") not in obs.routes[obs.tunnels[1].sw_if_index]


async def test_the_wan_facts_and_the_guard_read_the_default_routes_next_hop(
        sim: VppSim, agent: Agent) -> None:
    """Looked up alone (ip_route_lookup), not found in a dump of the whole table: without
    a default route VPP's entry is a drop path, which names no gateway."""
    assert [f.gateway for f in await read_wan_facts(agent.vpp, {})] == [""]
    assert await read_gateways(agent.vpp) == set()
    await _default_route_via(agent, GW)
    facts = await read_wan_facts(agent.vpp, {})
    assert [(f.name, f.gateway) for f in facts] == [("GigabitEthernet0/3/0", str(GW))]
    assert await read_gateways(agent.vpp) == {GW}


async def test_each_wans_metric_is_its_default_route_paths_preference(short_dir: Path) -> None:
    """Two WANs, default route paths at preference 0 and 100 (a flexiEdge's kernel
    metrics through linux-cp): registration and device info report metrics 0 and 100,
    which flexiManage needs distinct to let the WANs be assigned."""
    sim = VppSim(short_dir / "two.sock", interfaces=[
        WAN, ("GigabitEthernet0/4/0", "192.168.2.10/24")])
    await sim.start()
    vpp = VppClient(str(sim.socket_path))
    await vpp.start()
    try:
        await vpp.wait_connected(5)
        sw = {i.name: i.sw_if_index for i in (await read_interfaces(vpp)).values()}
        for name, gw, preference in (("GigabitEthernet0/3/0", "192.168.1.1", 0),
                                     ("GigabitEthernet0/4/0", "192.168.2.1", 100)):
            await vpp.call("ip_route_add_del", is_add=True, is_multipath=True, route={
                "table_id": 0, "prefix": IPv4Network("0.0.0.0/0"), "n_paths": 1,
                "paths": [{"sw_if_index": sw[name], "table_id": 0, "weight": 1,
                           "preference": preference, "type": 0, "flags": 0, "proto": 0,
                           "nh": {"address": {"ip4": IPv4Address(gw)}}, "n_labels": 0,
                           "label_stack": [{}] * 16}]})
        entries = [interface_entry(f) for f in await read_wan_facts(vpp, {})]
        assert [(e["name"], e["gateway"], e["metric"]) for e in entries] == [
            ("GigabitEthernet0/3/0", "192.168.1.1", "0"),
            ("GigabitEthernet0/4/0", "192.168.2.1", "100")]
    finally:
        await vpp.close()
        await sim.stop()
