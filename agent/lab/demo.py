"""The one-command demo: real IKEv2/ESP between the agent's device and a strongSwan peer.

A lab of network namespaces (device, internet, peer; documentation addresses only,
nothing leaves them) is built; in the device namespace run the data plane (vppsim
with its strongSwan backend by default; `--vpp real`: real VPP 26.06 with its own
IKEv2 and ESP, behind a NAT), the controller double and the agent; in the peer namespace a
strongSwan gateway configured by its "administrator" from its own side. The
controller pushes the protocol document's add-tunnel (with lab addresses), the
agent programs VPP, charon negotiates with the peer, the agent probes the monitor
address through the tunnel, and the live status is shown until Ctrl-C. Everything
(namespaces, charons, responders, files) is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from agent.config import parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.dataplane import (
    DataPlane,
    RealVppPlane,
    SimPlane,
    TunnelStandIn,
    agent_vpp_config,
)
from agent.lab.offline import offline_name_resolver
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.realvpp import vpp_unavailable
from agent.lab.topology import Lab, enter_netns
from agent.lab.vppsim.ike_strongswan import charon_available
from agent.logsetup import configure_logging

MACHINE = "3f1c0000-0000-4000-8000-0000000de770"
TUNNEL_NET = "10.100.0.16/31"


def add_tunnel(lab: Lab, psk: str) -> dict[str, Any]:
    """The protocol document's add-tunnel example, with the lab's addresses."""
    full = {"protocol": "any", "start-port": "0", "end-port": "65535",
            "start-addr": "0.0.0.0", "end-addr": "255.255.255.255"}
    return {
        "encryption-mode": "ikev2", "dev_id": "pci:0000:00:03.00", "tunnel-id": 7,
        "src": str(lab.device_addr), "srcPort": "4789", "dst": str(lab.peer_addr),
        "peer": {"addr": TUNNEL_NET, "routing": "ospf", "mtu": 1500,
                 "multilink": {"labels": []}, "urls": [], "ips": [str(lab.monitor_addrs[0])],
                 "tcp-mss-clamp": 1310, "ospf-cost": 100},
        "ikev2": {"role": "initiator", "mode": "psk", "psk": psk,
                  "local-device-id-type": "ip4-addr", "local-device-id": "198.51.100.7",
                  "remote-device-id-type": "fqdn", "remote-device-id": "gw.cloud.example",
                  "lifetime": 3600, "ike_lifetime": 86400, "pfs": False,
                  "ike": {"crypto-alg": "aes-cbc", "integ-alg": "hmac-sha2-256-128",
                          "dh-group": "modp-2048", "key-size": 256},
                  "esp": {"crypto-alg": "aes-cbc", "integ-alg": "hmac-sha2-256-128",
                          "dh-group": "", "key-size": 256},
                  "local-ts": dict(full), "remote-ts": dict(full)},
    }




def make_plane(lab: Lab, workdir: Path) -> DataPlane:
    if lab.vpp_wan:
        from ipaddress import IPv4Interface

        return RealVppPlane(lab, workdir, (TunnelStandIn(7, IPv4Interface(TUNNEL_NET)),))
    return SimPlane(lab, workdir)


async def run_demo(lab: Lab, workdir: Path, psk: str, duration: float | None,
                   out: TextIO) -> int:
    from agent.app import Agent

    plane = make_plane(lab, workdir)
    await plane.start()
    print(f"data plane: {plane.describe()}", file=out, flush=True)
    vpp, interfaces = agent_vpp_config(plane)
    ctl = ControllerDouble(machine_id=MACHINE, ping_interval=20.0, stats_interval=None)
    await ctl.start()
    token = workdir / "device.token"
    token.write_text("demo-device-token")
    token.chmod(0o600)
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "backoff_min": 0.1, "backoff_max": 1.0},
        "vpp": vpp,
        "interfaces": interfaces,
        "state": {"dir": str(workdir / "state")},
        "routing": {"vtysh": ""},  # no FRR here: routing is recorded only
        "admin": {"socket": str(workdir / "admin.sock")},
        "monitor": {"stats_period": 2.0},
        "logging": {"level": "error"},
    }, {})
    agent = Agent(cfg, name_resolver=offline_name_resolver)
    task = asyncio.create_task(agent.run())
    try:
        await ctl.wait_connected(15)
        print(f"controller double: device connected; add-tunnel 7 to {lab.peer_addr}", file=out)
        reply = await ctl.send_job("add-tunnel", add_tunnel(lab, psk))
        print(f"controller double: reply ok={reply['msg']['ok']} "
              f"message={json.dumps(reply['msg']['message'])}", file=out)
        print(f"peerctl --socket {workdir / 'admin.sock'} show peers   (another shell)",
              file=out, flush=True)
        start = time.monotonic()
        while duration is None or time.monotonic() - start < duration:
            await asyncio.sleep(1.0)
            st = agent.manager.states.get(7)
            stats = await ctl.request("get-device-stats")
            entry = stats["msg"]["message"][-1]["tunnel_stats"].get("7", {})
            print(f"tunnel 7  ike={st.ike_state if st else '-'} sa={st.status if st else '-'}"
                  f"  status={entry.get('status')} rtt={entry.get('rtt', 0):.2f} ms"
                  f" jitter={entry.get('jitter', 0):.2f} ms"
                  f" drop={entry.get('drop_rate', 0):.1f} %", file=out, flush=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ctl.stop()
        await plane.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peering-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--loss", type=int, default=0,
                        help="percent of probes the peer side drops")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="delay added to the monitor address's replies")
    parser.add_argument("--vpp", choices=("sim", "real"), default="sim",
                        help="the data plane: vppsim (default, any machine) or real VPP "
                             "26.06 (installed by scripts/bootstrap.sh from ../shared/vpp, "
                             "or VPP_PREFIX)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("peering-demo: run as root (it builds network namespaces)", file=sys.stderr)
        return 2
    missing = charon_available()
    if missing:
        print(f"peering-demo: {missing}", file=sys.stderr)
        return 2
    real = args.vpp == "real"
    if real and (why := vpp_unavailable()) is not None:
        print(f"peering-demo: {why}", file=sys.stderr)
        return 2
    configure_logging("error")
    workdir = Path(tempfile.mkdtemp(prefix="peering-demo-", dir="/tmp"))
    settings = PeerSettings(psk="Demo-PSK-for-the-lab-only-42")
    try:
        # real VPP sits behind a NAT: the peer's kernel-libipsec only does ESP in UDP
        with Lab(loss_percent=args.loss, nat=real, vpp_wan=real) as lab:
            peer = PeerGateway(lab, workdir, settings)
            peer.start()
            try:
                if args.delay_ms:
                    lab.set_delay(lab.monitor_addrs[0], args.delay_ms)
                print(f"lab: device {lab.device} ({lab.device_addr}), peer {lab.peer} "
                      f"({lab.peer_addr}) running its own strongSwan", flush=True)
                enter_netns(lab.device)
                return asyncio.run(run_demo(lab, workdir, settings.psk, args.duration,
                                            sys.stdout))
            except KeyboardInterrupt:
                print("\ninterrupted: cleaning up", file=sys.stderr)
                return 0
            finally:
                peer.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
