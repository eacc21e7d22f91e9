"""The one-command demo: a controller pushes a peer, the agent programs VPP, probes
through the tunnel and reports; live status until Ctrl-C.

Everything runs inside two network namespaces the demo creates and deletes:
`<prefix>-dev` (the device: vppsim, the controller double, the agent) and
`<prefix>-peer` (the far end of tunnel 7, owning the monitor address). The
tunnel's Linux side is `peer7`, one end of a veth into the peer namespace, as
linux-cp would give it on a real device; IKE is vppsim's in-process model.
Only documentation and private ranges are used, and only inside the namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from agent.config import parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from agent.monitor.resolver import NameResolver

CLONE_NEWNET = 0x40000000
WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
MONITOR_IP = "198.51.100.100"
MACHINE = "3f1c0000-0000-4000-8000-0000000de770"

ADD_TUNNEL: dict[str, Any] = {
    "encryption-mode": "ikev2", "dev_id": "pci:0000:00:03.00", "tunnel-id": 7,
    "src": "192.168.1.10", "srcPort": "4789", "dst": "203.0.113.10",
    "peer": {"addr": "10.100.0.16/31", "routing": "ospf", "mtu": 1500,
             "multilink": {"labels": []}, "urls": [], "ips": [MONITOR_IP],
             "tcp-mss-clamp": 1310, "ospf-cost": 100},
    "ikev2": {"role": "initiator", "mode": "psk", "psk": "Demo-PSK-only-for-the-lab-1",
              "local-device-id-type": "ip4-addr", "local-device-id": "198.51.100.7",
              "remote-device-id-type": "fqdn", "remote-device-id": "gw.cloud.example",
              "lifetime": 3600, "ike_lifetime": 86400, "pfs": False,
              "ike": {"crypto-alg": "aes-cbc", "integ-alg": "hmac-sha2-256-128",
                      "dh-group": "modp-2048", "key-size": 256},
              "esp": {"crypto-alg": "aes-cbc", "integ-alg": "hmac-sha2-256-128",
                      "dh-group": "", "key-size": 256},
              "local-ts": {"protocol": "any", "start-port": "0", "end-port": "65535",
                           "start-addr": "0.0.0.0", "end-addr": "255.255.255.255"},
              "remote-ts": {"protocol": "any", "start-port": "0", "end-port": "65535",
                            "start-addr": "0.0.0.0", "end-addr": "255.255.255.255"}},
}


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def topology(prefix: str, loss: int) -> Iterator[str]:
    """Two namespaces joined by the tunnel's stand-in; yields the device namespace."""
    dev, peer = f"{prefix}-dev", f"{prefix}-peer"
    try:
        sh("ip", "netns", "add", dev)
        sh("ip", "netns", "add", peer)
        sh("ip", "link", "add", "peer7", "netns", dev, "type", "veth",
           "peer", "name", "tun7", "netns", peer)
        for ns, cmds in ((dev, [["ip", "link", "set", "lo", "up"],
                                ["ip", "addr", "add", "10.100.0.16/31", "dev", "peer7"],
                                ["ip", "link", "set", "peer7", "up"]]),
                         (peer, [["ip", "link", "set", "lo", "up"],
                                 ["ip", "addr", "add", "10.100.0.17/31", "dev", "tun7"],
                                 ["ip", "addr", "add", f"{MONITOR_IP}/32", "dev", "lo"],
                                 ["ip", "link", "set", "tun7", "up"]])):
            for cmd in cmds:
                sh("ip", "netns", "exec", ns, *cmd)
        if loss:
            rules = ("table inet demo {\n chain input {\n"
                     "  type filter hook input priority 0;\n"
                     f"  icmp type echo-request numgen random mod 100 < {loss} drop\n }}\n}}\n")
            subprocess.run(["ip", "netns", "exec", peer, "nft", "-f", "-"], input=rules,
                           check=True, capture_output=True, text=True)
        yield dev
    finally:
        for ns in (dev, peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def enter_netns(name: str) -> None:
    """Move this (still single-threaded) process into namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


async def no_dns(name: str) -> list[IPv4Address]:
    raise OSError(f"{name}: the demo resolves no names")


async def run_demo(workdir: Path, duration: float | None, out: Any) -> int:
    from agent.app import Agent

    sim = VppSim(workdir / "api.sock", interfaces=[WAN])
    await sim.start()
    ctl = ControllerDouble(machine_id=MACHINE, ping_interval=20.0, stats_interval=None)
    await ctl.start()
    token = workdir / "device.token"
    token.write_text("demo-device-token")
    token.chmod(0o600)
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "backoff_min": 0.1, "backoff_max": 1.0},
        "vpp": {"api_socket": str(workdir / "api.sock")},
        "state": {"dir": str(workdir / "state")},
        "admin": {"socket": str(workdir / "admin.sock")},
        "monitor": {"stats_period": 2.0},
        "logging": {"level": "error"},
    }, {})
    agent = Agent(cfg, name_resolver=functools.partial(NameResolver, resolve=no_dns))
    task = asyncio.create_task(agent.run())
    try:
        await ctl.wait_connected(15)
        print("controller double: device connected; sending add-tunnel 7", file=out)
        reply = await ctl.send_job("add-tunnel", ADD_TUNNEL)
        print(f"controller double: reply ok={reply['msg']['ok']} "
              f"message={json.dumps(reply['msg']['message'])}", file=out)
        print(f"peerctl: peerctl --socket {workdir / 'admin.sock'} show peers", file=out)
        start = time.monotonic()
        while duration is None or time.monotonic() - start < duration:
            await asyncio.sleep(1.0)
            st = agent.manager.states.get(7)
            snap = agent.monitor.snapshot(7) or {}
            stats = await ctl.request("get-device-stats")
            entry = stats["msg"]["message"][-1]["tunnel_stats"].get("7", {})
            print(f"tunnel 7  ike={st.ike_state if st else '-'} sa={st.status if st else '-'}"
                  f"  status={entry.get('status')} rtt={entry.get('rtt', 0):.3f} ms"
                  f" jitter={entry.get('jitter', 0):.3f} ms drop={entry.get('drop_rate', 0):.1f} %"
                  f"  ({snap.get('reason', '')})", file=out, flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ctl.stop()
        await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peering-demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--loss", type=int, default=0, help="percent of probes dropped")
    parser.add_argument("--prefix", default=f"pademo{os.getpid()}")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("peering-demo: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    configure_logging("error")
    workdir = Path(tempfile.mkdtemp(prefix="peering-demo-", dir="/tmp"))
    try:
        with topology(args.prefix, args.loss) as dev:
            enter_netns(dev)
            try:
                return asyncio.run(run_demo(workdir, args.duration, sys.stdout))
            except KeyboardInterrupt:
                print("\ninterrupted: cleaning up", file=sys.stderr)
                return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
