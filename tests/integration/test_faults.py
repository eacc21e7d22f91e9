"""Faults during an apply: the VPP API connection drops while VPP keeps its state,
the state dir's disk fills, the store is corrupt. Nothing leaks, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.lab.vppsim.server import VppSim
from agent.peers.manager import AddPeer, JobError, PeerManager, RemovePeer
from agent.vpp.readers import read_observed
from tests.integration.test_peers_vpp import Agent
from tests.spec_factory import numbered_spec
from tests.vpp_leaks import differences


@pytest.fixture
async def agent(sim: VppSim, short_dir: Path) -> AsyncIterator[Agent]:
    a = Agent(sim.socket_path, short_dir / "state")
    await a.start()
    try:
        yield a
    finally:
        await a.close()


async def supervise(manager: PeerManager) -> None:
    """One round of what supervise_forever does: reconcile when out of sync."""
    if manager.vpp.connected and not manager.in_sync:
        await manager.reconcile()


async def converged(agent: Agent, sim: VppSim, timeout: float = 10.0) -> None:
    """Within `timeout`, VPP shows exactly the acknowledged peers (no leftover tunnel,
    profile, address or route) and the agent says it is in sync."""
    deadline = time.monotonic() + timeout
    while True:
        await supervise(agent.manager)
        diff = differences(sim, agent.manager.desired, agent.manager.dynamic_routes)
        if agent.manager.in_sync and not diff:
            return
        assert time.monotonic() < deadline, (agent.manager.reconcile_error, diff)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("after", [0, 7, 300, 1500])
async def test_api_connection_dropped_mid_apply_is_finished_by_reconcile(
        sim: VppSim, agent: Agent, after: int) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    specs = [numbered_spec(n) for n in range(10, 110)]
    sim.inject_disconnect(after=after)
    with pytest.raises(JobError) as info:
        await agent.manager.apply([AddPeer(s) for s in specs])
    # the truth: VPP may hold part of the job, it was not restored
    assert "reconcile VPP to the last acknowledged state" in str(info.value)
    assert "restored" not in str(info.value)
    assert set(agent.manager.desired) == {1}
    await converged(agent, sim)
    # the tunnel ids are free again
    await agent.manager.apply([AddPeer(s) for s in specs])
    assert len(agent.manager.desired) == 101
    await converged(agent, sim)
    sim.inject_disconnect(after=after % 600)  # a removal writes ~7 steps per peer
    with pytest.raises(JobError) as info:
        await agent.manager.apply([RemovePeer(s.tunnel_id) for s in specs])
    assert "restored" not in str(info.value)
    await converged(agent, sim)
    assert len(agent.manager.desired) == 101


async def test_reconcile_removes_its_own_orphans_and_nothing_else(
        sim: VppSim, agent: Agent) -> None:
    foreign = await agent.vpp.call("ipip_add_tunnel", tunnel={
        "instance": 500, "src": IPv4Address("192.168.1.10"), "dst": IPv4Address("198.51.100.50"),
        "table_id": 0, "flags": 0, "mode": 0, "dscp": 0})
    await agent.vpp.call("ikev2_profile_add_del", name="vendor-x", is_add=True)
    await agent.vpp.call("ikev2_profile_add_del", name="peer-x1", is_add=True)
    # an orphan of ours: programmed, then forgotten with no intent left (a store replaced
    # by a backup, a crash between VPP and the disk)
    await agent.manager.apply([AddPeer(numbered_spec(3)), AddPeer(numbered_spec(4))])
    agent.store.commit([], [3])
    agent.manager.desired.pop(3)
    agent.manager._reconciled_generation = 0
    await agent.manager.reconcile()
    obs = await read_observed(agent.vpp)
    assert set(obs.tunnels) == {4, 500}
    assert obs.tunnels[500].sw_if_index == foreign.sw_if_index
    assert set(sim.state.profiles) == {"vendor-x", "peer-x1", "peer-4"}
    assert differences(sim, agent.manager.desired) == [
        "tunnels ['ipip500'] differ", "profiles ['peer-x1', 'vendor-x'] differ"]
