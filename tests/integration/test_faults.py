"""Faults during an apply: the VPP API connection drops while VPP keeps its state,
the state dir's disk fills, the store is corrupt. Nothing leaks, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.jobs.dispatch import STORE_LOST_SIGNATURE
from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer, RemovePeer
from agent.peers.manager import JobError, PeerManager
from agent.peers.store import PeerStore
from agent.vpp.readers import read_observed
from tests.fixtures import example_request
from tests.integration.test_peers_vpp import Agent
from tests.spec_factory import numbered_spec
from tests.vpp_leaks import differences
from tests.waiting import until, until_async


def _config(sim: VppSim) -> dict[str, Any]:
    """VPP's configuration by name: without SAs (they negotiate on their own), profile
    indexes (a rollback re-creates a profile) and PSKs (never printed by a failing test)."""
    snap = sim.snapshot()
    snap.pop("sas", None)
    snap["profiles"] = {name: {k: v for k, v in p.items() if k not in ("index", "auth")}
                        for name, p in snap["profiles"].items()}
    return snap


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


# -- a store that cannot be read ----------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not an sqlite database\n" * 200)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 100])
    else:  # a valid database whose row does not parse
        db = sqlite3.connect(path)
        db.execute("UPDATE peers SET spec = '{\"tunnel_id\": 1' WHERE tunnel_id = 1")
        db.commit()
        db.close()


async def _restart(sim: VppSim, state: Path) -> Agent:
    again = Agent(sim.socket_path, state)
    await again.vpp.start()
    await again.vpp.wait_connected(5)
    return again


@pytest.mark.parametrize("how", ["garbage", "truncated", "bad-row"])
async def test_a_corrupt_store_is_moved_aside_and_nothing_is_removed_until_sync(
        sim: VppSim, short_dir: Path, how: str) -> None:
    state = short_dir / "state"
    first = Agent(sim.socket_path, state)
    await first.start()
    specs = [numbered_spec(n) for n in range(1, 41)]
    await first.manager.apply([AddPeer(s) for s in specs])
    await first.close()
    _corrupt(state / "peers.sqlite", how)
    before = await _tunnels(sim)
    again = await _restart(sim, state)
    try:
        assert again.store.recovered is not None
        kept = list(state.glob("peers.sqlite.corrupt-*"))
        assert [p.name for p in kept if not p.name.endswith(("-wal", "-shm"))]
        assert again.manager.desired == {}
        for _ in range(3):
            await again.manager.reconcile()
        assert not again.manager.in_sync  # the hash says so: the controller sends sync-device
        assert await _tunnels(sim) == before  # nothing removed while the state is unknown
        # the controller's sync: 1..30 stay (not re-created), 31..40 go
        await again.manager.sync(specs[:30])
        assert again.manager.in_sync
        after = await _tunnels(sim)
        assert after == {t: sw for t, sw in before.items() if t <= 30}
        assert differences(sim, again.manager.desired) == []
        assert set(PeerStore(state).load()[0]) == set(range(1, 31))
    finally:
        await again.close()


async def test_without_a_sync_the_grace_time_ends_the_wait(
        sim: VppSim, short_dir: Path) -> None:
    state = short_dir / "state"
    first = Agent(sim.socket_path, state)
    await first.start()
    await first.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 6)])
    await first.close()
    _corrupt(state / "peers.sqlite", "garbage")
    again = await _restart(sim, state)
    try:
        await again.manager.reconcile()
        assert len(await _tunnels(sim)) == 5
        again.manager._grace_until = time.monotonic()  # as if recovery_grace had passed
        await converged(again, sim)
        assert await _tunnels(sim) == {}
    finally:
        await again.close()


async def _tunnels(sim: VppSim) -> dict[int, int]:
    """tunnel id -> sw_if_index of the ipip tunnels in VPP."""
    return {int(itf.name[4:]): i for i, itf in sim.state.interfaces.items()
            if itf.name.startswith("ipip")}


# -- a full disk under the state dir ----------------------------------------------------------


@pytest.mark.parametrize("step", ["begin", "commit"])
async def test_a_store_write_failure_fails_the_job_and_restores_vpp(
        sim: VppSim, agent: Agent, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    before = _config(sim)
    real = getattr(agent.store, step)

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(agent.store, step, full)
    specs = [numbered_spec(n) for n in range(2, 22)]
    with pytest.raises(JobError) as info:
        await agent.manager.apply([AddPeer(s) for s in specs] + [RemovePeer(1)])
    text = str(info.value)
    assert "database or disk is full" in text
    assert ("VPP was not changed" if step == "begin" else "VPP restored") in text
    assert _config(sim) == before
    assert set(agent.manager.desired) == {1}
    monkeypatch.setattr(agent.store, step, real)  # space is back
    await agent.manager.apply([AddPeer(s) for s in specs] + [RemovePeer(1)])
    await converged(agent, sim)
    assert set(agent.store.load()[0]) == set(range(2, 22))


@pytest.fixture
def small_fs(short_dir: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a state dir whose disk can really fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = short_dir / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


async def test_a_really_full_disk(sim: VppSim, small_fs: Path) -> None:
    a = Agent(sim.socket_path, small_fs / "state")
    await a.start()
    try:
        await a.manager.apply([AddPeer(numbered_spec(1))])
        before = _config(sim)
        _fill(small_fs / "filler")
        specs = [numbered_spec(n) for n in range(2, 42)]
        with pytest.raises(JobError, match="disk is full|disk I/O"):
            await a.manager.apply([AddPeer(s) for s in specs])
        assert set(a.manager.desired) == {1}
        await converged(a, sim)
        assert _config(sim) == before
        (small_fs / "filler").unlink()  # space comes back
        await a.manager.apply([AddPeer(s) for s in specs])
        await converged(a, sim)
        assert len(a.store.load()[0]) == 41
    finally:
        await a.close()


async def test_a_later_job_does_not_forget_an_unfinished_undo(
        sim: VppSim, agent: Agent) -> None:
    """Tunnel 6 was half-made when the connection dropped (its intent is recorded, its
    ipip exists without the agent's other marks); a job for tunnel 7 commits before
    reconcile ran: reconcile must still remove tunnel 6's leftovers."""
    agent.store.begin([6])
    agent.manager._intents.add(6)
    await agent.vpp.call("ipip_add_tunnel", tunnel={
        "instance": 6, "src": IPv4Address("192.168.1.10"), "dst": IPv4Address("203.0.113.6"),
        "table_id": 0, "flags": 0, "mode": 0, "dscp": 0})
    agent.manager._reconciled_generation = 0
    await agent.manager.apply([AddPeer(numbered_spec(7))])
    assert agent.store.load()[1] == {6}
    await converged(agent, sim)
    assert set((await read_observed(agent.vpp)).tunnels) == {7}


async def test_the_daemon_starts_on_a_corrupt_store_and_asks_for_sync(
        sim: VppSim, short_dir: Path) -> None:
    """Through the whole agent and the controller double: no exit, out of sync, nothing
    removed from VPP, the sync-device adopts what VPP holds."""
    from tests.integration.test_agent_e2e import ok, running_agent

    params = example_request()["params"]
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("add-tunnel", params))
        await until(lambda: rig.agent.manager.in_sync)
    before = await _tunnels(sim)
    assert set(before) == {7}
    (short_dir / "state" / "peers.sqlite").write_bytes(b"garbage" * 1000)
    async with running_agent(sim, short_dir) as rig:
        reply = await rig.ctl.request("get-device-info")
        # a hash no chain reaches: flexiManage answers it with sync-device
        assert reply["msg"]["router-cfg-hash"] == STORE_LOST_SIGNATURE
        await rig.agent.manager.reconcile()
        assert await _tunnels(sim) == before
        ok(await rig.ctl.send_job("sync-device", {"requests": [
            {"entity": "agent", "message": "add-tunnel", "params": params}]}))
        assert await _tunnels(sim) == before  # adopted, not re-created
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == ""  # in sync after sync-device
        assert [s.tunnel_id for s in rig.agent.manager.desired.values()] == [7]


async def test_a_lost_store_asks_for_sync_until_one_comes_past_the_grace_and_a_restart(
        sim: VppSim, short_dir: Path) -> None:
    """Past the grace time the agent removes its objects from VPP; its hash must still
    say "sync me" (also after a restart), or flexiManage would show a device without
    its tunnels as synced and never send the sync-device that restores them."""
    from tests.integration.test_agent_e2e import ok, running_agent

    params = example_request()["params"]
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("add-tunnel", params))
        await until(lambda: rig.agent.manager.in_sync)
    (short_dir / "state" / "peers.sqlite").write_bytes(b"garbage" * 1000)
    async with running_agent(sim, short_dir, recovery_grace=0.2) as rig:
        manager = rig.agent.manager

        async def grace_over() -> bool:  # each reconcile looks at the grace time
            await manager.reconcile()
            return not manager.awaiting_sync

        await until_async(grace_over)
        assert await _tunnels(sim) == {}  # no sync within the grace time: removed
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == STORE_LOST_SIGNATURE
    async with running_agent(sim, short_dir) as rig:  # the store is readable again
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == STORE_LOST_SIGNATURE
        ok(await rig.ctl.send_job("sync-device", {"requests": [
            {"entity": "agent", "message": "add-tunnel", "params": params}]}))
        assert set(await _tunnels(sim)) == {7}
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == ""


async def test_a_sync_while_the_router_is_stopped_ends_the_lost_stores_sentinel(
        sim: VppSim, short_dir: Path) -> None:
    """flexiManage expects '' after its sync-device; a stopped router syncs the recorded
    configuration only, and that must end the sentinel too."""
    from tests.integration.test_agent_e2e import ok, running_agent

    params = example_request()["params"]
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("add-tunnel", params))
        ok(await rig.ctl.send_job("stop-router", {}))
    (short_dir / "state" / "peers.sqlite").write_bytes(b"garbage" * 1000)
    async with running_agent(sim, short_dir) as rig:
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == STORE_LOST_SIGNATURE
        ok(await rig.ctl.send_job("sync-device", {"requests": [
            {"entity": "agent", "message": "add-tunnel", "params": params}]}))
        reply = await rig.ctl.request("get-device-info")
        assert reply["msg"]["router-cfg-hash"] == ""
