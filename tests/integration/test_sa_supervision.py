"""SA supervision: states with reasons, re-initiation with capped backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer
from agent.peers.manager import EVENTS_PAUSED_FROM, PeerManager
from agent.peers.store import PeerStore
from agent.vpp.client import ConnectInfo, VppClient
from agent.vpp.kinds.tunnel import ref_name
from agent.vpp.messages import TableCheck
from tests.spec_factory import example_spec, numbered_spec
from tests.waiting import until


@pytest.fixture
async def manager(sim: VppSim, short_dir: Path) -> AsyncIterator[PeerManager]:
    vpp = VppClient(str(sim.socket_path), call_timeout=2.0)
    store = PeerStore(short_dir / "state")
    m = PeerManager(vpp, store, {}, reinit_backoff_min=0.1, reinit_backoff_max=0.4,
                    sa_init_timeout=0.3)
    m.load()
    await vpp.start()
    await vpp.wait_connected(5)
    try:
        yield m
    finally:
        await vpp.close()
        store.close()


async def supervise_until(m: PeerManager, tid: int, status: str, reason: str = "",
                          timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        await m.supervise_once()
        st = m.states[tid]
        if st.status == status and reason in st.reason:
            return
        assert time.monotonic() < deadline, (st.status, st.reason)
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("outcome", "reason"), [
    ("AUTH_FAILED", "AUTH_FAILED: authentication failed"),
    ("NO_PROPOSAL_CHOSEN", "NO_PROPOSAL_CHOSEN: the peer refused our ESP proposal"),
    ("TS_UNACCEPTABLE", "TS_UNACCEPTABLE: the peer narrowed the traffic selectors"),
    ("TIMEOUT", "no answer from peer 203.0.113.10"),
])
async def test_failures_end_down_with_a_reason_naming_them(
        sim: VppSim, manager: PeerManager, outcome: str, reason: str) -> None:
    sim.ike.script("peer-7", outcome)
    await manager.apply([AddPeer(example_spec())])
    await supervise_until(manager, 7, "down", reason)
    assert manager.states[7].child_sas == 0


async def test_lost_sa_is_reinitiated_with_capped_backoff(
        sim: VppSim, manager: PeerManager) -> None:
    await manager.apply([AddPeer(example_spec())])
    await supervise_until(manager, 7, "up")
    # the peer fails authentication for a while: attempts back off, capped
    sim.ike.script("peer-7", "AUTH_FAILED")
    sim.ike.peer_restart("peer-7")
    sim.message_counts.clear()
    start = time.monotonic()
    while time.monotonic() - start < 1.6:
        await manager.supervise_once()
        await asyncio.sleep(0.02)
    attempts = sim.message_counts["ikev2_initiate_sa_init"]
    # backoff 0.1, 0.2, 0.4, 0.4, ...: about 5 attempts in 1.6 s, never one per poll
    assert 3 <= attempts <= 7, attempts
    # each one a restart: the profile deleted (dropping what VPP has pending) and re-created
    assert sim.message_counts["ikev2_profile_add_del"] == 2 * attempts
    assert manager.states[7].status == "down"
    # the peer is fixed: the next attempt brings the tunnel back up
    sim.ike.script("peer-7", "UP")
    await supervise_until(manager, 7, "up", timeout=3.0)
    assert manager.states[7].reinitiations >= attempts
    assert manager.states[7].child_sas == 1


async def test_responder_waits_for_the_peer(sim: VppSim, manager: PeerManager) -> None:
    await manager.apply([AddPeer(example_spec(role="responder"))])
    await manager.supervise_once()
    assert sim.message_counts["ikev2_initiate_sa_init"] == 0
    assert manager.states[7].status != "up"


async def test_a_big_job_pauses_interface_events_and_reads_admin_state_after(
        sim: VppSim, manager: PeerManager) -> None:
    """VPP sends two interface events per tunnel a job creates, all about the agent's own
    changes: a job of EVENTS_PAUSED_FROM tunnels or more is applied without them, and
    the next poll reads every interface's admin state (another tunnel's event may have
    been missed meanwhile)."""
    await manager.on_vpp_connect(ConnectInfo(1, TableCheck({}, frozenset())))
    events: list[int] = []
    manager.vpp.add_event_listener(
        lambda name, msg: events.append(int(msg.sw_if_index))
        if name == "sw_interface_event" else None)
    small = [AddPeer(numbered_spec(n)) for n in range(1, EVENTS_PAUSED_FROM)]
    await manager.apply(small)  # one short of the threshold: events stay on
    await until(lambda: len(set(events)) >= len(small))
    await manager.supervise_once()  # the first poll reads the admin state anyway
    events.clear()
    big = [AddPeer(numbered_spec(n)) for n in range(100, 100 + EVENTS_PAUSED_FROM)]
    for change in big:  # no SA, so no admin-up event of theirs after the job either
        sim.ike.script(f"peer-{change.spec.tunnel_id}", "TIMEOUT")
    await manager.apply(big)
    big_indexes = {manager._refs[ref_name(c.spec.tunnel_id)] for c in big}
    # registered again: an existing tunnel's change is pushed, as before the job
    sim.ike.peer_restart("peer-1")
    first = manager._refs[ref_name(1)]
    await until(lambda: first in events)
    assert not big_indexes & set(events)
    sim.message_counts.clear()
    await manager.supervise_once()
    assert sim.message_counts["sw_interface_dump"] == 1
    await manager.supervise_once()  # the admin state is pushed again: SAs only
    assert sim.message_counts["sw_interface_dump"] == 1


async def test_an_sa_event_during_a_job_is_looked_at_when_the_job_ends(
        sim: VppSim, manager: PeerManager) -> None:
    """Supervision skips its poll while a job holds VPP; an interface event that woke it
    meanwhile (here: the peer restarted, VPP removed the child SA) is acted on as soon
    as the job ends, not at the next timed poll."""
    manager.sa_poll_interval = 60.0  # the timer cannot be what finds it
    await manager.on_vpp_connect(ConnectInfo(1, TableCheck({}, frozenset())))
    await manager.apply([AddPeer(example_spec())])
    await supervise_until(manager, 7, "up")
    async with asyncio.TaskGroup() as tg:
        supervising = tg.create_task(manager.supervise_forever())
        async with manager._lock:  # what a job holds while it changes VPP
            sim.ike.peer_restart("peer-7")
            await until(lambda: manager._wake.is_set())
            await until(lambda: not manager._wake.is_set())  # woken, found VPP busy
            assert manager.states[7].status == "up"
        await until(lambda: manager.states[7].status != "up", 5)
        supervising.cancel()
