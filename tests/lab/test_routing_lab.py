"""Routing over a real ESP tunnel: the device's FRR and the peer's own FRR
(configured by hand from the peer's side) talk OSPF and BGP through the lab's
IKEv2/ESP tunnel (strongSwan on the peer).

The device's FRR is driven either by a RoutingManager of the test (first tests) or
by the agent daemon itself, from the controller double's jobs (`daemon` tests, on
vppsim + charon, and `real_vpp` tests on VPP 26.06's own ESP). The device's tunnel
is `peer7` (10.100.0.16/31: vppsim's linux-cp TUN, or the real-VPP lab's veth
stand-in); the peer's end is its charon's ESP TUN `ipsec0`, to which the peer's
administrator gives 10.100.0.17/31. The peer announces 10.200.7.0/24 (and owns
10.200.7.1); the device announces 10.201.0.0/24 over BGP. Each FRR runs in its
own namespace with private directories (agent/lab/frr.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.admin.peerctl import main as peerctl_main
from agent.lab.dataplane import RealVppPlane
from agent.lab.flexi_rules import validate_bgp, validate_stats
from agent.lab.frr import Frr, missing
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.realvpp import RealVpp
from agent.lab.topology import Lab, run_in_netns, sh
from agent.routing.frrconf import mask
from agent.routing.manager import RoutingManager, Vtysh
from agent.routing.model import RoutingModel, from_params, peer_routing
from tests.lab.test_strongswan_lab import (
    _REASON,
    Rig,
    _tail,
    add_tunnel_params,
    ok,
    rig,
)
from tests.waiting import until

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif((_REASON or missing()) is not None,
                                 reason=_REASON or missing() or "")]

PEER_NET = "10.200.7.0/24"
PEER_HOST = "10.200.7.1"
DEVICE_NET = "10.201.0.0/24"
BGP_PASSWORD = "Top-Secret-Key-4711"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lab-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def peer_frr_config(peer: Frr) -> None:
    """What the peer's administrator types: OSPF on its tunnel end, BGP to the device."""
    peer.configure(
        "access-list lab-out seq 5 permit 10.200.7.0/24",
        "route-map lab-out permit 10", "match ip address lab-out", "exit",
        # charon's ESP TUN has libipsec's MTU (1400), the device's TUN 1500: the peer's
        # admin lets OSPF ignore the difference (DD packets carry the MTU)
        "interface ipsec0", "ip ospf network point-to-point", "ip ospf mtu-ignore", "exit",
        "router ospf", "ospf router-id 203.0.113.10",
        "network 10.100.0.16/31 area 0.0.0.0",
        "redistribute kernel route-map lab-out", "exit",
        "router bgp 65010", "bgp router-id 203.0.113.10", "no bgp ebgp-requires-policy",
        "neighbor 10.100.0.16 remote-as 65001",
        f"neighbor 10.100.0.16 password {BGP_PASSWORD}",
        "neighbor 10.100.0.16 timers 3 9", "neighbor 10.100.0.16 timers connect 2",
        "address-family ipv4 unicast", f"network {PEER_NET}", "exit-address-family")


def vjson(frr: Frr, command: str) -> dict[str, Any]:
    r = frr.vtysh(command)
    try:
        out = json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def ospf_full(frr: Frr) -> bool:
    nbrs = vjson(frr, "show ip ospf neighbor json").get("neighbors", {})
    return any(str(n.get("state", n.get("nbrState", ""))).startswith("Full")
               for entries in nbrs.values() for n in entries)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float,
                     what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout:g} s: {what()}")
        await asyncio.sleep(0.2)


async def ping(target: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ping", "-n", "-c", "3", "-i", "0.1", "-W", "1", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def kernel_route(prefix: str) -> str:
    """The device namespace's kernel route for `prefix` (this thread is in it)."""
    return subprocess.run(["ip", "route", "show", prefix], capture_output=True,
                          text=True).stdout.strip()


def run_routing_lab(lab: Lab, base: Path,
                    scenario: Callable[[Rig, Frr, Frr], Awaitable[None]],
                    daemon_frr: bool = False) -> None:
    """`daemon_frr`: the agent daemon itself drives the device's FRR (its [routing]
    section points at it); otherwise the scenario drives it with its own RoutingManager."""
    settings = PeerSettings()
    gateway = PeerGateway(lab, base, settings)
    gateway.start()
    sh(lab.peer, "ip", "addr", "replace", "10.100.0.17/31", "dev", "ipsec0")
    sh(lab.peer, "ip", "link", "set", "ipsec0", "multicast", "on")
    sh(lab.peer, "ip", "addr", "replace", f"{PEER_HOST}/32", "dev", "lo")
    sh(lab.peer, "ip", "route", "replace", "blackhole", PEER_NET)
    sh(lab.device, "ip", "route", "replace", "blackhole", DEVICE_NET)
    try:
        with Frr(lab.peer, "peer") as peer_frr, Frr(lab.device, "dev") as dev_frr:
            peer_frr_config(peer_frr)

            routing = {"vtysh": "vtysh", "vty_socket": dev_frr.vty_socket} if daemon_frr \
                else None

            async def main() -> None:
                async with rig(lab, base, gateway, routing=routing) as r:
                    await scenario(r, dev_frr, peer_frr)

            try:
                run_in_netns(lab.device, lambda: asyncio.run(main()))
            except BaseException:
                print("--- device FRR ---\n" + mask(dev_frr.running_config()))
                print(dev_frr.vtysh("show ip ospf neighbor").stdout)
                print("--- peer FRR ---\n" + peer_frr.vtysh("show ip ospf neighbor").stdout)
                print("--- peer charon log ---\n" + gateway.charon.log_tail(30))
                print("--- device charon log ---\n"
                      + _tail(base / "dev/device-charon/charon.log", 60))
                raise
    finally:
        gateway.stop()
        sh(lab.peer, "ip", "addr", "del", f"{PEER_HOST}/32", "dev", "lo", check=False)
        sh(lab.peer, "ip", "route", "del", PEER_NET, check=False)
        sh(lab.device, "ip", "route", "del", DEVICE_NET, check=False)


async def tunnel_up(r: Rig, lab: Lab) -> dict[str, Any]:
    params = add_tunnel_params(lab, PeerSettings())
    ok(await r.ctl.send_job("add-tunnel", params, jobid=71))
    await until(lambda: r.agent.manager.states[7].status == "up", 20)
    return params


def device_model(params: dict[str, Any], routing: str) -> RoutingModel:
    peer = peer_routing(params["tunnel-id"], {**params["peer"], "routing": routing})
    bgp = None if routing != "bgp" else {
        "routerId": "192.0.2.10", "localAsn": "65001",
        "neighbors": [{"ip": "10.100.0.17", "remoteAsn": "65010", "password": BGP_PASSWORD,
                       "keepaliveInterval": "3", "holdInterval": "9", "sendCommunity": "all",
                       "multiHop": 1}],
        "networks": [{"ipv4": DEVICE_NET}]}
    return from_params(peers=[peer], ospf={"routerId": "192.0.2.10"}, bgp=bgp)


def test_ospf_full_over_the_esp_tunnel_and_the_peer_prefix_is_learned(
        lab: Lab, workdir: Path) -> None:
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        params = await tunnel_up(r, lab)
        routing = RoutingManager(Vtysh(vty_socket=dev.vty_socket), workdir / "frr-owned.json")
        await routing.apply(device_model(params, "ospf"))
        await until(lambda: ospf_full(dev), 60)
        assert ospf_full(peer)
        iface = vjson(dev, "show ip ospf interface peer7 json")["interfaces"]["peer7"]
        assert iface["cost"] == int(params["peer"]["ospf-cost"])
        assert iface["networkType"] == "POINTOPOINT"
        await until(lambda: PEER_NET in vjson(dev, "show ip route ospf json"), 30)
        learned = re.compile(rf"{re.escape(PEER_NET)} (nhid \d+ )?via 10\.100\.0\.17 dev peer7")
        await until(lambda: learned.search(kernel_route(PEER_NET)) is not None, 10)
        rc, out = await ping(PEER_HOST)  # the learned route carries traffic through ESP
        assert rc == 0, out
        [status] = await routing.peer_status()
        assert (status["protocol"], status["state"], status["learned"]) == ("ospf", "Full/-", 1)
        assert (await routing.apply(device_model(params, "ospf"))).empty

    run_routing_lab(lab, workdir, scenario)


def test_bgp_established_over_the_esp_tunnel_with_prefixes_both_ways(
        lab: Lab, workdir: Path) -> None:
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        params = await tunnel_up(r, lab)
        routing = RoutingManager(Vtysh(vty_socket=dev.vty_socket), workdir / "frr-owned.json")
        before = dev.running_config()
        model = device_model(params, "bgp")
        await routing.apply(model)
        status: dict[str, Any] = {}

        async def established() -> bool:
            status.clear()
            status.update(await routing.bgp_status())
            return status.get("peers", {}).get("10.100.0.17", {}).get("state") == "Established"

        await eventually(established, 60, lambda: f"{status}")
        await until(lambda: PEER_NET in vjson(dev, "show ip route bgp json"), 30)
        await until(lambda: DEVICE_NET in vjson(peer, "show ip route bgp json"), 30)
        status = await routing.bgp_status()
        assert status["as"] == 65001 and status["peers"]["10.100.0.17"]["remoteAs"] == 65010
        assert status["peers"]["10.100.0.17"]["pfxRcd"] == 1
        rc, out = await ping(PEER_HOST)
        assert rc == 0, out
        # a BGP peer puts nothing into OSPF; removing the routing leaves no trace
        assert "interface peer7" not in dev.running_config()
        assert (await routing.apply(model)).empty
        await routing.apply(RoutingModel())
        assert dev.running_config() == before

    run_routing_lab(lab, workdir, scenario)


BLOCK_TUNNEL = """table inet routing_lab_cut {
  chain cut {
    type filter hook forward priority 0; policy accept;
    udp dport { 500, 4500 } drop
    udp sport { 500, 4500 } drop
    meta l4proto esp drop
  }
}
"""


def test_learned_routes_leave_when_the_tunnel_goes_down_and_return_when_it_is_up(
        lab: Lab, workdir: Path) -> None:
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        params = await tunnel_up(r, lab)
        routing = RoutingManager(Vtysh(vty_socket=dev.vty_socket), workdir / "frr-owned.json")
        await routing.apply(device_model(params, "bgp"))

        def learned() -> bool:
            return PEER_NET in vjson(dev, "show ip route bgp json") and bool(
                kernel_route(PEER_NET) and "peer7" in kernel_route(PEER_NET))

        await until(learned, 60)
        # the internet between device and peer drops IKE and ESP: the tunnel is down
        sh(lab.internet, "nft", "-f", "-", stdin=BLOCK_TUNNEL)
        try:
            await until(lambda: not learned(), 30)  # BGP hold time (9 s) withdraws it
            assert "peer7" not in kernel_route(PEER_NET)
        finally:
            sh(lab.internet, "nft", "delete", "table", "inet", "routing_lab_cut", check=False)
        # back up: the agent re-establishes the SA, BGP reconnects, the route returns
        await until(lambda: r.agent.manager.states[7].status == "up", 60)
        await until(learned, 60)
        rc, out = await ping(PEER_HOST)
        assert rc == 0, out
        # nothing in FRR changed meanwhile: the agent's configuration is still exact
        assert (await routing.apply(device_model(params, "bgp"))).empty

    run_routing_lab(lab, workdir, scenario)


# -- the same through the daemon: controller double -> agent -> the device's FRR ----------

OSPF_JOB = {"routerId": "192.0.2.10", "custom": [], "redistributeBgp": False}
BGP_JOB = {"routerId": "192.0.2.10", "localAsn": "65001", "redistributeOspf": False,
           "bestPathMultipathRelax": False,
           "neighbors": [{"ip": "10.100.0.17", "remoteAsn": "65010", "password": BGP_PASSWORD,
                          "inboundFilter": "", "outboundFilter": "", "holdInterval": "9",
                          "keepaliveInterval": "3", "custom": [], "sendCommunity": "all",
                          "multiHop": 1}],
           "networks": [{"ipv4": "10.201.0.1/24"}], "custom": []}


async def peer_tunnel(r: Rig, lab: Lab, routing: str, jobid: int) -> dict[str, Any]:
    """add-tunnel as flexiManage sends it for a peer with `routing`; returns once it is up."""
    params = add_tunnel_params(lab, PeerSettings())
    params["peer"]["routing"] = routing
    ok(await r.ctl.send_job("add-tunnel", params, jobid=jobid))
    await until(lambda: r.agent.manager.states[7].status == "up", 20)
    return params


def job_notes(r: Rig, jobid: int) -> list[str]:
    """The notes of the agent's `job done` log line for `jobid` (what each room changed)."""
    for line in r.logs.getvalue().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "job done" and str(event.get("jobid")) == str(jobid):
            return [str(n) for n in event.get("notes", [])]
    raise AssertionError(f"no 'job done' for job {jobid} in the agent's log")


async def sync_changes_nothing_in_frr(r: Rig, dev: Frr, jobid: int) -> None:
    """sync-device with the controller's whole configuration (routing included) converges
    with no FRR write: the running-config is the same and the job reports no FRR lines."""
    before = dev.running_config()
    params = r.ctl.sync_device_params()
    listed = {q["message"] for q in params["requests"]}
    assert {"add-ospf", "add-tunnel"} <= listed, listed
    ok(await r.ctl.send_job("sync-device", params, jobid=jobid))
    assert not [n for n in job_notes(r, jobid) if n.startswith("FRR")], job_notes(r, jobid)
    assert dev.running_config() == before


async def show_routing(r: Rig) -> list[list[str]]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(peerctl_main, ["--socket", str(r.base / "admin.sock"),
                                                "show", "routing"], stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    return [line.split() for line in out.getvalue().splitlines()[1:]]


def test_daemon_ospf_peer_full_over_esp_learned_route_and_clean_removal(
        lab: Lab, workdir: Path) -> None:
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        assert r.agent.routing is not None, "the daemon drives FRR here"
        ok(await r.ctl.send_job("add-ospf", OSPF_JOB, jobid=80))
        assert " ospf router-id 192.0.2.10" in dev.running_config().splitlines()
        without_peer = dev.running_config()
        params = await peer_tunnel(r, lab, "ospf", 81)
        await until(lambda: "peer7" in vjson(dev, "show ip ospf interface peer7 json").get(
            "interfaces", {}), 10)  # zebra learns the TUN from netlink
        iface = vjson(dev, "show ip ospf interface peer7 json")["interfaces"]["peer7"]
        assert iface["cost"] == int(params["peer"]["ospf-cost"]) == 100
        assert iface["networkType"] == "POINTOPOINT" and iface["area"] == "0.0.0.0"
        await until(lambda: ospf_full(dev), 60)
        assert ospf_full(peer)
        await until(lambda: PEER_NET in vjson(dev, "show ip route ospf json"), 30)
        learned = re.compile(rf"{re.escape(PEER_NET)} (nhid \d+ )?via 10\.100\.0\.17 dev peer7")
        await until(lambda: learned.search(kernel_route(PEER_NET)) is not None, 10)
        rc, out = await ping(PEER_HOST)
        assert rc == 0, out
        [row] = await show_routing(r)
        assert row[:6] == ["7", "peer7", "ospf", "10.100.0.17", "Full/-", "1"], row

        await sync_changes_nothing_in_frr(r, dev, 82)

        ok(await r.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=83))
        assert dev.running_config() == without_peer
        await until(lambda: PEER_NET not in vjson(dev, "show ip route json"), 10)
        assert PEER_NET not in kernel_route(PEER_NET)

    run_routing_lab(lab, workdir, scenario, daemon_frr=True)


def test_daemon_bgp_peer_established_status_withdraw_on_tunnel_down_and_sync(
        lab: Lab, workdir: Path) -> None:
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        assert r.agent.routing is not None, "the daemon drives FRR here"
        ok(await r.ctl.send_job("add-ospf", OSPF_JOB, jobid=90))
        await peer_tunnel(r, lab, "bgp", 91)
        without_bgp = dev.running_config()
        assert "interface peer7" not in without_bgp  # a BGP peer puts nothing into OSPF
        ok(await r.ctl.send_job("add-routing-bgp", BGP_JOB, jobid=92))
        status: dict[str, Any] = {}

        async def established() -> bool:
            msg = await r.ctl.direct("get-bgp-status")
            assert msg["ok"] == 1, msg
            status.clear()
            status.update(msg["message"])
            return status.get("peers", {}).get("10.100.0.17", {}).get("state") == "Established"

        await eventually(established, 60, lambda: f"{status}")
        await until(lambda: PEER_NET in vjson(dev, "show ip route bgp json"), 30)
        await until(lambda: DEVICE_NET in vjson(peer, "show ip route bgp json"), 30)
        await eventually(established, 5, lambda: f"{status}")
        # the controller's shape (10.2 / 12.6): exactly its keys, its types
        assert validate_bgp(status) == []
        assert set(status) == {"routerId", "as", "failedPeers", "displayedPeers",
                               "totalPeers", "peers"}
        assert (status["routerId"], status["as"], status["totalPeers"]) == ("192.0.2.10",
                                                                           65001, 1)
        far = status["peers"]["10.100.0.17"]
        # sent: 10.201.0.0/24 (the peer has it, above) and, eBGP having no split horizon,
        # soon also the peer's own prefix back (its AS-path loop check drops it)
        assert (far["remoteAs"], far["pfxRcd"]) == (65010, 1) and far["pfxSnt"] >= 1, far
        # the stats' `bgp` key: the same object, read now (the first poll since BGP)
        stats = (await r.ctl.poll_stats())["msg"]["message"]
        assert validate_stats(stats) == []
        in_stats = stats[-1]["bgp"]
        assert in_stats["peers"]["10.100.0.17"]["state"] == "Established", in_stats
        assert in_stats["peers"]["10.100.0.17"]["pfxRcd"] == 1, in_stats
        rc, out = await ping(PEER_HOST)
        assert rc == 0, out
        [row] = await show_routing(r)
        assert row[:6] == ["7", "peer7", "bgp", "10.100.0.17", "Established", "1"], row

        def learned() -> bool:
            return PEER_NET in vjson(dev, "show ip route bgp json") and \
                "dev peer7" in kernel_route(PEER_NET)

        # the internet between device and peer drops IKE and ESP: the tunnel is down
        sh(lab.internet, "nft", "-f", "-", stdin=BLOCK_TUNNEL)
        try:
            await until(lambda: not learned(), 30)  # BGP hold time (9 s) withdraws it
            assert PEER_NET not in vjson(dev, "show ip route json")
            assert "peer7" not in kernel_route(PEER_NET)
            await eventually(lambda: established_not(r), 5, lambda: "still Established")
        finally:
            sh(lab.internet, "nft", "delete", "table", "inet", "routing_lab_cut", check=False)
        await until(lambda: r.agent.manager.states[7].status == "up", 60)
        await until(learned, 60)
        rc, out = await ping(PEER_HOST)
        assert rc == 0, out

        await sync_changes_nothing_in_frr(r, dev, 93)

        # the peer goes; the device's BGP neighbor list is the administrator's (12.1)
        ok(await r.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=94))
        assert "neighbor 10.100.0.17 remote-as 65010" in dev.running_config()
        ok(await r.ctl.send_job("remove-routing-bgp", BGP_JOB, jobid=95))
        assert dev.running_config() == without_bgp
        assert (await r.ctl.direct("get-bgp-status"))["message"] == {}

    run_routing_lab(lab, workdir, scenario, daemon_frr=True)


async def established_not(r: Rig) -> bool:
    msg = await r.ctl.direct("get-bgp-status")
    peers = msg["message"].get("peers", {})
    return peers.get("10.100.0.17", {}).get("state") != "Established"


# -- real VPP 26.06: OSPF's multicast through VPP's ESP, ipip and mfib -----------------------

STAND_IN_TTL = """table ip routing_lab_ttl {
  chain out {
    type filter hook postrouting priority 0; policy accept;
    oifname "peer7" ip ttl 1 ip ttl set 2
  }
}
"""


def mfib(r: Rig, group: str) -> str:
    assert isinstance(r.plane, RealVppPlane)
    return r.plane.vpp.ctl("show", "ip", "mfib", group)


def real_vpp(r: Rig) -> RealVpp:
    assert isinstance(r.plane, RealVppPlane)
    return r.plane.vpp


@contextlib.contextmanager
def ttl_fixup(lab: Lab) -> Iterator[None]:
    """linux-cp marks what the host sends as locally originated (no TTL check); the
    stand-in's packets are forwarded by VPP, where OSPF's and eBGP's TTL 1 would expire."""
    sh(lab.device, "nft", "-f", "-", stdin=STAND_IN_TTL)
    try:
        yield
    finally:
        sh(lab.device, "nft", "delete", "table", "ip", "routing_lab_ttl", check=False)


def stand_in_neighbor(r: Rig, lab: Lab) -> None:
    """The stand-in's static neighbor for the peer's end (VPP answers no ARP for it);
    zebra replaces it with an unresolved entry of its own for a route's next hop."""
    sh(lab.device, "ip", "neigh", "replace", "10.100.0.17", "lladdr",
       real_vpp(r).hw_mac("host-vpp7"), "dev", "peer7", "nud", "permanent")


def test_real_vpp_ospf_full_through_vpps_esp_with_the_mfib_entries_linux_nl_adds(
        vpp_lab: Lab, workdir: Path) -> None:
    """What VPP 26.06 needs for OSPF over a peer's ipip tunnel, on the real thing.

    Into VPP from the tunnel (the peer's hellos to 224.0.0.5/6 after ESP and ipip
    decapsulation): an mfib entry accepting them on ipip7 and forwarding them to
    the local stack, which punts them to the host. VPP itself has none (only
    224.0.0.1/2); on a device linux-nl adds exactly (*,224.0.0.0/24) Accept on
    every paired interface with an address and Forward local for the table
    (VPP 26.06 src/plugins/linux-cp/lcp_router.c), so the agent adds nothing and
    the lab, which cannot run linux-cp here, adds those two paths as linux-nl would.
    Out of the host: linux-cp's lcp-xc-l3 hands what the TUN sends straight to the
    tunnel's midchain adjacency, no mfib involved; the lab's veth stand-in enters
    VPP through ip4-input instead, so the lab adds an (S,G) entry from the stand-in
    into ipip7 for it. The device's FRR is driven by the daemon's jobs.
    """
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        assert r.real and r.agent.routing is not None
        vpp = real_vpp(r)
        ok(await r.ctl.send_job("add-ospf", OSPF_JOB, jobid=100))
        params = await peer_tunnel(r, vpp_lab, "ospf", 101)
        # the agent's own programming: 224.0.0.5/6 meet the default (*,*) drop
        for group in ("224.0.0.5", "224.0.0.6"):
            shown = mfib(r, group)
            assert "ipip7" not in shown and "(*, 0.0.0.0/0)" in shown, shown
        # the lab plays linux-nl (ingress) and the linux-cp stand-in (egress)
        vpp.ctl("ip", "mroute", "add", "224.0.0.0/24", "via", "local", "Forward")
        vpp.ctl("ip", "mroute", "add", "224.0.0.0/24", "via", "ipip7", "Accept")
        for group in ("224.0.0.5", "224.0.0.6"):
            vpp.ctl("ip", "mroute", "add", "10.100.0.16", group, "via", "host-vpp7", "Accept")
            vpp.ctl("ip", "mroute", "add", "10.100.0.16", group, "via", "ipip7", "Forward")
        with ttl_fixup(vpp_lab):
            await until(lambda: "peer7" in vjson(dev, "show ip ospf interface peer7 json").get(
                "interfaces", {}), 10)
            iface = vjson(dev, "show ip ospf interface peer7 json")["interfaces"]["peer7"]
            assert iface["cost"] == int(params["peer"]["ospf-cost"])
            await until(lambda: ospf_full(dev), 60)
            assert ospf_full(peer)
            await until(lambda: PEER_NET in vjson(dev, "show ip route ospf json"), 30)
            learned = re.compile(
                rf"{re.escape(PEER_NET)} (nhid \d+ )?via 10\.100\.0\.17 dev peer7")
            await until(lambda: learned.search(kernel_route(PEER_NET)) is not None, 10)
            # the learned route is the kernel's; VPP's FIB gets it from linux-nl on a
            # device, here from the lab playing linux-nl: then it carries traffic via ESP
            assert "ipip7" not in vpp.ctl("show", "ip", "fib", PEER_HOST)
            vpp.ctl("ip", "route", "add", PEER_NET, "via", "10.100.0.17", "ipip7")
            stand_in_neighbor(r, vpp_lab)
            rc, out = await ping(PEER_HOST)
            assert rc == 0, out
            await sync_changes_nothing_in_frr(r, dev, 102)

    run_routing_lab(vpp_lab, workdir, scenario, daemon_frr=True)


def test_real_vpp_bgp_established_through_vpps_esp_with_prefixes_both_ways(
        vpp_lab: Lab, workdir: Path) -> None:
    """BGP is unicast between the /31's ends: nothing in VPP beyond the agent's tunnel
    (what reaches 10.100.0.16 is for the host and punted to it, as linux-cp does)."""
    async def scenario(r: Rig, dev: Frr, peer: Frr) -> None:
        assert r.real and r.agent.routing is not None
        ok(await r.ctl.send_job("add-ospf", OSPF_JOB, jobid=110))
        await peer_tunnel(r, vpp_lab, "bgp", 111)
        with ttl_fixup(vpp_lab):
            stand_in_neighbor(r, vpp_lab)
            ok(await r.ctl.send_job("add-routing-bgp", BGP_JOB, jobid=112))
            status: dict[str, Any] = {}

            async def established() -> bool:
                msg = await r.ctl.direct("get-bgp-status")
                status.clear()
                status.update(msg.get("message") or {})
                return status.get("peers", {}).get("10.100.0.17", {}).get(
                    "state") == "Established"

            await eventually(established, 60, lambda: f"{status}")
            await until(lambda: PEER_NET in vjson(dev, "show ip route bgp json"), 30)
            await until(lambda: DEVICE_NET in vjson(peer, "show ip route bgp json"), 30)
            await eventually(established, 5, lambda: f"{status}")
            assert validate_bgp(status) == []
            assert status["peers"]["10.100.0.17"]["pfxRcd"] == 1, status
            assert "dev peer7" in kernel_route(PEER_NET)
            await sync_changes_nothing_in_frr(r, dev, 113)

    run_routing_lab(vpp_lab, workdir, scenario, daemon_frr=True)
