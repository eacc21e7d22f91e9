"""The device's data plane in the lab: vppsim (any machine) or real VPP 26.06.

Both serve VPP's binary API on `socket_path` in the lab's device namespace; the
agent runs unchanged against either, told only which WAN interface name its
dev_id maps to and whether linux-cp is there (`agent_vpp_config`).

Real VPP: the WAN is an af_packet interface on the lab's veth (VPP owns the
device's WAN address). Where /dev/vhost-net is missing, linux-cp cannot create
the tunnel's Linux side, so the lab builds a stand-in for it: a veth pair
`peer<N>` (Linux, the tunnel's /31 address) <-> `vpp<N>` (VPP af_packet,
unnumbered to the WAN); Linux routes the monitor range via peer<N> into VPP,
whose route for it (the agent's) is ipip<N>; what VPP punts (echo replies to the
/31 address, which linux-cp would hand to its TUN) is redirected to peer<N>. The
agent is configured with linux_cp = false and still binds its probes to peer<N>,
so every probe crosses VPP's own ESP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, Protocol

from agent.lab.realvpp import RealVpp, find_vpp, has_vhost_net
from agent.lab.topology import DEVICE_WAN, Lab, sh
from agent.lab.vppsim.ike_strongswan import StrongswanIke
from agent.lab.vppsim.server import VppSim

SIM_WAN = "GigabitEthernet0/3/0"
VPP_WAN = f"host-{DEVICE_WAN}"
DEV_ID = "pci:0000:00:03.00"
MONITOR_RANGE = "198.51.100.0/24"


class DataPlane(Protocol):
    kind: str  # "vppsim" | "vpp"
    socket_path: Path
    stats_socket: Path | None  # VPP's stats segment (interface counters); vppsim has none
    wan_name: str
    linux_cp: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self) -> None:
        """A VPP crash and restart: everything programmed is lost."""

    def describe(self) -> str: ...


def agent_vpp_config(plane: DataPlane) -> tuple[dict[str, Any], dict[str, str]]:
    """The agent's [vpp] section additions and [interfaces] table for `plane`."""
    section: dict[str, Any] = {"api_socket": str(plane.socket_path),
                               "linux_cp": plane.linux_cp}
    if plane.stats_socket is not None:
        section["stats_socket"] = str(plane.stats_socket)
    return section, {DEV_ID: plane.wan_name}


class SimPlane:
    """vppsim with its strongSwan IKE backend (the device's own charon)."""

    kind = "vppsim"
    wan_name = SIM_WAN
    linux_cp = True

    def __init__(self, lab: Lab, workdir: Path, **ike_options: Any) -> None:
        self.lab = lab
        self.workdir = workdir
        self.socket_path = workdir / "api.sock"
        self.stats_socket: Path | None = None
        self.ike = StrongswanIke(workdir / "dev", **ike_options)
        self.sim = VppSim(self.socket_path, interfaces=[(SIM_WAN, lab.device_wan_cidr)],
                          ike=self.ike)

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()

    async def restart(self) -> None:
        await self.sim.stop()  # its charon stops with it: every SA is gone
        await self.sim.start()

    def describe(self) -> str:
        return "vppsim (VPP 26.06 API emulator) with a strongSwan IKE backend"


@dataclass(frozen=True)
class TunnelStandIn:
    """The Linux side of tunnel `tunnel_id` where linux-cp cannot make one."""

    tunnel_id: int
    address: IPv4Interface  # the tunnel's /31 (peer.addr)
    # what Linux routes into VPP through this stand-in (several stand-ins: one /32 each)
    routes: tuple[str, ...] = (MONITOR_RANGE,)
    # VPP punts every received echo reply to this stand-in; with several stand-ins the
    # test redirects per tunnel interface instead (`RealVppPlane.punt_from`)
    punt_all: bool = True

    @property
    def linux(self) -> str:
        return f"peer{self.tunnel_id}"

    @property
    def vpp_end(self) -> str:
        return f"vpp{self.tunnel_id}"

    @property
    def next_hop(self) -> str:
        """The other address of the /31: VPP's side as Linux sees it."""
        net = self.address.network
        other = [a for a in (net.network_address, net.broadcast_address)
                 if a != self.address.ip]
        return str(other[0])


class RealVppPlane:
    """Real VPP 26.06 in the lab's device namespace (the lab must be built with
    vpp_wan=True, and nat=True for a kernel-libipsec peer: it only does ESP in UDP)."""

    kind = "vpp"
    wan_name = VPP_WAN

    def __init__(self, lab: Lab, workdir: Path, tunnels: tuple[TunnelStandIn, ...] = (),
                 *, linux_cp: bool | None = None,
                 conf: Callable[[RealVpp], str] | None = None,
                 plugins: Sequence[str] = (), extra_cli: Sequence[str] = ()) -> None:
        """`conf`: the startup.conf to run instead of the lab's own (given the RealVpp,
        whose run directory, sockets and setup.cli it must use); `plugins` to enable
        besides the lab's, `extra_cli` after the lab's startup-config (e.g. a LAN)."""
        if not lab.vpp_wan:
            raise ValueError("real VPP needs a lab built with vpp_wan=True")
        self.lab = lab
        self.linux_cp = has_vhost_net() if linux_cp is None else linux_cp
        self.tunnels = () if self.linux_cp else tunnels
        self._linux_made = False
        self.vpp = RealVpp(lab.device, workdir / "vpp", prefix=find_vpp(),
                           linux_cp=self.linux_cp, plugins=plugins)
        self.extra_cli = list(extra_cli)
        self.socket_path = self.vpp.socket_path
        self.stats_socket: Path | None = self.vpp.run / "stats.sock"
        self.conf = conf

    @property
    def _startup_cli(self) -> list[str]:
        lab = self.lab
        cli = [f"create host-interface name {DEVICE_WAN}",
               f"set interface state {VPP_WAN} up",
               f"set interface ip address {VPP_WAN} {lab.device_wan_cidr}",
               f"ip route add 203.0.113.0/24 via {lab.device_gateway} {VPP_WAN}"]
        for t in self.tunnels:
            cli += [f"create host-interface name {t.vpp_end}",
                    f"set interface state host-{t.vpp_end} up",
                    f"set interface unnumbered host-{t.vpp_end} use {VPP_WAN}",
                    f"set ip neighbor host-{t.vpp_end} {t.address.ip} "
                    f"{self._linux_mac(t)} static"]
            if t.punt_all:
                cli.append(f"ip punt redirect add rx all via {t.address.ip} host-{t.vpp_end}")
        return cli + self.extra_cli

    def punt_from(self, tunnel_interface: str, t: TunnelStandIn) -> None:
        """What VPP punts from `tunnel_interface` (echo replies to the tunnel's own
        address) goes to stand-in `t`, whose Linux side the probes are bound to."""
        self.vpp.ctl("ip", "punt", "redirect", "add", "rx", tunnel_interface, "via",
                     str(t.address.ip), f"host-{t.vpp_end}")

    def _linux_mac(self, t: TunnelStandIn) -> str:
        return sh(self.lab.device, "cat", f"/sys/class/net/{t.linux}/address").strip()

    def _make_linux_side(self) -> None:
        dev = self.lab.device
        for t in self.tunnels:
            sh(dev, "ip", "link", "add", t.linux, "type", "veth", "peer", "name", t.vpp_end)
            for name in (t.linux, t.vpp_end):
                sh(dev, "ip", "link", "set", name, "up")
            sh(dev, "ip", "addr", "add", str(t.address), "dev", t.linux)
            sh(dev, "ethtool", "-K", t.linux, "tx", "off")
        self._linux_made = True

    def _route_into_vpp(self) -> None:
        """Linux: the monitor range via VPP's end of the veth (VPP's af_packet MAC is its
        own and new at every VPP start)."""
        dev = self.lab.device
        for t in self.tunnels:
            mac = self.vpp.hw_mac(f"host-{t.vpp_end}")
            sh(dev, "ip", "neigh", "replace", t.next_hop, "lladdr", mac, "dev", t.linux,
               "nud", "permanent")
            for route in t.routes:
                sh(dev, "ip", "route", "replace", route, "via", t.next_hop, "dev", t.linux,
                   "onlink")

    def _start_sync(self) -> None:
        if not self._linux_made:
            self._make_linux_side()
        self.vpp.startup_cli = self._startup_cli
        if self.conf is not None:
            self.vpp.conf_text = self.conf(self.vpp)
        self.vpp.start()
        self._route_into_vpp()

    async def start(self) -> None:
        await asyncio.to_thread(self._start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.vpp.stop)
        await asyncio.to_thread(self._remove_linux_side)

    def _remove_linux_side(self) -> None:
        if self._linux_made:
            for t in self.tunnels:
                sh(self.lab.device, "ip", "link", "del", t.linux, check=False)
            self._linux_made = False

    async def restart(self) -> None:
        await asyncio.to_thread(self.vpp.kill)
        await asyncio.to_thread(self._start_sync)

    def describe(self) -> str:
        side = "linux-cp" if self.linux_cp else "a veth stand-in (no /dev/vhost-net here)"
        return (f"real VPP 26.06 ({self.vpp.prefix}), af_packet WAN, tunnel's Linux side: "
                f"{side}")
