"""Multilink policies programmed into vppsim's acl/abf through the agent's VPP client:
decisions follow tunnel health, reconcile writes nothing when in sync, failures roll
back, removal leaves nothing behind."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from agent.admin.policies import render_policies
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from agent.peers.spec import PeerSpec
from agent.policy.manager import PolicyManager
from agent.policy.model import PolicyError
from agent.vpp.client import VppClient
from agent.vpp.executor import ApplyError
from tests.spec_factory import example_spec
from tests.waiting import until

NO_INDEX = 0xFFFFFFFF
WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
LAN = ("GigabitEthernet0/4/0", "10.0.0.1/24")


@dataclass
class Snap:
    status: str
    rtt_ms: float = 10.0
    drop_rate: float = 0.0
    reason: str = ""
    settled: bool = True


def policy(fallback: str = "drop", order: str = "priority", prio: int = 10,
           wan_rx: bool = False) -> dict[str, Any]:
    return {"id": "pol1", "rules": [{
        "id": "r1", "priority": prio, "apply-on-wan-rx": wan_rx,
        "classification": {"prefix": {"ip": "172.16.0.0/16", "ports": "", "protocol": ""}},
        "action": {"links": [{"pathlabels": ["lblA"], "order": order},
                             {"pathlabels": ["lblB"], "order": "priority"}],
                   "order": "priority", "fallback": fallback}}]}


class Rig:
    def __init__(self, sim: VppSim, state: Path) -> None:
        self.sim = sim
        self.vpp = VppClient(str(sim.socket_path), call_timeout=2.0)
        self.peers: dict[int, PeerSpec] = {
            1: replace(example_spec(), tunnel_id=1, labels=("lblA",),
                       dst=IPv4Address("203.0.113.1"), addr=IPv4Interface("10.100.0.0/31")),
            2: replace(example_spec(), tunnel_id=2, labels=("lblB",),
                       dst=IPv4Address("203.0.113.2"), addr=IPv4Interface("10.100.0.2/31")),
        }
        self.health: dict[int, Snap] = {1: Snap("up"), 2: Snap("up")}
        self.manager = self.make(state)

    def make(self, state: Path) -> PolicyManager:
        return PolicyManager(self.vpp, lambda: self.peers, self.health.get,
                             lan_interfaces=[LAN[0]], wan_interfaces=[WAN[0]],
                             state_file=state / "policy.json", period=0.05)

    async def tunnels(self) -> dict[int, int]:
        out = {}
        for tid, spec in self.peers.items():
            r = await self.vpp.call("ipip_add_tunnel", tunnel={
                "instance": tid, "src": spec.src, "dst": spec.dst, "table_id": 0, "flags": 0,
                "mode": 0, "dscp": 0})
            out[tid] = int(r.sw_if_index)
        return out

    def abf(self) -> Any:
        return self.sim.handlers.acl_abf.state


@pytest.fixture
async def rig(short_dir: Path) -> AsyncIterator[Rig]:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN, LAN])
    await sim.start()
    r = Rig(sim, short_dir)
    await r.vpp.start()
    await r.vpp.wait_connected(5)
    try:
        yield r
    finally:
        await r.vpp.close()
        await sim.stop()


def forwarding(rig: Rig, itf: int = 2) -> list[tuple[int, list[tuple[int, int, str]]]]:
    """What vppsim's abf-input would use on interface `itf`: (priority, paths)."""
    return [(prio, sorted((p["type"], p["sw_if_index"], str(p["nh"])) for p in pol.paths))
            for prio, pol in rig.abf().forwarding(itf)]


async def test_apply_follows_health_and_reconcile_is_silent(rig: Rig) -> None:
    idx = await rig.tunnels()
    m = rig.manager
    writes = await m.apply(policy())
    assert writes == 3  # ACL, policy with path via peer 1, attachment on the LAN
    assert await m.apply(policy()) == 0  # sync-device with the same policy: converged
    assert forwarding(rig) == [(10, [(0, idx[1], "10.100.0.1")])]
    (acl,) = rig.abf().acls.values()
    assert acl.tag == "mlp:r1" and len(acl.rules) == 2
    before = rig.sim.write_count
    assert await m.reconcile() == 0 and rig.sim.write_count == before
    assert not await m.evaluate()

    rig.health[1] = Snap("down", reason="3 probes lost")
    assert await m.evaluate()
    assert forwarding(rig) == [(10, [(0, idx[2], "10.100.0.3")])]
    assert m.reprogrammings == 1
    assert m.status()["rules"][0]["chosen"] == "peer 2"
    assert "peer 1 down (3 probes lost)" in m.status()["rules"][0]["why"]

    rig.health[2] = Snap("down")
    assert await m.evaluate()
    assert forwarding(rig) == [(10, [(2, NO_INDEX, "0.0.0.0")])]  # fallback drop

    rig.health[1] = Snap("up")
    assert await m.evaluate()
    assert forwarding(rig) == [(10, [(0, idx[1], "10.100.0.1")])]
    assert m.reprogrammings == 3
    assert not await m.evaluate()  # steady: no flapping, no writes
    assert m.reprogrammings == 3

    text = render_policies(m.status(), now=m.status()["rules"][0]["since"] + 5)
    assert "r1" in text and "prefix 172.16.0.0/16" in text and "peer 1" in text
    assert "lblA (priority) > lblB (priority)" in text and "5s" in text

    assert await m.remove() == 3
    assert rig.abf().snapshot() == {"acls": {}, "abf_policies": {}, "abf_attachments": []}
    assert render_policies(m.status(), 0) == "no multilink policy installed\n"


async def test_by_destination_takes_the_rule_out_of_abf(rig: Rig) -> None:
    await rig.tunnels()
    rig.health.update({1: Snap("down"), 2: Snap("down")})
    m = rig.manager
    await m.apply(policy(fallback="by-destination"))
    assert rig.abf().policies == {} and rig.abf().attachments == {}
    assert len(rig.abf().acls) == 1  # the ACL stays, ready for when a link comes back
    rig.health[2] = Snap("up")
    assert await m.evaluate()
    assert len(forwarding(rig)) == 1


async def test_wan_rx_priority_change_and_restart_reconcile(rig: Rig, short_dir: Path) -> None:
    await rig.tunnels()
    m = rig.manager
    await m.apply(policy(wan_rx=True, prio=5))
    assert sorted(rig.abf().snapshot()["abf_attachments"])[0][1:3] == (1, 5)
    assert len(rig.abf().attachments) == 2  # WAN and LAN
    await m.apply(policy(prio=7))
    assert [a[1:3] for a in rig.abf().snapshot()["abf_attachments"]] == [(2, 7)]
    # a new agent (restart) loads the params and finds VPP in sync: zero writes
    again = rig.make(short_dir)
    again.load()
    assert await again.reconcile() == 0
    # a VPP restart loses everything: the next evaluation notices the new connection
    await rig.sim.stop()
    await rig.sim.start()
    await until(lambda: rig.vpp.connected and rig.vpp.generation == 2)
    assert rig.abf().snapshot()["acls"] == {}
    await rig.tunnels()
    assert not await again.evaluate()  # it reconciled instead of deciding
    assert [a[1:3] for a in rig.abf().snapshot()["abf_attachments"]] == [(2, 7)]
    assert await again.reconcile() == 0
    await again.remove()
    assert rig.abf().snapshot()["acls"] == {}
    fresh = rig.make(short_dir)
    fresh.load()
    assert fresh.policy is None  # remove() forgot the params too


async def test_a_refused_step_rolls_everything_back(rig: Rig) -> None:
    await rig.tunnels()
    m = rig.manager
    rig.sim.inject_failure("abf_itf_attach_add_del", retval=-116)
    with pytest.raises(ApplyError) as e:
        await m.apply(policy())
    assert e.value.rolled_back and "attach ABF policy" in str(e.value)
    assert rig.abf().snapshot() == {"acls": {}, "abf_policies": {}, "abf_attachments": []}
    assert m.policy is None
    # a failing re-programming keeps the old forwarding and counts the failure
    await m.apply(policy())
    rig.health[1] = Snap("down")
    rig.sim.inject_failure("abf_policy_add_del", retval=-7, after=1)
    assert not await m.evaluate()
    assert m.reprogram_failures == 1 and m.status()["last_error"]
    assert forwarding(rig)[0][1][0][1] != NO_INDEX
    assert await m.evaluate()  # the next evaluation gets it through


async def test_application_rules_follow_the_application_database(rig: Rig,
                                                                  short_dir: Path) -> None:
    await rig.tunnels()
    m = rig.manager
    apps = [{"id": "app1", "name": "video", "category": "media", "serviceClass": "stream",
             "importance": "high", "rules": [{"ip": "198.18.0.0/15", "ports": "443"}]}]
    by_app = {"id": "pol2", "rules": [{
        "id": "r1", "priority": 3,
        "classification": {"application": {"appId": "app1"}},
        "action": {"links": [{"pathlabels": ["lblB"], "order": "priority"}],
                   "fallback": "drop"}}]}
    await m.apply(by_app)  # before the application database: an ACL that matches nothing
    (acl,) = rig.abf().acls.values()
    assert acl.rules == [] and "matches nothing" in m.status()["rules"][0]["classification"]
    assert await m.set_applications({"applications": apps}) == 1  # the ACL filled in place
    (acl,) = rig.abf().acls.values()
    assert len(acl.rules) == 4  # ports without protocol: a TCP pair and a UDP pair
    apps[0]["rules"] = [{"ip": "198.18.0.0/15", "protocol": "udp", "ports": "443"}]
    assert await m.set_applications({"applications": apps}) == 1  # the ACL replaced in place
    assert len(next(iter(rig.abf().acls.values())).rules) == 2
    # a restart finds the policy and the application database it was resolved with
    again = rig.make(short_dir)
    again.load()
    assert again.policy is not None and again.policy.rules[0].classification == "app video"
    assert await again.reconcile() == 0


async def test_refusals_name_the_problem(rig: Rig, short_dir: Path) -> None:
    with pytest.raises(PolicyError, match="LAN interface eth9 does not exist in VPP"):
        bad = PolicyManager(rig.vpp, lambda: {}, lambda _t: None, lan_interfaces=["eth9"])
        await bad.apply(policy())
    sim = VppSim(short_dir / "noabf.sock", interfaces=[WAN], omit_plugins=["abf"])
    await sim.start()
    vpp = VppClient(str(sim.socket_path), call_timeout=2.0)
    await vpp.start()
    try:
        await vpp.wait_connected(5)
        m = PolicyManager(vpp, lambda: {}, lambda _t: None)
        with pytest.raises(PolicyError, match="abf_plugin.so"):
            await m.apply(policy())
        assert await m.reconcile() == 0
        assert await m.remove() == 0  # remove-multilink-policy still succeeds
    finally:
        await vpp.close()
        await sim.stop()


async def test_release_before_a_tunnel_is_deleted(rig: Rig) -> None:
    idx = await rig.tunnels()
    m = rig.manager
    await m.apply(policy())
    assert await m.release([1]) == 2  # B's path added, A's removed, while ipip1 exists
    assert forwarding(rig) == [(10, [(0, idx[2], "10.100.0.3")])]
    assert "peer 1" not in m.status()["rules"][0]["why"]
    await rig.vpp.call("ipip_del_tunnel", sw_if_index=idx[1])
    del rig.peers[1]
    assert not await m.evaluate()
    assert await m.remove() == 3
    assert rig.abf().snapshot() == {"acls": {}, "abf_policies": {}, "abf_attachments": []}
    # a re-created tunnel comes back only when restored
    rig.peers[2] = rig.peers[2]
    await m.apply(policy())
    await m.release([2])
    assert forwarding(rig) == [(10, [(2, NO_INDEX, "0.0.0.0")])]  # nothing left: drop
    m.restore([2])
    assert await m.evaluate()
    assert forwarding(rig) == [(10, [(0, idx[2], "10.100.0.3")])]


async def test_a_tunnel_deleted_under_a_policy_never_crashes_vpp(rig: Rig) -> None:
    """Without release (the job path did not call it): vppsim refuses what would crash
    real VPP, so this passing means the agent did not attempt it."""
    idx = await rig.tunnels()
    m = rig.manager
    await m.apply(policy())
    await rig.vpp.call("ipip_del_tunnel", sw_if_index=idx[1])
    del rig.peers[1]
    assert await m.evaluate()
    # the old policy is left detached with its stale path; a new one carries B
    policies = rig.abf().policies
    assert len(policies) == 2 and m.reprogram_failures == 0
    assert forwarding(rig) == [(10, [(0, idx[2], "10.100.0.3")])]
    assert not await m.evaluate() and await m.reconcile() == 0
    await m.remove()
    snap = rig.abf().snapshot()
    assert snap["acls"] == {} and snap["abf_attachments"] == []
    assert len(snap["abf_policies"]) == 1  # the stale one: only a VPP restart clears it


async def test_releases_and_reconciles_that_move_a_rule_are_logged_and_counted(
        rig: Rig, short_dir: Path) -> None:
    await rig.tunnels()
    m = rig.manager
    logs = io.StringIO()
    configure_logging("info", json=True, stream=logs)
    await m.apply(policy())
    # a tunnel about to be deleted: the rule moves to peer 2, a re-programming
    assert await m.release([1]) > 0
    assert m.status()["rules"][0]["chosen"] == "peer 2" and m.reprogrammings == 1
    m.restore([1])
    assert await m.reconcile() > 0  # peer 1 usable again: back to it
    assert m.status()["rules"][0]["chosen"] == "peer 1" and m.reprogrammings == 2
    # a reconcile that moves nothing is none, nor is a restarted agent's first one
    assert await m.reconcile() == 0 and m.reprogrammings == 2
    again = rig.make(short_dir)
    again.load()
    assert await again.reconcile() == 0 and again.reprogrammings == 0
    moved = [json.loads(line) for line in logs.getvalue().splitlines()]
    moved = [e for e in moved if e["event"] == "multilink rule re-programmed"]
    assert [(e["before"], e["after"]) for e in moved] == [("peer 1", "peer 2"),
                                                          ("peer 2", "peer 1")]
    assert "tunnels [1] about to be deleted" in moved[0]["cause"]
    assert "group 1 [lblA]: no link carries them" in moved[0]["reason"]
    assert moved[1]["cause"].startswith("reconciled") and "peer 1 up" in moved[1]["reason"]


async def test_a_restarted_agent_keeps_the_paths_until_the_monitor_has_a_verdict(
        rig: Rig, short_dir: Path) -> None:
    idx = await rig.tunnels()
    await rig.manager.apply(policy())
    assert forwarding(rig) == [(10, [(0, idx[1], "10.100.0.1")])]
    # a new agent: its monitor has heard from no tunnel yet (down, but no verdict)
    rig.health.update({1: Snap("down", settled=False), 2: Snap("down", settled=False)})
    again = rig.make(short_dir)
    again.load()
    before = rig.sim.write_count
    assert await again.reconcile() == 0 and rig.sim.write_count == before
    assert again.status()["rules"][0]["chosen"] == "peer 1"
    assert "peer 1 kept until the monitor's first verdict" in again.status()["rules"][0]["why"]
    assert not await again.evaluate() and again.reprogrammings == 0
    # verdicts: peer 1 down, peer 2 up -> moved
    rig.health.update({1: Snap("down", reason="3 probes lost"), 2: Snap("up")})
    assert await again.evaluate()
    assert forwarding(rig) == [(10, [(0, idx[2], "10.100.0.3")])]
    # a link without a verdict gets nothing new: peer 2 down, peer 1 unknown -> drop
    rig.health.update({1: Snap("down", settled=False), 2: Snap("down")})
    assert await again.evaluate()
    assert forwarding(rig) == [(10, [(2, NO_INDEX, "0.0.0.0")])]
    assert "awaiting the monitor's first verdict" in again.status()["rules"][0]["why"]
