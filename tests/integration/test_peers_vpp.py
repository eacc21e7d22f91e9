"""Peer connections programmed into vppsim over its socket: state, rollback, sync, resync."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.lab.vppsim.handlers import WRITES
from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer, ModifyTargets, RemovePeer
from agent.peers.manager import JobError, PeerManager
from agent.peers.spec import TrafficSelector
from agent.peers.store import PeerStore
from agent.vpp.client import VppClient
from agent.vpp.plan import child_sa_lifetime
from agent.vpp.readers import read_observed
from tests.spec_factory import TEST_PSK, example_spec, numbered_spec
from tests.waiting import until


class Agent:
    """A manager wired to a VPP client and a store, as the daemon wires them."""

    def __init__(self, socket: Path, state: Path) -> None:
        self.vpp = VppClient(str(socket), call_timeout=2.0, backoff_min=0.05, backoff_max=0.2)
        self.store = PeerStore(state)
        self.manager = PeerManager(self.vpp, self.store, {}, sa_init_timeout=5.0,
                                   reinit_backoff_min=0.05)
        self.manager.load()
        self.vpp.add_connect_listener(self.manager.on_vpp_connect)

    async def start(self) -> None:
        await self.vpp.start()
        await self.vpp.wait_connected(5)
        await until(lambda: self.manager.in_sync)

    async def close(self) -> None:
        await self.vpp.close()
        self.store.close()


async def wait_up(manager: PeerManager, tunnel_id: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while manager.states[tunnel_id].status != "up":
        assert time.monotonic() < deadline, manager.states[tunnel_id]
        await manager.supervise_once()
        await asyncio.sleep(0.02)


async def test_example_add_tunnel_produces_the_expected_vpp_state(
        sim: VppSim, agent: Agent) -> None:
    result = await agent.manager.apply([AddPeer(example_spec())])
    assert any("IKE SA lifetime" in w for w in result.warnings)
    obs = await read_observed(agent.vpp)
    tun = obs.tunnels[7]
    assert (tun.src, tun.dst) == (IPv4Address("192.168.1.10"), IPv4Address("203.0.113.10"))
    sw = tun.sw_if_index
    assert obs.interfaces[sw].name == "ipip7"
    assert obs.interfaces[sw].mtu == 1500
    assert obs.addresses[sw] == {IPv4Interface("10.100.0.16/31")}
    assert obs.mss == {sw: 1310}
    assert obs.lcp == {sw: "peer7"}
    assert obs.routes[sw] == {IPv4Network("8.8.8.8/32")}
    p = obs.profiles["peer-7"]
    assert p.auth_method == 2 and p.auth_data == TEST_PSK.encode()
    assert p.local_id == (1, "198.51.100.7") and p.remote_id == (2, "gw.cloud.example")
    assert (p.ike.crypto_alg, p.ike.crypto_key_size, p.ike.integ_alg, p.ike.prf_alg,
            p.ike.dh_group) == (12, 256, 12, 5, 14)
    assert (p.esp.crypto_alg, p.esp.crypto_key_size, p.esp.integ_alg) == (12, 256, 12)
    assert p.lifetime == child_sa_lifetime(3600)[0] and p.tun_itf == sw
    assert (p.responder_sw_if_index, p.responder_addr) == (1, IPv4Address("203.0.113.10"))
    assert p.local_ts.is_full and p.remote_ts.is_full
    await wait_up(agent.manager, 7)
    assert agent.manager.states[7].child_sas == 1
    assert sim.snapshot()["interfaces"][sw][2] & 1  # admin-up


async def test_remove_restores_the_exact_previous_state(sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    await wait_up(agent.manager, 1)
    before = sim.snapshot()
    await agent.manager.apply([AddPeer(example_spec())])
    await wait_up(agent.manager, 7)
    await agent.manager.apply([RemovePeer(7)])
    assert sim.snapshot() == before
    assert set(agent.manager.desired) == {1}


async def test_modify_changes_only_routes(sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(example_spec())])
    sim.message_counts.clear()
    new_ips = (IPv4Address("9.9.9.9"), IPv4Address("1.1.1.1"))
    await agent.manager.apply([ModifyTargets(7, new_ips, ())])
    writes = {n: c for n, c in sim.message_counts.items() if n in WRITES}
    assert writes == {"ip_route_add_del": 3}
    obs = await read_observed(agent.vpp)
    assert obs.routes[obs.tunnels[7].sw_if_index] == {IPv4Network("9.9.9.9/32"),
                                                      IPv4Network("1.1.1.1/32")}


async def test_rollback_at_every_failure_point(sim: VppSim, agent: Agent) -> None:
    # one full add/remove first: the global liveness setting is then in place
    await agent.manager.apply([AddPeer(numbered_spec(1))])
    await agent.manager.apply([RemovePeer(1)])
    before = sim.snapshot()
    writes_before = sim.write_count
    await agent.manager.apply([AddPeer(example_spec())])
    steps = sim.write_count - writes_before
    await agent.manager.apply([RemovePeer(7)])
    assert sim.snapshot() == before
    assert steps == 18
    for k in range(steps):
        sim.inject_failure(after=k)
        with pytest.raises(JobError, match="restored to its previous state"):
            await agent.manager.apply([AddPeer(example_spec())])
        assert sim.snapshot() == before, f"state differs after a failure at step {k}"
        assert agent.manager.desired == {}
    assert agent.store.load() == ({}, set())


async def test_work_alongside_runs_while_vpp_works_and_never_breaks_the_job(
        sim: VppSim, agent: Agent) -> None:
    seen: list[int] = []

    def alongside() -> None:  # on a worker thread: what VPP had been sent by then
        seen.append(sim.write_count)

    before = sim.write_count
    await agent.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 4)],
                              alongside=alongside)
    assert len(seen) == 1 and before <= seen[0] <= sim.write_count  # once, from the VPP step on

    def broken() -> None:
        raise RuntimeError("the caller's bug")

    await agent.manager.apply([AddPeer(numbered_spec(4))], alongside=broken)
    assert set(agent.manager.desired) == {1, 2, 3, 4}  # committed all the same
    assert set(agent.store.load()[0]) == {1, 2, 3, 4}


async def test_a_job_reads_its_wan_addresses_once_not_once_per_peer(
        sim: VppSim, agent: Agent) -> None:
    before = sim.message_counts.get("ip_address_dump", 0)
    await agent.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 6)])
    assert sim.message_counts["ip_address_dump"] - before == 1  # one WAN, five peers


async def test_aggregated_is_all_or_nothing(sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(1)), AddPeer(numbered_spec(2))])
    await wait_up(agent.manager, 1)
    await wait_up(agent.manager, 2)
    names_before = _by_name(sim.snapshot())
    sim.inject_failure("ikev2_set_responder", after=1)  # the second new peer fails
    with pytest.raises(JobError, match="tunnel 4: set responder.*restored"):
        await agent.manager.apply([RemovePeer(1), AddPeer(numbered_spec(3)),
                                   AddPeer(numbered_spec(4))])
    # peer 1's profile was re-created by the rollback: its SA negotiates again
    await until(lambda: _by_name(sim.snapshot())["sas"] == names_before["sas"])
    assert _by_name(sim.snapshot()) == names_before
    assert set(agent.manager.desired) == {1, 2}
    assert set(agent.store.load()[0]) == {1, 2}
    # and the same job without a fault applies completely
    await agent.manager.apply([RemovePeer(1), AddPeer(numbered_spec(3)),
                               AddPeer(numbered_spec(4))])
    assert set(agent.manager.desired) == {2, 3, 4}
    obs = await read_observed(agent.vpp)
    assert set(obs.tunnels) == {2, 3, 4} and set(obs.profiles) == {"peer-2", "peer-3", "peer-4"}


def _by_name(snap: dict[str, Any]) -> Any:
    """The snapshot with interface indexes replaced by names (re-created objects get new ones)."""
    names = {i: v[0] for i, v in snap["interfaces"].items()}
    for phy, pair in snap["lcp"].items():  # linux-cp host interfaces are named by index
        names[pair["host_sw_if_index"]] = f"host-of-{names[phy]}"

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"'sw_if_index': (\d+)",
                          lambda m: f"'sw_if_index': {names.get(int(m.group(1)))!r}", value)
        if isinstance(value, dict):
            return {names.get(k, k) if isinstance(k, int) else k: sub(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(sub(v) for v in value)
        return value

    out = sub({k: v for k, v in snap.items() if k not in ("profiles", "lcp", "interfaces")})
    out["interfaces"] = {names[i]: v[1:] for i, v in snap["interfaces"].items()}
    out["lcp"] = {names[i]: {k: v for k, v in pair.items()
                             if k not in ("host_sw_if_index", "vif_index")}
                  for i, pair in snap["lcp"].items()}
    out["profiles"] = {n: {k: (names.get(v, v) if k == "tun_itf" else v)
                           for k, v in p.items() if k != "index"}
                       for n, p in snap["profiles"].items()}
    return out


async def test_sync_converges_and_is_idempotent_with_zero_writes(
        sim: VppSim, agent: Agent) -> None:
    a, b, c = numbered_spec(1), numbered_spec(2), numbered_spec(3)
    await agent.manager.apply([AddPeer(a), AddPeer(b)])
    b2 = replace(b, child_lifetime=7200)
    c_routes = replace(c, monitor_ips=(IPv4Address("10.77.0.1"),))
    await agent.manager.sync([b2, c_routes])
    assert set(agent.manager.desired) == {2, 3}
    obs = await read_observed(agent.vpp)
    assert set(obs.tunnels) == {2, 3}
    assert obs.profiles["peer-2"].lifetime == child_sa_lifetime(7200)[0]
    writes = sim.write_count
    result = await agent.manager.sync([b2, c_routes])
    assert sim.write_count == writes
    assert result.writes == 0
    with pytest.raises(JobError, match="same tunnel-id more than once"):
        await agent.manager.sync([b2, b2])


async def test_refusals_write_nothing(sim: VppSim, agent: Agent) -> None:
    writes = sim.write_count
    with pytest.raises(JobError, match="pfs is true"):
        await agent.manager.apply([AddPeer(example_spec(pfs=True))])
    with pytest.raises(JobError, match="src 192.168.1.99 is not an address of "
                                       "GigabitEthernet0/3/0"):
        await agent.manager.apply([AddPeer(example_spec(src=IPv4Address("192.168.1.99")))])
    with pytest.raises(JobError, match="dev_id pci:0000:00:09.00: no VPP interface"):
        await agent.manager.apply([AddPeer(example_spec(dev_id="pci:0000:00:09.00"))])
    await agent.manager.apply([AddPeer(example_spec())])
    writes = sim.write_count
    with pytest.raises(JobError, match="already exists with different parameters"):
        await agent.manager.apply([AddPeer(example_spec(child_lifetime=7200))])
    assert sim.write_count == writes
    # the same add again is a no-op success (the controller may re-send a job)
    result = await agent.manager.apply([AddPeer(example_spec())])
    assert result.writes == 0 and sim.write_count == writes


async def test_what_vpp_would_get_wrong_later_is_refused_now(sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(example_spec())])
    # another tunnel with the same ID pair: VPP would tear one down with the other
    twin = example_spec(tunnel_id=8, dst=IPv4Address("203.0.113.11"),
                        addr=IPv4Interface("10.100.0.18/31"))
    with pytest.raises(JobError, match="local ID 198.51.100.7 / remote ID gw.cloud.example "
                                       "are already used by tunnel 7"):
        await agent.manager.apply([AddPeer(twin)])
    # replacing the tunnel in one job is fine: the old one is gone by then
    await agent.manager.apply([RemovePeer(7), AddPeer(twin)])
    # VPP sends IKE from the WAN's first address, whatever the tunnel's src
    wan = next(i for i, itf in sim.state.interfaces.items() if itf.name == "GigabitEthernet0/3/0")
    await agent.manager.vpp.call("sw_interface_add_del_address", sw_if_index=wan, is_add=True,
                                 del_all=False, prefix="192.168.1.11/24")
    second = numbered_spec(9, src=IPv4Address("192.168.1.11"))
    with pytest.raises(JobError, match="src 192.168.1.11 is not the first address of "
                                       "GigabitEthernet0/3/0.*VPP always sends IKE from "
                                       "192.168.1.10"):
        await agent.manager.apply([AddPeer(second)])
    await agent.manager.apply([AddPeer(replace(second, src=IPv4Address("192.168.1.10")))])


async def test_policy_based_peer_routes_its_remote_selector(agent: Agent) -> None:
    remote = TrafficSelector(0, 0, 65535, IPv4Address("172.16.0.0"),
                             IPv4Address("172.16.3.255"))
    await agent.manager.apply([AddPeer(example_spec(remote_ts=remote, monitor_ips=()))])
    obs = await read_observed(agent.vpp)
    assert obs.routes[obs.tunnels[7].sw_if_index] == {IPv4Network("172.16.0.0/22")}


async def test_vpp_restart_reprograms_every_peer_and_sas_come_back(
        sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 6)])
    expected = _by_name(sim.snapshot())
    generation = agent.vpp.generation
    await sim.stop()
    await sim.start()  # a new, empty VPP on the same socket
    await until(lambda: agent.vpp.generation == generation + 1)
    await until(lambda: agent.manager.in_sync)
    for n in range(1, 6):
        await wait_up(agent.manager, n)
    got = _by_name(sim.snapshot())
    assert got["tunnels"] == expected["tunnels"]
    assert got["profiles"] == expected["profiles"]
    assert got["routes"] == expected["routes"]


async def test_a_reconcile_of_many_tunnels_logs_one_line_not_one_per_tunnel(
        sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 13)])
    generation = agent.vpp.generation
    with capture_logs() as logs:
        await sim.stop()
        await sim.start()
        await until(lambda: agent.vpp.generation == generation + 1)
        await until(lambda: agent.manager.in_sync)
    notes = [e for e in logs if e["event"] == "reconcile"]
    assert [e["log_level"] for e in notes].count("info") == 1
    summary = next(e for e in notes if e["log_level"] == "info")
    assert summary["changes"] == 12 and len(summary["first"]) == 3
    assert sum(e["log_level"] == "debug" for e in notes) == 12  # each one, at debug


async def test_restart_of_the_agent_with_vpp_in_sync_writes_nothing(
        sim: VppSim, short_dir: Path) -> None:
    first = Agent(sim.socket_path, short_dir / "state")
    await first.start()
    await first.manager.apply([AddPeer(numbered_spec(n)) for n in range(1, 4)])
    await first.close()
    writes = sim.write_count
    second = Agent(sim.socket_path, short_dir / "state")
    await second.start()
    try:
        assert set(second.manager.desired) == {1, 2, 3}
        assert sim.write_count == writes
    finally:
        await second.close()


@pytest.mark.parametrize("kill_after_writes", [5, 120, 400])
async def test_agent_sigkilled_mid_apply_leaks_nothing(
        sim: VppSim, short_dir: Path, kill_after_writes: int) -> None:
    state = short_dir / "state"
    first = Agent(sim.socket_path, state)
    await first.start()
    await first.manager.apply([AddPeer(numbered_spec(n)) for n in (1, 2)])
    await first.close()
    root = Path(__file__).resolve().parents[2]
    base = sim.write_count
    # VPP hangs after the job's kill_after_writes-th write (the worker's start-up
    # reconcile writes nothing), so the kill falls mid-job however fast the job runs
    sim.hang_after(kill_after_writes)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.apply_worker", str(sim.socket_path),
        str(state), "10", "40", cwd=root, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
    await until(lambda: sim.hung, timeout=10)
    proc.kill()
    await proc.wait()
    assert b"committed" not in await proc.stdout.read(), "the job finished before the kill"
    # as VPP does, what the dead agent had already sent is still applied
    sim.resume()
    await until(lambda: not sim.connections)
    assert sim.write_count - base >= kill_after_writes
    second = Agent(sim.socket_path, state)
    await second.start()
    try:
        assert set(second.manager.desired) == {1, 2}
        obs = await read_observed(second.vpp)
        assert set(obs.tunnels) == {1, 2}
        assert set(obs.profiles) == {"peer-1", "peer-2"}
        assert set(obs.lcp.values()) == {"peer1", "peer2"}
        assert set(obs.routes) <= {obs.tunnels[1].sw_if_index, obs.tunnels[2].sw_if_index}
        snap = sim.snapshot()
        names = {v[0] for v in snap["interfaces"].values() if v[1] != "virtio"}
        assert names == {"local0", "GigabitEthernet0/3/0", "ipip1", "ipip2"}
        hosts = {i for i, v in snap["interfaces"].items() if v[1] == "virtio"}
        assert hosts == {p["host_sw_if_index"] for p in snap["lcp"].values()}
        assert len(hosts) == 2
        assert second.store.load()[1] == set()
    finally:
        await second.close()


async def test_a_peer_can_be_removed_after_its_wan_address_changed(
        sim: VppSim, agent: Agent) -> None:
    await agent.manager.apply([AddPeer(example_spec())])
    # DHCP gave the WAN interface another address: the tunnel's src is gone
    await agent.vpp.call("sw_interface_add_del_address", sw_if_index=1, is_add=False,
                         prefix="192.168.1.10/24")
    await agent.vpp.call("sw_interface_add_del_address", sw_if_index=1, is_add=True,
                         prefix="192.168.1.77/24")
    with pytest.raises(JobError, match="src 192.168.1.10 is not an address"):
        await agent.manager.apply([AddPeer(numbered_spec(2))])
    await agent.manager.apply([RemovePeer(7)])
    obs = await read_observed(agent.vpp)
    assert obs.tunnels == {} and obs.profiles == {}
