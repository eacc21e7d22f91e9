"""Multilink policy acceptance on real VPP 26.06: real packets through VPP's ABF *and*
ESP to two strongSwan peers, the path decided by the agent's monitor's own probes.

    lan ns  eth0 10.0.0.2 --veth-- device ns: VPP host-lan0 10.0.0.1/24 (ABF attached)
    device  VPP host-wan0 10.10.0.2 -- NAT ns (192.0.2.20) -- internet ns
    internet -- peer A ns: eth0 203.0.113.10, charon, lo 198.51.100.100 + 172.16.0.1
             -- peer B ns: eth0 203.0.113.20, charon, lo 198.51.100.110 + 172.16.0.1
    VPP's default route points to the NAT ns: without ABF, 172.16/16 leaks there.

The whole agent runs (controller double -> jobs -> VPP): add-tunnel to A (label lblA)
and B (lblB), each negotiated by VPP's IKEv2 with the peer's charon; an
add-multilink-policy sends 172.16.0.0/16 to lblA, then lblB, `fallback: drop`. LAN
pings to 172.16.0.1 are counted where each peer's charon hands them out decrypted
(ipsec0) and answered there, so a reply proves the ESP round trip. Peer A is made
unreachable with an nftables drop in the internet namespace: nothing is injected, the
monitor's probes through tunnel A are lost, it declares A down and the PolicyManager
re-programs ABF. No /dev/vhost-net here: each tunnel's Linux side (which linux-cp would
make) is the lab's veth stand-in (agent/lab/dataplane.py); the probes are bound to it
and cross VPP's ESP like the LAN traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from agent.admin.peerctl import main as peerctl_main
from agent.app import Agent
from agent.lab.controller_double import ControllerDouble
from agent.lab.dataplane import RealVppPlane, TunnelStandIn
from agent.lab.offline import offline_name_resolver
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.topology import MONITOR_ADDRS, Lab, run_in_netns, sh
from agent.logsetup import configure_logging
from agent.vpp.readers import read_sas
from tests.lab.test_strongswan_lab import (  # noqa: F401  (workdir: a fixture)
    _REASON,
    DEVICE_TOKEN,
    MACHINE,
    _config,
    add_tunnel_params,
    ok,
    run_agent,
    stop_agent,
    workdir,
)
from tests.waiting import until, until_async

pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

A, B = 7, 8  # tunnel ids
PEER_B_ADDR = IPv4Address("203.0.113.20")
MON_A, MON_B = MONITOR_ADDRS[0], IPv4Address("198.51.100.110")
NET_A, NET_B = IPv4Interface("10.100.0.16/31"), IPv4Interface("10.100.0.18/31")
TARGET = "172.16.0.1"
STEERED = "172.16.0.0/16"
MONITOR = {"interval": 0.2, "timeout": 0.5, "window": 20, "down_after": 3, "up_after": 3,
           "stats_period": 1.0}
# The monitor's detection time: down_after consecutive probes lost, the last one known
# lost `timeout` after it was sent (the probes are `interval` apart).
DETECTION = MONITOR["down_after"] * MONITOR["interval"] + MONITOR["timeout"]
# what the PolicyManager adds: it is notified of the status change and re-programs at
# once; the allowance is for two shared cores, not for a period
REACTION = 1.0
# VPP's DPD with the lab agent's liveness (1 s x 2 retries, checked at VPP's 2 s ticks)
DPD_TIME = (2 + 1) * 2.0
LAN_CLI = ["create host-interface name lan0", "set interface state host-lan0 up",
           "set interface ip address host-lan0 10.0.0.1/24",
           "ip route add 0.0.0.0/0 via 10.10.0.1 host-wan0"]
COUNT_STEERED = ("table ip cnt {{\n chain pre {{\n  type filter hook prerouting priority -400;\n"
                 "  iifname \"{ifname}\" ip daddr " + STEERED + " counter\n }}\n}}\n")


@pytest.fixture(scope="module")
def lab(vpp_lab: Lab) -> Lab:
    return vpp_lab


@dataclass
class Sites:
    """What this test adds to the lab: peer B's namespace and the LAN behind the device."""

    lab: Lab
    peer_b: str = ""
    lan: str = ""
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.peer_b = f"lab-{self.lab.tag}-pb"
        self.lan = f"lab-{self.lab.tag}-lan"

    def build(self) -> None:
        lab = self.lab
        for ns in (self.peer_b, self.lan):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.made.append(ns)
            sh(ns, "ip", "link", "set", "lo", "up")
        # peer B hangs off the internet namespace beside peer A (a /32 route to it)
        sh(lab.internet, "ip", "link", "add", "i-pb", "type", "veth", "peer", "name", "eth0",
           "netns", self.peer_b)
        sh(lab.internet, "ip", "link", "set", "i-pb", "up")
        sh(lab.internet, "ip", "route", "add", f"{PEER_B_ADDR}/32", "dev", "i-pb")
        sh(self.peer_b, "ip", "addr", "add", f"{PEER_B_ADDR}/24", "dev", "eth0")
        sh(self.peer_b, "ip", "link", "set", "eth0", "up")
        sh(self.peer_b, "ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.1")
        sh(self.peer_b, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
           "net.ipv4.conf.default.rp_filter=0")
        sh(self.peer_b, "ip", "addr", "add", f"{MON_B}/32", "dev", "lo")
        # behind both peers: the steered destination, answering pings
        for ns in (lab.peer, self.peer_b):
            sh(ns, "ip", "addr", "add", f"{TARGET}/32", "dev", "lo")
        # the LAN: its veth end in the device namespace is VPP's host-lan0
        sh(lab.device, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
           "netns", self.lan)
        sh(lab.device, "ip", "link", "set", "lan0", "up")
        sh(self.lan, "ip", "addr", "add", "10.0.0.2/24", "dev", "eth0")
        sh(self.lan, "ip", "link", "set", "eth0", "up")
        sh(self.lan, "ethtool", "-K", "eth0", "tx", "off")
        sh(self.lan, "ip", "route", "add", "default", "via", "10.0.0.1")
        # a leak: what VPP's FIB sends to the NAT box for the steered prefix
        sh(lab.nat_ns, "nft", "-f", "-", stdin=COUNT_STEERED.format(ifname="lan0"))

    def after_charons(self) -> None:
        """Each peer counts what arrives decrypted for the steered prefix, and routes the
        LAN back into its tunnel (so it answers through ESP)."""
        for ns in (self.lab.peer, self.peer_b):
            sh(ns, "nft", "-f", "-", stdin=COUNT_STEERED.format(ifname="ipsec0"))
            sh(ns, "ip", "route", "replace", "10.0.0.0/24", "dev", "ipsec0")

    def destroy(self) -> None:
        while self.made:
            subprocess.run(["ip", "netns", "del", self.made.pop()], check=False)

    def count(self, ns: str) -> int:
        data = json.loads(sh(ns, "nft", "-j", "list", "table", "ip", "cnt"))
        return sum(item["rule"]["expr"][-1]["counter"]["packets"]
                   for item in data["nftables"] if "rule" in item)

    def counts(self) -> dict[str, int]:
        return {"a": self.count(self.lab.peer), "b": self.count(self.peer_b),
                "leak": self.count(self.lab.nat_ns)}

    def ping(self, n: int) -> int:
        """n pings from the LAN to the steered destination; how many were answered."""
        out = sh(self.lan, "ping", "-n", "-q", "-c", str(n), "-i", "0.05", "-W", "1", TARGET,
                 check=False)
        found = re.search(r"(\d+) received", out)
        return int(found.group(1)) if found else 0

    async def delta(self, n: int = 10) -> tuple[dict[str, int], int]:
        """Counted per place while n pings go, and how many were answered."""
        before = await asyncio.to_thread(self.counts)
        answered = await asyncio.to_thread(self.ping, n)
        after = await asyncio.to_thread(self.counts)
        return {k: after[k] - before[k] for k in after}, answered

    def cut(self, name: str, addr: IPv4Address) -> None:
        """The peer becomes unreachable: the internet drops everything to and from it."""
        sh(self.lab.internet, "nft", "-f", "-", stdin=(
            f"table ip cut_{name} {{\n chain to_peer {{\n  type filter hook forward priority 0;\n"
            f"  ip daddr {addr} drop\n  ip saddr {addr} drop\n }}\n}}\n"))

    def heal(self, name: str) -> None:
        sh(self.lab.internet, "nft", "delete", "table", "ip", f"cut_{name}")


def tunnel(lab: Lab, settings: PeerSettings, tid: int, dst: IPv4Address, net: IPv4Interface,
           monitor: IPv4Address, label: str) -> dict[str, Any]:
    params = add_tunnel_params(lab, settings)
    params["tunnel-id"] = tid
    params["dst"] = str(dst)
    params["peer"]["addr"] = str(net)
    params["peer"]["ips"] = [str(monitor)]
    params["peer"]["multilink"] = {"labels": [label]}
    params["ikev2"]["remote-device-id"] = settings.local_id
    return params


def policy(fallback: str) -> dict[str, Any]:
    return {"id": "pol-esp", "rules": [{
        "id": "r1", "priority": 10,
        "classification": {"prefix": {"ip": STEERED, "ports": "", "protocol": ""}},
        "action": {"links": [{"pathlabels": ["lblA"], "order": "priority"},
                             {"pathlabels": ["lblB"], "order": "priority"}],
                   "order": "priority", "fallback": fallback}}]}


def job(message: str, params: Any) -> dict[str, Any]:
    return {"entity": "agent", "message": message, "params": params}


async def peerctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(peerctl_main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


async def ike_sas_to(agent: Agent, peer: IPv4Address) -> set[int]:
    """The initiator SPIs of VPP's IKE SAs with `peer`."""
    return {sa.ispi for sa in await read_sas(agent.vpp) if sa.raddr == peer}


async def acl_abf(agent: Agent) -> tuple[list[Any], list[Any], list[Any]]:
    vpp = agent.vpp
    return (await vpp.dump("acl_dump", acl_index=0xFFFFFFFF),
            await vpp.dump("abf_policy_dump"), await vpp.dump("abf_itf_attach_dump"))


def test_policy_steers_lan_traffic_through_abf_and_esp_following_the_monitor(
        lab: Lab, workdir: Path) -> None:  # noqa: F811
    sites = Sites(lab)
    settings_a = PeerSettings(tunnel_net=str(NET_A))
    settings_b = PeerSettings(local_id="gwb.cloud.example", address=str(PEER_B_ADDR),
                              tunnel_net=str(NET_B))
    peer_a = PeerGateway(lab, workdir, settings_a, name="peer-a")
    peer_b = PeerGateway(lab, workdir, settings_b, netns=sites.peer_b, name="peer-b")
    stand_ins = (TunnelStandIn(A, NET_A, routes=(f"{MON_A}/32",), punt_all=False),
                 TunnelStandIn(B, NET_B, routes=(f"{MON_B}/32",), punt_all=False))
    measured: dict[str, float] = {}
    logs = io.StringIO()

    async def scenario() -> None:
        plane = RealVppPlane(lab, workdir, stand_ins, linux_cp=False,
                             plugins=("acl_plugin.so", "abf_plugin.so"), extra_cli=LAN_CLI)
        await plane.start()
        configure_logging("info", json=True, stream=logs)
        ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN,
                               ping_interval=0.5, stats_interval=None, job_timeout=15.0)
        task = None

        async def start_agent() -> Agent:
            nonlocal task
            if task is not None:
                await stop_agent(task)
            agent = Agent(_config(ctl, plane, workdir, {
                "monitor": MONITOR, "policy": {"lan_interfaces": ["host-lan0"]}}),
                name_resolver=offline_name_resolver)
            task = await run_agent(agent)
            await ctl.wait_connected(10)
            await until(lambda: agent.manager.in_sync, 10)
            return agent

        try:
            await ctl.start()
            await steer(plane, ctl, await start_agent(), start_agent)
        except BaseException:
            with contextlib.suppress(Exception):
                print("--- VPP ---\n" + "\n".join(
                    plane.vpp.ctl(*c.split()) for c in (
                        "show ikev2 profile", "show abf policy", "show abf attach",
                        "show acl-plugin acl", "show ip fib table 0", "show errors")))
            raise
        finally:
            if task is not None:
                await stop_agent(task)
            await ctl.stop()
            configure_logging("warning", json=True, stream=sys.stderr)
            await plane.stop()

    async def steer(plane: RealVppPlane, ctl: ControllerDouble, agent: Agent,
                    restart: Callable[[], Awaitable[Agent]]) -> None:
        mon, pol = agent.monitor, agent.policies
        tunnels = [job("add-tunnel", tunnel(lab, settings_a, A, lab.peer_addr, NET_A, MON_A,
                                            "lblA")),
                   job("add-tunnel", tunnel(lab, settings_b, B, PEER_B_ADDR, NET_B, MON_B,
                                            "lblB"))]
        for n, t in enumerate(tunnels, 1):
            ok(await ctl.send_job("add-tunnel", t["params"], jobid=n))
        for t in stand_ins:  # the replies to the probes reach the socket bound to peer<N>
            await asyncio.to_thread(plane.punt_from, f"ipip{t.tunnel_id}", t)

        def status(tid: int) -> str:
            snap = mon.health(tid)
            return "" if snap is None else str(snap.status)

        await until(lambda: status(A) == "up" and status(B) == "up", 30)
        # the LAN reaches VPP; without a policy VPP's FIB sends the prefix to the NAT box
        async def lan_reaches_nat() -> bool:
            await asyncio.to_thread(sites.ping, 1)
            return await asyncio.to_thread(sites.count, lab.nat_ns) > 0

        await until_async(lan_reaches_nat, 20)
        d, _ = await sites.delta()
        assert d["leak"] >= 9 and d["a"] == d["b"] == 0, d

        ok(await ctl.send_job("add-multilink-policy", policy("drop"), jobid=3))
        assert pol.status()["rules"][0]["chosen"] == f"peer {A}"
        d, answered = await sites.delta()
        assert d["a"] >= 9 and d["b"] == 0 and d["leak"] == 0 and answered >= 9, (d, answered)

        # sync-device with the same tunnels and policy: converged, no VPP write
        writes = agent.manager.executor.writes, pol.executor.writes
        listed = [*copy.deepcopy(tunnels), job("add-multilink-policy", policy("drop"))]
        ok(await ctl.send_job("sync-device", {"requests": listed}))
        assert (agent.manager.executor.writes, pol.executor.writes) == writes

        # an agent restart finds VPP as it left it: the policy is not re-written, not even
        # while the new monitor has yet to hear from the tunnels, and traffic stays at A
        agent = await restart()
        mon, pol = agent.monitor, agent.policies
        await until(lambda: status(A) == "up" and status(B) == "up", 15)
        settled = time.monotonic() + 2  # two policy periods after the monitor's verdict
        await until(lambda: time.monotonic() > settled, 3)
        assert pol.status()["rules"][0]["chosen"] == f"peer {A}", pol.status()
        assert (agent.manager.executor.writes, pol.executor.writes, pol.reprogrammings) == (
            0, 0, 0)

        # peer A unreachable: the monitor's probes are lost, A goes down, B carries it
        first_sa = await ike_sas_to(agent, lab.peer_addr)
        assert first_sa, "no IKE SA with peer A"
        base = pol.reprogrammings
        await asyncio.to_thread(sites.cut, "a", lab.peer_addr)
        cut_at = time.monotonic()
        await until(lambda: status(A) == "down", DETECTION + 3)
        measured["a_down_after_s"] = time.monotonic() - cut_at
        await until(lambda: pol.status()["rules"][0]["chosen"] == f"peer {B}", 5)
        measured["moved_to_b_after_s"] = time.monotonic() - cut_at
        assert measured["moved_to_b_after_s"] <= DETECTION + REACTION, measured
        snap = mon.health(A)
        assert snap is not None and snap.reason, snap  # down, and why
        d, answered = await sites.delta()
        assert d["b"] >= 9 and d["a"] == 0 and d["leak"] == 0 and answered >= 9, (d, answered)
        assert pol.reprogrammings == base + 1
        rc, shown, err = await peerctl("--socket", str(workdir / "admin.sock"), "show",
                                       "policies")
        assert rc == 0 and "peer 8" in shown and "peer 7 down" in shown, (shown, err)
        # long enough for VPP's DPD to drop A's IKE SA: A must negotiate again to return
        await until(lambda: agent.manager.states[A].status == "down", DPD_TIME + 5)
        d, answered = await sites.delta(5)
        assert d["b"] >= 4 and d["a"] == 0 and answered >= 4, (d, answered)
        assert pol.reprogrammings == base + 1  # the SA's loss changed no choice

        # A back: the traffic returns to A (priority) and stays there
        await asyncio.to_thread(sites.heal, "a")
        healed_at = time.monotonic()
        await until(lambda: pol.status()["rules"][0]["chosen"] == f"peer {A}", 40)
        measured["back_to_a_after_s"] = time.monotonic() - healed_at
        d, answered = await sites.delta(20)
        assert d["a"] >= 19 and d["b"] == 0 and d["leak"] == 0 and answered >= 19, (d, answered)
        steady = time.monotonic() + 5  # no flapping: no re-programming for a while
        await until(lambda: time.monotonic() > steady, 6)
        assert pol.reprogrammings == base + 2 and status(A) == "up", pol.status()
        again = await ike_sas_to(agent, lab.peer_addr)
        assert again and not again & first_sa, (first_sa, again)  # negotiated anew

        # both unreachable with fallback drop: dropped in VPP, not leaked to the NAT box
        await asyncio.to_thread(sites.cut, "a", lab.peer_addr)
        await asyncio.to_thread(sites.cut, "b", PEER_B_ADDR)
        await until(lambda: pol.status()["rules"][0]["chosen"] == "drop", DETECTION + 5)
        d, answered = await sites.delta()
        assert d == {"a": 0, "b": 0, "leak": 0} and answered == 0, (d, answered)
        # the same with fallback by-destination: no ABF entry, VPP's FIB decides (the NAT box)
        ok(await ctl.send_job("add-multilink-policy", policy("by-destination"), jobid=4))
        assert pol.status()["rules"][0]["chosen"] == "FIB (no ABF entry)"
        d, _ = await sites.delta(5)
        assert d["leak"] >= 4 and d["a"] == d["b"] == 0, d
        await asyncio.to_thread(sites.heal, "a")
        await asyncio.to_thread(sites.heal, "b")


        # removal leaves no ACL, ABF policy or attachment behind: by a sync-device that no
        # longer lists the policy (the tunnels untouched), and by remove-multilink-policy
        writes = agent.manager.executor.writes
        ok(await ctl.send_job("sync-device", {"requests": copy.deepcopy(tunnels)}))
        assert await acl_abf(agent) == ([], [], [])
        assert agent.manager.executor.writes == writes and pol.policy is None
        ok(await ctl.send_job("add-multilink-policy", policy("drop"), jobid=5))
        assert [len(x) for x in await acl_abf(agent)] == [1, 1, 1]

        # the tunnel carrying the traffic is removed: the agent takes it out of the ABF
        # policy before VPP deletes it (a later change would crash VPP 26.06 otherwise)
        await asyncio.to_thread(sites.cut, "a", lab.peer_addr)
        await until(lambda: pol.status()["rules"][0]["chosen"] == f"peer {B}", DETECTION + 5)
        ok(await ctl.send_job("remove-tunnel", {"tunnel-id": B}, jobid=6))
        assert pol.status()["rules"][0]["chosen"] == "drop"
        d, answered = await sites.delta(5)
        assert d == {"a": 0, "b": 0, "leak": 0} and answered == 0, (d, answered)
        await asyncio.to_thread(sites.heal, "a")
        await until(lambda: pol.status()["rules"][0]["chosen"] == f"peer {A}", 40)
        d, answered = await sites.delta(5)
        assert d["a"] >= 4 and answered >= 4, (d, answered)
        assert agent.vpp.generation == 1 and pol.reprogram_failures == 0  # VPP never died

        ok(await ctl.send_job("remove-multilink-policy", {}, jobid=7))
        assert await acl_abf(agent) == ([], [], [])
        d, _ = await sites.delta(5)
        assert d["leak"] >= 4 and d["a"] == d["b"] == 0, d  # the FIB decides again

        # each re-programming was logged with its reason
        lines = [json.loads(ln) for ln in logs.getvalue().splitlines() if ln.startswith("{")]
        reprog = [ln for ln in lines if ln.get("event") == "multilink rule re-programmed"]
        assert len(reprog) == pol.reprogrammings and all(ln["reason"] for ln in reprog), reprog
        assert any("about to be deleted" in ln["cause"] for ln in reprog), reprog

    try:
        sites.build()
        peer_a.start()
        peer_b.start()
        sites.after_charons()
        run_in_netns(lab.device, lambda: asyncio.run(scenario()))
    except BaseException:
        for p in (peer_a, peer_b):
            print(f"--- {p.dir.name} charon log ---\n" + p.charon.log_tail(200))
        print("--- agent log ---\n" + "\n".join(logs.getvalue().splitlines()[-150:]))
        raise
    finally:
        peer_a.stop()
        peer_b.stop()
        sites.destroy()
        print("measured:", measured)
