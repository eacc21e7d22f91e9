"""Real VPP 26.06 started the lab's way and the device's way. Real-VPP tier.

The lab's real VPP logs to its own output, never through syslog. These machines run
no syslog daemon, and VPP opens syslog with LOG_CONS: glibc then writes every line to
the serial console, which blocks VPP for milliseconds per line. VPP logs two lines per
tunnel address it adds (its "Secondary MAC Addresses not supported" error), so each
benchmark run and lab test would stall on the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from agent.lab.realvpp import RealVpp, conf_from_rendered, has_vhost_net
from agent.lab.topology import run_in_netns
from agent.peers.spec import PeerSpec
from agent.vpp.client import VppClient
from agent.vpp.executor import Executor
from agent.vpp.kinds.base import read_interfaces
from agent.vpp.kinds.lcp import lcp_op
from agent.vpp.ops import VppFacts
from agent.vpp.plan import plan_add_ops
from tests.real_vpp import require_real_vpp
from tests.spec_factory import example_spec

# VPP 26.06's API errors: what linux-cp answers without the tap plugin, and what the
# tap driver answers when it cannot open /dev/vhost-net
FEATURE_DISABLED = -30
SYSCALL_ERROR_1 = -11


def test_the_lab_vpp_writes_its_log_lines_to_its_output_not_to_syslog() -> None:
    require_real_vpp()
    ns = f"log-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vl-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, run)
    try:
        vpp.start()
        vpp.ctl("create", "ipip", "tunnel", "src", "10.0.0.1", "dst", "10.0.0.2")
        vpp.ctl("set", "interface", "state", "ipip0", "up")
        vpp.ctl("set", "interface", "ip", "address", "ipip0", "10.9.0.0/31")
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    out = (run / "vpp.stdout").read_text(errors="replace")
    shutil.rmtree(run, ignore_errors=True)
    lines = [ln for ln in out.splitlines() if "Secondary MAC Addresses not supported" in ln]
    assert lines, out[-2000:]
    # syslog's copy on stderr (LOG_PERROR) reads "vpp[PID]: interface: ..."; VPP's own
    # (nosyslog) reads "interface   [error ]: ..."
    assert all("[error ]" in ln and "vpp[" not in ln for ln in lines), lines


async def _pair_the_tunnel(socket: Path) -> int:
    """The agent's own linux-cp step for ipip0 (tunnel 7's Linux interface): its retval."""
    client = VppClient(str(socket), call_timeout=10)
    await client.start()
    try:
        await client.wait_connected(10)
        async with asyncio.timeout(10):  # VPP's startup-config runs after its API opens
            while not (tunnel := [i.sw_if_index for i in (await read_interfaces(client))
                                  .values() if i.name == "ipip0"]):
                await asyncio.sleep(0.05)
        args = dict(lcp_op(7, "pa-lcp7", True).args)
        args["sw_if_index"] = tunnel[0]
        reply = await client.call("lcp_itf_pair_add_del_v2", _check=False, **args)
        return int(reply.retval)
    finally:
        await client.close()


def test_the_rendered_conf_loads_the_tap_driver_that_linux_cp_needs() -> None:
    """In 26.06 linux-cp makes each Linux interface through tap_plugin.so, looked up by
    symbol. The device's startup.conf (linux_cp on) must load it: without it every
    tunnel's pair fails with -30, so every add-tunnel would be rolled back."""
    require_real_vpp()
    ns = f"lcp-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, run, startup_cli=["create ipip tunnel src 10.0.0.1 dst 10.0.0.2"])
    vpp.conf_text = conf_from_rendered(vpp, linux_cp=True)
    try:
        vpp.start()
        retval = asyncio.run(_pair_the_tunnel(vpp.socket_path))
        log = vpp.log_tail(50)
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run, ignore_errors=True)
    assert retval != FEATURE_DISABLED, log
    if has_vhost_net():  # any stock kernel: the pair is made
        assert retval == 0, log
    else:  # these machines: the tap driver ran, and only vhost-net was missing
        assert retval == SYSCALL_ERROR_1 and "/dev/vhost-net" in log, log


def _ipip_seen_at_the_peer(vpp: RealVpp, ns: str, send: Callable[[], None]) -> list[bytes]:
    """IPIP packets that reach the peer's side of the WAN while `send` runs."""
    seen: list[bytes] = []
    listening = threading.Event()

    def listen() -> None:
        def go() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, 4) as s:  # IPPROTO_IPIP
                s.settimeout(3)
                listening.set()
                with contextlib.suppress(TimeoutError):
                    while True:
                        seen.append(s.recv(4096))
        run_in_netns(ns, go)

    thread = threading.Thread(target=listen)
    thread.start()
    listening.wait(5)
    send()
    thread.join()
    return seen


async def _apply_the_agents_plan(socket_path: Path, spec: PeerSpec) -> None:
    client = VppClient(str(socket_path), call_timeout=10)
    await client.start()
    try:
        await client.wait_connected(10)
        wan = [i.sw_if_index for i in (await read_interfaces(client)).values()
               if i.name == "host-wan0"]
        # no linux-cp here (no vhost-net); the lab runs the agent so too
        await Executor(client).apply([plan_add_ops(spec, VppFacts(wan[0], has_lcp=False))], {})
    finally:
        await client.close()


def test_a_new_tunnel_sends_nothing_in_clear_before_its_sa_exists() -> None:
    """An ipip tunnel that is up without IPsec protection sends what is routed into it
    as cleartext IPIP (VPP 26.06; checked here by setting it up by hand). The agent's
    plan leaves the tunnel down: VPP's IKE sets it up with its first child SA. Here
    the peer never answers IKE, and traffic to the tunnel's routes must not leave."""
    require_real_vpp()
    ns = f"clr-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    for cmd in (["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p"],
                ["ip", "link", "set", "wan0", "up"], ["ip", "link", "set", "wan0p", "up"],
                ["ip", "addr", "add", "192.168.1.20/24", "dev", "wan0p"]):
        subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
    vpp = RealVpp(ns, run, startup_cli=[
        "create host-interface name wan0", "set interface state host-wan0 up",
        "set interface ip address host-wan0 192.168.1.10/24"])
    # the peer: the WAN's other end, where nothing answers IKE; its monitor IP routed in
    spec = example_spec(dst=IPv4Address("192.168.1.20"),
                        monitor_ips=(IPv4Address("198.51.100.99"),))
    try:
        vpp.start()
        asyncio.run(_apply_the_agents_plan(vpp.socket_path, spec))

        def ping() -> None:
            vpp.ctl("ping", "198.51.100.99", "repeat", "3")

        assert _ipip_seen_at_the_peer(vpp, ns, ping) == []
        assert "ipip7" in vpp.ctl("show", "interface") and " down " in next(
            ln for ln in vpp.ctl("show", "interface", "ipip7").splitlines() if "ipip7" in ln)
        vpp.ctl("set", "interface", "state", "ipip7", "up")  # what the agent used to do
        leaked = _ipip_seen_at_the_peer(vpp, ns, ping)
        # outer IPIP (protocol 4) around the inner ICMP (protocol 1), all in clear
        assert leaked and all(p[9] == 4 and p[20 + 9] == 1 for p in leaked)
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run, ignore_errors=True)
