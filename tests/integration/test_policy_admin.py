"""A peer programmed by the PeerManager carries a label; the PolicyManager steers a
prefix to it, and `peerctl show policies` shows the rule, the link now and why."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace
from pathlib import Path

from agent.admin.backend import ManagerBackend
from agent.admin.peerctl import main
from agent.admin.server import AdminServer
from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer
from agent.peers.manager import PeerManager
from agent.peers.store import PeerStore
from agent.policy.manager import PolicyManager
from agent.vpp.client import VppClient
from tests.spec_factory import example_spec
from tests.waiting import until


class Snap:
    def __init__(self, status: str, reason: str = "") -> None:
        self.status, self.rtt_ms, self.drop_rate, self.reason = status, 12.0, 0.0, reason


async def peerctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


async def test_show_policies_through_the_admin_socket(short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[("GigabitEthernet0/3/0", "192.168.1.10/24"),
                                                     ("GigabitEthernet0/4/0", "10.0.0.1/24")])
    await sim.start()
    vpp = VppClient(str(sim.socket_path), call_timeout=2.0)
    store = PeerStore(short_dir / "state")
    manager = PeerManager(vpp, store, {}, sa_init_timeout=5.0)
    manager.load()
    vpp.add_connect_listener(manager.on_vpp_connect)
    health: dict[int, Snap] = {7: Snap("up")}
    policies = PolicyManager(vpp, lambda: manager.desired, health.get,
                             lan_interfaces=["GigabitEthernet0/4/0"])
    server = AdminServer(ManagerBackend(manager, vpp, policies=policies.status),
                         short_dir / "admin.sock")
    try:
        await vpp.start()
        await vpp.wait_connected(5)
        await until(lambda: manager.in_sync)
        await server.start()
        await manager.apply([AddPeer(replace(example_spec(), labels=("lblA",)))])
        await policies.apply({"id": "pol1", "rules": [{
            "id": "r1", "priority": 10,
            "classification": {"prefix": {"ip": "172.16.0.0/16", "protocol": "tcp",
                                          "ports": "443"}},
            "action": {"links": [{"pathlabels": ["lblA"], "order": "priority"}],
                       "order": "priority", "fallback": "drop"}}]})
        state = sim.handlers.acl_abf.state
        tunnel = next(iter(sim.state.tunnels.values()))
        (pol,) = state.policies.values()
        assert [(p["sw_if_index"], str(p["nh"])) for p in pol.paths] == [
            (tunnel.sw_if_index, str(example_spec().peer_inner_addr))]
        acl_rules = next(iter(state.acls.values())).rules
        assert [(r["proto"], r["dstport_or_icmpcode_first"], r["srcport_or_icmptype_first"])
                for r in acl_rules] == [(6, 443, 0), (6, 0, 443)]  # the TCP pair only

        rc, out, err = await peerctl("--socket", str(short_dir / "admin.sock"),
                                     "show", "policies")
        assert (rc, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].startswith("policy pol1: 1 rules; LAN GigabitEthernet0/4/0")
        assert lines[1].split()[:4] == ["PRIO", "RULE", "CLASSIFICATION", "GROUPS"]
        assert "prefix 172.16.0.0/16 port 443 tcp" in lines[2]
        assert "peer 7" in lines[2] and "peer 7 up, first usable" in lines[2]

        health[7] = Snap("down", "3 probes lost")
        assert await policies.evaluate()
        rc, out, _ = await peerctl("--socket", str(short_dir / "admin.sock"), "--json",
                                   "show", "policies")
        data = json.loads(out)
        assert data["rules"][0]["chosen"] == "drop" and data["reprogrammings"] == 1
        assert "peer 7 down (3 probes lost)" in data["rules"][0]["why"]
    finally:
        await server.stop()
        await vpp.close()
        store.close()
        await sim.stop()
