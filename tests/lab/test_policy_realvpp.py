"""Steering over two plain IPIP tunnels on real VPP 26.06, what needs no IKE: multilink
policies (ABF) and static routes' primary and backup (FIB path preferences).

    lan ns: eth0 10.0.0.2/24 --veth-- dev ns: VPP host-lan0 10.0.0.1/24
    dev ns: VPP host-wan0 192.0.2.10/24 --veth-- net ns: 192.0.2.1 (ip_forward)
    net ns: 203.0.113.1/30 -- peer A 203.0.113.2 ; 203.0.113.5/30 -- peer B 203.0.113.6
    VPP: ipip1 -> peer A (label lblA), ipip2 -> peer B (lblB), default route to net ns

The agent's PolicyManager programs VPP over its API, with the link health given by the
test: a tunnel deleted under a policy (one of VPP 26.06's ABF crash paths, which the
agent avoids) and load-balancing over two links, counted as IPIP at each peer. The
acceptance with IKEv2/ESP peers and the monitor's own probes deciding is
tests/lab/test_policy_esp_realvpp.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from agent.jobs.validation import peer_static_routes
from agent.lab.realvpp import RealVpp
from agent.peers.spec import PeerSpec
from agent.policy.manager import PolicyManager
from agent.vpp.client import VppClient
from agent.vpp.kinds.route import route_op, route_paths
from agent.vpp.kinds.tunnel import ref_name
from agent.vpp.ops import resolve
from tests.real_vpp import require_real_vpp
from tests.spec_factory import example_spec
from tests.waiting import until


@pytest.fixture(autouse=True)
def _real_vpp_tier() -> None:
    require_real_vpp()


PREFIX_TARGET = "172.16.0.1"


def sh(*cmd: str, check: bool = True, stdin: str | None = None) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True,
                          input=stdin).stdout


def nsx(ns: str, *cmd: str, check: bool = True, stdin: str | None = None) -> str:
    return sh("ip", "netns", "exec", ns, *cmd, check=check, stdin=stdin)


@dataclass
class Topo:
    tag: str

    @property
    def names(self) -> dict[str, str]:
        return {k: f"pa{k}-{self.tag}" for k in ("dev", "lan", "net", "pa", "pb")}

    def build(self) -> None:
        n = self.names
        for ns in n.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", n["lan"], "link", "add", "eth0", "type", "veth", "peer", "name",
           "lan0", "netns", n["dev"])
        sh("ip", "-n", n["dev"], "link", "add", "wan0", "type", "veth", "peer", "name",
           "i-dev", "netns", n["net"])
        for peer, if_net, net_addr, peer_addr in (("pa", "i-pa", "203.0.113.1/30",
                                                   "203.0.113.2/30"),
                                                  ("pb", "i-pb", "203.0.113.5/30",
                                                   "203.0.113.6/30")):
            sh("ip", "-n", n["net"], "link", "add", if_net, "type", "veth", "peer", "name",
               "eth0", "netns", n[peer])
            sh("ip", "-n", n["net"], "addr", "add", net_addr, "dev", if_net)
            sh("ip", "-n", n[peer], "addr", "add", peer_addr, "dev", "eth0")
            sh("ip", "-n", n["net"], "link", "set", if_net, "up")
            sh("ip", "-n", n[peer], "link", "set", "eth0", "up")
            # count what arrives encapsulated (IPIP) at this peer
            nsx(n[peer], "nft", "-f", "-", stdin=(
                "table ip cnt {\n chain pre {\n  type filter hook prerouting priority -400;\n"
                "  ip protocol 4 counter\n }\n}\n"))
        sh("ip", "-n", n["lan"], "addr", "add", "10.0.0.2/24", "dev", "eth0")
        sh("ip", "-n", n["lan"], "link", "set", "eth0", "up")
        sh("ip", "-n", n["lan"], "route", "add", "default", "via", "10.0.0.1")
        sh("ip", "-n", n["dev"], "link", "set", "lan0", "up")
        sh("ip", "-n", n["dev"], "link", "set", "wan0", "up")
        sh("ip", "-n", n["net"], "addr", "add", "192.0.2.1/24", "dev", "i-dev")
        sh("ip", "-n", n["net"], "link", "set", "i-dev", "up")
        nsx(n["net"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # the "internet": whatever VPP's FIB sends there to 172.16/16 is counted (a leak)
        nsx(n["net"], "nft", "-f", "-", stdin=(
            "table ip cnt {\n chain pre {\n  type filter hook prerouting priority -400;\n"
            "  iifname \"i-dev\" ip daddr 172.16.0.0/16 counter\n }\n}\n"))

    def destroy(self) -> None:
        for ns in self.names.values():
            sh("ip", "netns", "del", ns, check=False)

    def count(self, key: str) -> int:
        data = json.loads(nsx(self.names[key], "nft", "-j", "list", "table", "ip", "cnt"))
        return sum(item["rule"]["expr"][-1]["counter"]["packets"]
                   for item in data["nftables"] if "rule" in item)

    def counts(self) -> dict[str, int]:
        return {k: self.count(k) for k in ("pa", "pb", "net")}


SETUP_CLI = """create host-interface name lan0
set interface state host-lan0 up
set interface ip address host-lan0 10.0.0.1/24
create host-interface name wan0
set interface state host-wan0 up
set interface ip address host-wan0 192.0.2.10/24
ip route add 203.0.113.0/24 via 192.0.2.1 host-wan0
ip route add 0.0.0.0/0 via 192.0.2.1 host-wan0
"""


@dataclass
class Snap:
    status: str
    rtt_ms: float = 5.0
    drop_rate: float = 0.0
    reason: str = ""


class Rig:
    def __init__(self, topo: Topo, vpp: VppClient) -> None:
        self.topo = topo
        self.vpp = vpp
        self.peers: dict[int, PeerSpec] = {
            1: replace(example_spec(), tunnel_id=1, labels=("lblA",), src=IPv4Address(
                "192.0.2.10"), dst=IPv4Address("203.0.113.2"),
                addr=IPv4Interface("10.100.0.0/31")),
            2: replace(example_spec(), tunnel_id=2, labels=("lblB",), src=IPv4Address(
                "192.0.2.10"), dst=IPv4Address("203.0.113.6"),
                addr=IPv4Interface("10.100.0.2/31")),
        }
        self.health: dict[int, Snap] = {1: Snap("up"), 2: Snap("up")}
        self.manager = PolicyManager(vpp, lambda: self.peers, self.health.get,
                                     lan_interfaces=["host-lan0"], period=0.1)

    async def tunnels(self) -> None:
        for tid, spec in self.peers.items():
            r = await self.vpp.call("ipip_add_tunnel", tunnel={
                "instance": tid, "src": spec.src, "dst": spec.dst, "table_id": 0,
                "flags": 0, "mode": 0, "dscp": 0})
            idx = int(r.sw_if_index)
            await self.vpp.call("sw_interface_add_del_address", sw_if_index=idx, is_add=True,
                                del_all=False, prefix=spec.addr)
            await self.vpp.call("sw_interface_set_flags", sw_if_index=idx, flags=1)

    async def ping(self, count: int = 5) -> None:
        """Pings from the LAN to the steered prefix (no answer expected: counted en route)."""
        await asyncio.to_thread(nsx, self.topo.names["lan"], "ping", "-n", "-q", "-c",
                                str(count), "-i", "0.05", "-W", "1", PREFIX_TARGET,
                                check=False)

    async def delta(self, count: int = 5) -> dict[str, int]:
        before = self.topo.counts()
        await self.ping(count)
        after = self.topo.counts()
        return {k: after[k] - before[k] for k in after}


@pytest.fixture
def topo() -> Iterator[Topo]:
    t = Topo(uuid.uuid4().hex[:5])
    try:
        t.build()
        yield t
    finally:
        t.destroy()


@pytest.fixture
async def rig(topo: Topo, short_dir: Path) -> AsyncIterator[Rig]:
    real = RealVpp(topo.names["dev"], short_dir, startup_cli=SETUP_CLI.splitlines(),
                   plugins=("acl_plugin.so", "abf_plugin.so"))
    await asyncio.to_thread(real.start)
    try:
        vpp = VppClient(str(real.socket_path), call_timeout=5.0)
        await vpp.start()
        try:
            await vpp.wait_connected(20)
            r = Rig(topo, vpp)
            await r.tunnels()
            # VPP's af_packet interfaces come up after its API: wait until the LAN
            # reaches VPP, then until routed traffic makes it out (neighbours resolved)
            lan = topo.names["lan"]
            await until(lambda: subprocess.run(
                ["ip", "netns", "exec", lan, "ping", "-c", "1", "-W", "1", "10.0.0.1"],
                capture_output=True).returncode == 0, timeout=20)
            await until(lambda: (nsx(lan, "ping", "-c", "1", "-W", "0.2", PREFIX_TARGET,
                                     check=False), topo.count("net") > 0)[1], timeout=20)
            yield r
        finally:
            await vpp.close()
    finally:
        await asyncio.to_thread(real.stop)


def policy(fallback: str) -> dict[str, Any]:
    return {"id": "pol1", "rules": [{
        "id": "r1", "priority": 10,
        "classification": {"prefix": {"ip": "172.16.0.0/16", "ports": "", "protocol": ""}},
        "action": {"links": [{"pathlabels": ["lblA"], "order": "priority"},
                             {"pathlabels": ["lblB"], "order": "priority"}],
                   "order": "priority", "fallback": fallback}}]}


async def test_a_tunnel_deleted_under_a_policy_does_not_crash_real_vpp(rig: Rig) -> None:
    """Real VPP 26.06 SIGSEGVs when the paths of a policy whose path goes through a
    deleted interface are changed; the agent must leave such a policy alone."""
    await rig.manager.apply(policy("drop"))
    assert (await rig.delta())["pa"] >= 4
    sw = {int(d.tunnel.instance): int(d.tunnel.sw_if_index)
          for d in await rig.vpp.dump("ipip_tunnel_dump", sw_if_index=0xFFFFFFFF)}
    await rig.vpp.call("ipip_del_tunnel", sw_if_index=sw[1])
    del rig.peers[1]  # remove-tunnel without release(): the worst case
    assert await rig.manager.evaluate()
    d = await rig.delta()
    assert d["pb"] >= 4 and d["pa"] == 0 and d["net"] == 0, d
    assert (await rig.vpp.call("show_version")).retval == 0  # VPP is alive
    await rig.manager.remove()
    assert await rig.vpp.dump("acl_dump", acl_index=0xFFFFFFFF) == []
    assert await rig.vpp.dump("abf_itf_attach_dump") == []


async def test_load_balancing_spreads_flows_over_both_peers(rig: Rig) -> None:
    lb = policy("drop")
    lb["rules"][0]["action"]["links"] = [{"pathlabels": ["lblA", "lblB"],
                                          "order": "load-balancing"}]
    await rig.manager.apply(lb)
    assert rig.manager.status()["rules"][0]["chosen"] == "peer 1, peer 2"
    d = await sixteen_flows(rig)  # VPP's flow hash spreads them
    assert d["pa"] > 0 and d["pb"] > 0 and d["pa"] + d["pb"] == 16 and d["net"] == 0, d


async def sixteen_flows(rig: Rig) -> dict[str, int]:
    """Where one ping to each of 16 destinations (flows) of 172.16/16 went."""
    before = rig.topo.counts()
    lan = rig.topo.names["lan"]
    for i in range(1, 17):
        await asyncio.to_thread(nsx, lan, "ping", "-n", "-q", "-c", "1", "-W", "0.2",
                                f"172.16.0.{i}", check=False)
    after = rig.topo.counts()
    return {k: after[k] - before[k] for k in after}


async def test_a_static_routes_metric_makes_a_backup_that_carries_traffic_while_the_primary_is_down(
        rig: Rig) -> None:
    """add-route of one prefix via both peers, metrics 10 and 20: the agent's paths send
    it all through peer A; with A's tunnel down (VPP's IKE sets it down when the SA
    goes) it all goes through peer B, and back to A when A is up again."""
    items = {f"route:172.16.0.0/16:{via}::{metric}": ("add-route", {
        "addr": "172.16.0.0/16", "via": via, "metric": metric})
        for via, metric in (("10.100.0.1", "10"), ("10.100.0.3", 20))}
    routes, problems = peer_static_routes(items, rig.peers.values())
    assert problems == []
    sw = {int(d.tunnel.instance): int(d.tunnel.sw_if_index)
          for d in await rig.vpp.dump("ipip_tunnel_dump", sw_if_index=0xFFFFFFFF)}
    for tid, spec in rig.peers.items():
        spec = replace(spec, static_routes=routes[tid], monitor_ips=())
        for net, preference in route_paths(spec):
            op = route_op(tid, net, True, preference)
            await rig.vpp.call(op.message, **resolve(op.args, {ref_name(tid): sw[tid]}))
    # 16 flows: paths of equal preference would spread them over both peers
    assert await sixteen_flows(rig) == {"pa": 16, "pb": 0, "net": 0}
    await rig.vpp.call("sw_interface_set_flags", sw_if_index=sw[1], flags=0)
    assert await sixteen_flows(rig) == {"pa": 0, "pb": 16, "net": 0}
    await rig.vpp.call("sw_interface_set_flags", sw_if_index=sw[1], flags=1)
    assert await sixteen_flows(rig) == {"pa": 16, "pb": 0, "net": 0}
