"""Peers that share endpoints or routes: moves to a new tunnel id, shared monitor IPs,
redundant policy-based pairs. Against vppsim, through the manager as the daemon wires it."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer, ModifyTargets, RemovePeer
from agent.peers.manager import JobError
from agent.peers.spec import Identity, IdType, PeerSpec, TrafficSelector
from agent.vpp.readers import read_observed
from tests.integration.test_peers_vpp import Agent
from tests.spec_factory import numbered_spec
from tests.waiting import until

EIGHTS = IPv4Network("8.8.8.8/32")
REMOTE = TrafficSelector(0, 0, 65535, IPv4Address("172.16.0.0"), IPv4Address("172.16.255.255"))


def _paths(sim: VppSim, prefix: IPv4Network) -> list[int]:
    """sw_if_index of every path of `prefix` in table 0 (empty: no route)."""
    for route in sim.state.routes.values():
        if route.table_id == 0 and route.prefix == prefix:
            return sorted(p["sw_if_index"] for p in route.paths)
    return []


def _config(sim: VppSim) -> dict[str, Any]:
    """VPP's configuration, without the SAs (they negotiate on their own time), profile
    indexes (a re-created profile gets a new one) and PSKs (never printed by a failure)."""
    snap = {k: v for k, v in sim.snapshot().items() if k != "sas"}
    snap["profiles"] = {name: {k: v for k, v in p.items() if k not in ("index", "auth")}
                        for name, p in snap["profiles"].items()}
    return snap


def _eights(n: int) -> PeerSpec:
    return replace(numbered_spec(n), monitor_ips=(EIGHTS.network_address,))


async def _sw(agent: Agent, tid: int) -> int:
    return (await read_observed(agent.vpp)).tunnels[tid].sw_if_index


async def test_moving_a_peer_to_a_new_tunnel_id_in_one_job(sim: VppSim, agent: Agent) -> None:
    old = numbered_spec(1)
    await agent.manager.apply([AddPeer(old)])
    before = sim.snapshot()
    moved = replace(numbered_spec(9), dst=old.dst, addr=old.addr, monitor_ips=old.monitor_ips)
    for _ in range(3):
        await agent.manager.apply([RemovePeer(old.tunnel_id), AddPeer(moved)])
        assert set(agent.manager.desired) == {9}
        obs = await read_observed(agent.vpp)
        assert set(obs.tunnels) == {9} and set(obs.profiles) == {"peer-9"}
        assert obs.routes[obs.tunnels[9].sw_if_index] == {IPv4Network(f"{old.monitor_ips[0]}/32")}
        await agent.manager.apply([RemovePeer(9), AddPeer(old)])
        assert set(agent.manager.desired) == {1}
    # and a failure in the add half restores the removed peer exactly
    sim.inject_failure("ikev2_set_responder")
    with pytest.raises(JobError, match="restored to its previous state"):
        await agent.manager.apply([RemovePeer(old.tunnel_id), AddPeer(moved)])
    assert set(agent.manager.desired) == {1}
    obs = await read_observed(agent.vpp)
    assert set(obs.tunnels) == {1} and set(obs.profiles) == {"peer-1"}
    assert sim.snapshot().keys() == before.keys()


@pytest.mark.parametrize("order", ["first", "second", "both", "sync"])
async def test_a_monitor_ip_shared_by_two_tunnels(sim: VppSim, agent: Agent, order: str) -> None:
    a, b = _eights(1), _eights(2)
    await agent.manager.apply([AddPeer(a)])
    await agent.manager.apply([AddPeer(b)])
    sw_a, sw_b = await _sw(agent, 1), await _sw(agent, 2)
    assert _paths(sim, EIGHTS) == sorted([sw_a, sw_b])
    if order == "first":
        await agent.manager.apply([RemovePeer(1)])
        assert _paths(sim, EIGHTS) == [sw_b]
        assert (await agent.manager.reconcile()).writes == 0  # nothing missing, nothing to redo
        await agent.manager.apply([RemovePeer(2)])
    elif order == "second":
        await agent.manager.apply([RemovePeer(2)])
        assert _paths(sim, EIGHTS) == [sw_a]
        await agent.manager.apply([RemovePeer(1)])
    elif order == "both":
        await agent.manager.apply([RemovePeer(1), RemovePeer(2)])
    else:
        await agent.manager.sync([])
    assert _paths(sim, EIGHTS) == []
    assert agent.manager.desired == {}
    assert agent.manager.in_sync


async def test_redundant_policy_based_pair_to_one_remote_subnet(sim: VppSim,
                                                                agent: Agent) -> None:
    a = numbered_spec(1, remote_ts=REMOTE)
    b = numbered_spec(2, remote_ts=REMOTE)
    await agent.manager.apply([AddPeer(a), AddPeer(b)])
    subnet = IPv4Network("172.16.0.0/16")
    sw_a, sw_b = await _sw(agent, 1), await _sw(agent, 2)
    assert _paths(sim, subnet) == sorted([sw_a, sw_b])
    await agent.manager.apply([RemovePeer(2)])
    assert _paths(sim, subnet) == [sw_a]
    await agent.manager.apply([AddPeer(b)])
    await agent.manager.sync([])
    assert _paths(sim, subnet) == []
    assert sim.state.routes.keys() == {k for k in sim.state.routes
                                       if k[1] not in (subnet,)}
    obs = await read_observed(agent.vpp)
    assert obs.tunnels == {} and obs.profiles == {}


async def test_a_route_shared_with_a_tunnel_removed_while_vpp_was_away(
        sim: VppSim, agent: Agent) -> None:
    """Reconcile removes only its own path of a shared route."""
    a, b = _eights(1), _eights(2)
    await agent.manager.apply([AddPeer(a), AddPeer(b)])
    sw_b = await _sw(agent, 2)
    # the acknowledged state forgets peer 1 (as a crash after commit would leave it)
    agent.manager.desired.pop(1)
    agent.manager._intents.add(1)
    await agent.manager.reconcile()
    assert _paths(sim, EIGHTS) == [sw_b]
    assert set((await read_observed(agent.vpp)).tunnels) == {2}


@pytest.mark.parametrize(("change", "needle"), [
    (lambda: AddPeer(replace(numbered_spec(3), monitor_ips=(numbered_spec(3).dst,))),
     "peer.ips 203.0.113.3 is the tunnel's own peer address"),
    (lambda: AddPeer(replace(numbered_spec(3), monitor_ips=(IPv4Address("192.168.1.1"),))),
     "peer.ips 192.168.1.1 is in the WAN subnet 192.168.1.0/24"),
    (lambda: AddPeer(replace(numbered_spec(3), remote_ts=TrafficSelector(
        0, 0, 65535, IPv4Address("0.0.0.0"), IPv4Address("255.255.255.254")))),
     "ikev2.remote-ts 0.0.0.0-255.255.255.254 covers the tunnel's own peer address"),
    (lambda: AddPeer(replace(numbered_spec(3), remote_ts=TrafficSelector(
        0, 0, 65535, IPv4Address("192.168.0.0"), IPv4Address("192.168.3.255")))),
     "overlaps the WAN subnet 192.168.1.0/24"),
    (lambda: ModifyTargets(1, (numbered_spec(2).dst,), ()),
     "peer.ips 203.0.113.2 is the peer address of tunnel 2"),
])
async def test_routes_that_break_the_device_are_refused_and_write_nothing(
        sim: VppSim, agent: Agent, change: Any, needle: str) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1)), AddPeer(numbered_spec(2))])
    before, writes = _config(sim), sim.write_count
    with pytest.raises(JobError, match=re.escape(needle)):
        await agent.manager.apply([change()])
    assert sim.write_count == writes and _config(sim) == before
    assert set(agent.manager.desired) == {1, 2}


async def test_resolved_addresses_that_break_the_device_are_not_routed(
        sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1)), AddPeer(numbered_spec(2))])
    sw = await _sw(agent, 1)
    good = IPv4Address("198.51.100.77")
    await agent.manager.set_dynamic_routes(1, [
        IPv4Address("127.0.0.1"), IPv4Address("169.254.169.254"), IPv4Address("0.0.0.0"),
        IPv4Address("224.0.0.5"), IPv4Address("192.168.1.10"), numbered_spec(2).dst, good])
    assert agent.manager.dynamic_routes[1] == (good,)
    obs = await read_observed(agent.vpp)
    assert obs.routes[sw] == {IPv4Network(f"{numbered_spec(1).monitor_ips[0]}/32"),
                              IPv4Network(f"{good}/32")}
    # a peer added later is known to the check at once (its index follows the desired set)
    spec1, third = agent.manager.desired[1], numbered_spec(3)
    assert agent.manager.target_problem(spec1, third.dst) is None
    await agent.manager.apply([AddPeer(third)])
    assert agent.manager.target_problem(spec1, third.dst) == (
        "the peer address of tunnel 3: that tunnel's IKE/ESP would be diverted")


async def test_ids_longer_than_vpp_shows_do_not_flap_the_profile(
        sim: VppSim, agent: Agent) -> None:
    long_fqdn = ".".join(["a" * 60, "b" * 60, "example", "com"])  # 133 bytes
    spec = replace(numbered_spec(1), remote_id=Identity(IdType.FQDN, long_fqdn),
                   local_id=Identity(IdType.RFC822, "tunnel@" + "c" * 62 + ".example.net"))
    await agent.manager.apply([AddPeer(spec)])
    writes = sim.write_count
    agent.manager._reconciled_generation = 0  # as after an agent restart
    result = await agent.manager.reconcile()
    assert (result.writes, sim.write_count) == (0, writes), result.notes
    await agent.manager.sync([spec])
    assert sim.write_count == writes


async def test_drift_behind_the_agents_back_is_repaired(sim: VppSim, agent: Agent) -> None:
    spec = numbered_spec(1, remote_ts=REMOTE)
    await agent.manager.apply([AddPeer(spec)])
    before = _config(sim)
    sw = await _sw(agent, 1)
    # vppctl-style changes: a route gone, a profile gone
    await agent.vpp.call("ip_route_add_del", is_add=False, is_multipath=True, route={
        "table_id": 0, "prefix": IPv4Network("172.16.0.0/16"), "n_paths": 1,
        "paths": [{"sw_if_index": sw, "table_id": 0, "weight": 1, "preference": 0,
                   "type": 0, "flags": 0, "proto": 0, "n_labels": 0,
                   "label_stack": [{}] * 16}]})
    await agent.vpp.call("ikev2_profile_add_del", name="peer-1", is_add=False)
    assert agent.manager.in_sync  # nothing told the agent
    result = await agent.manager.check_drift()
    assert result.writes > 0 and agent.manager.drift_repairs == 1
    assert _config(sim) == before
    assert (await agent.manager.check_drift()).writes == 0


async def test_a_tunnel_set_admin_down_is_never_set_up_by_the_agent(
        sim: VppSim, agent: Agent) -> None:
    """Up without its IPsec protection a tunnel sends cleartext IPIP (VPP 26.06): only
    VPP's IKE, installing a child SA, sets it up. The drift check leaves it alone."""
    await agent.manager.apply([AddPeer(numbered_spec(1, remote_ts=REMOTE))])
    sw = await _sw(agent, 1)
    await until(lambda: sim.state.interfaces[sw].admin_up)  # by the child SA
    await agent.vpp.call("sw_interface_set_flags", sw_if_index=sw, flags=0)
    result = await agent.manager.check_drift()
    assert result.writes == 0 and not sim.state.interfaces[sw].admin_up


async def test_a_monitor_ip_that_is_the_peers_tunnel_address_is_left_to_vpps_route(
        sim: VppSim, agent: Agent) -> None:
    """The peer's end of the /31 is a natural monitor IP. VPP's connected route sends it
    into the tunnel already, and the agent leaves VPP's routes in that subnet out of
    what it reconciles: a /32 of its own there looked missing at every drift check."""
    base = numbered_spec(1)
    peer_end = base.addr.network.broadcast_address
    spec = replace(base, monitor_ips=(peer_end, IPv4Address("198.51.100.99")))
    await agent.manager.apply([AddPeer(spec)])
    sw = await _sw(agent, 1)
    obs = await read_observed(agent.vpp)
    assert obs.routes[sw] == {IPv4Network("198.51.100.99/32")}
    result = await agent.manager.check_drift()
    assert result.writes == 0 and agent.manager.drift_repairs == 0
    await agent.manager.apply([RemovePeer(1)])
    assert not [key for key in sim.state.routes if key[1] == IPv4Network(f"{peer_end}/32")]
