"""The data plane between linux-cp TUNs and charon's ESP engine (`ipsec0`).

ESP runs in charon's user space (kernel-libipsec; this kernel has no ESP), which
reads and writes cleartext packets on its TUN device `ipsec0`. `DataPlane` plays
VPP's part between that engine and Linux: for every linux-cp pair it creates the
host TUN (`peer7`) with the tunnel's addresses and mirrors the routes the agent
programs through the tunnel, then shuttles packets (see the package docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from agent.lab.vppsim.state import (
    SimState,
)

log = structlog.get_logger(__name__)


_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4


def open_tun(name: str) -> int:
    """Create TUN `name` (no packet info header); the fd keeps it alive."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _forwarding(paths: list[dict[str, Any]], state: SimState) -> set[int]:
    """The interfaces VPP forwards a route over: its best-preference paths among those
    that are up (a path via an admin-down tunnel is unresolved), or all of its paths
    when none is up (VPP drops then; the TUN of a tunnel without an SA drops too)."""
    up = [p for p in paths if (itf := state.interfaces.get(p.get("sw_if_index", -1)))
          is not None and itf.admin_up]
    if not up:
        return {p["sw_if_index"] for p in paths}
    best = min(int(p.get("preference", 0)) for p in up)
    return {p["sw_if_index"] for p in up if int(p.get("preference", 0)) == best}


@dataclass
class _HostTun:
    name: str
    fd: int
    addresses: set[str] = field(default_factory=set)  # "a.b.c.d/len"
    routes: set[str] = field(default_factory=set)  # "prefix/len"


class DataPlane:
    """VPP's part between linux-cp TUNs and the ESP engine (charon's ipsec0).

    Runs on the event loop of the namespace vppsim runs in.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, esp_if: str = "ipsec0",
                 nft_table: str = "vppsim_lab") -> None:
        self.loop = loop
        self.esp_if = esp_if
        self.nft_table = nft_table
        self.tuns: dict[int, _HostTun] = {}  # VPP tunnel sw_if_index -> host TUN
        self._pkt: socket.socket | None = None
        self._ipr: Any = None
        self.counters = {"to_esp": 0, "from_esp": 0, "no_owner": 0}

    async def start(self) -> None:
        from pyroute2 import AsyncIPRoute

        self._ipr = AsyncIPRoute()
        nft = (f"table inet {self.nft_table} {{\n chain pre {{\n"
               "  type filter hook prerouting priority -300; policy accept;\n"
               f"  iifname \"{self.esp_if}\" drop\n }}\n}}\n")
        proc = await asyncio.create_subprocess_exec(
            "nft", "-f", "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate(nft.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"nft: {err.decode().strip()}")

    def _ensure_packet_socket(self) -> bool:
        if self._pkt is not None:
            return True
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
            s.bind((self.esp_if, _ETH_P_IP))
        except OSError:
            return False  # no ipsec0 yet (charon starting or restarting)
        s.setblocking(False)
        self._pkt = s
        self.loop.add_reader(s.fileno(), self._from_esp)
        return True

    def _drop_packet_socket(self) -> None:
        if self._pkt is not None:
            self.loop.remove_reader(self._pkt.fileno())
            self._pkt.close()
            self._pkt = None

    def _from_esp(self) -> None:
        assert self._pkt is not None
        for _ in range(64):
            try:
                data, addr = self._pkt.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:  # ipsec0 vanished with its charon
                self._drop_packet_socket()
                return
            if addr[2] == _PACKET_OUTGOING or len(data) < 20:
                continue
            dst = socket.inet_ntoa(data[16:20])
            if data[16] >> 4 == 0xE:
                # multicast (OSPF's 224.0.0.5/6): linux-cp hands it to the host side of
                # the tunnel it came through; one ESP engine serves all tunnels here, so
                # that tunnel is the one whose /31 holds the sender
                src = ipaddress.IPv4Address(data[12:16])
                owner = next((t for t in self.tuns.values()
                              if any(src in ipaddress.IPv4Interface(a).network
                                     for a in t.addresses)), None)
            else:
                owner = next((t for t in self.tuns.values()
                              if any(a.split("/")[0] == dst for a in t.addresses)), None)
            if owner is None:
                self.counters["no_owner"] += 1
                continue
            with contextlib.suppress(OSError):
                os.write(owner.fd, data)
                self.counters["from_esp"] += 1

    def _to_esp(self, tun: _HostTun) -> None:
        for _ in range(64):
            try:
                data = os.read(tun.fd, 65535)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data or data[0] >> 4 != 4:
                continue
            if not self._ensure_packet_socket():
                continue  # no ESP engine: VPP drops too
            assert self._pkt is not None
            try:
                self._pkt.sendto(data, (self.esp_if, _ETH_P_IP))
                self.counters["to_esp"] += 1
            except OSError:
                self._drop_packet_socket()

    async def sync(self, state: SimState) -> None:
        """Make Linux match vppsim: TUNs for lcp pairs, their addresses and routes.

        A host TUN stays up whatever the tunnel's state: without an SA charon drops
        what it is given, as VPP drops what it cannot encrypt.
        """
        self._ensure_packet_socket()
        wanted: dict[int, tuple[str, set[str], set[str]]] = {}
        for tun_idx, pair in state.lcp.items():
            itf = state.interfaces.get(tun_idx)
            if itf is None:
                continue
            addrs = {str(a) for a in state.addresses.get(tun_idx, []) if a.version == 4}
            routes = {str(r.prefix) for r in state.routes.values()
                      if r.prefix.version == 4 and r.table_id == 0
                      and tun_idx in _forwarding(r.paths, state)}
            wanted[tun_idx] = (pair["host_if_name"], addrs, routes)
        for tun_idx in [i for i in self.tuns if i not in wanted
                        or self.tuns[i].name != wanted[i][0]]:
            self._remove(tun_idx)
        for tun_idx, (name, addrs, routes) in wanted.items():
            tun = self.tuns.get(tun_idx)
            if tun is None:
                tun = await self._create(tun_idx, name)
            await self._apply(tun, addrs, routes)

    async def _create(self, tun_idx: int, name: str) -> _HostTun:
        fd = open_tun(name)
        tun = _HostTun(name, fd)
        self.tuns[tun_idx] = tun
        self.loop.add_reader(fd, self._to_esp, tun)
        idx = (await self._ipr.link_lookup(ifname=name))[0]
        await self._ipr.link("set", index=idx, state="up")
        # replies from the far end arrive here with foreign sources: no rp_filter
        with contextlib.suppress(OSError):
            await asyncio.to_thread(
                Path(f"/proc/sys/net/ipv4/conf/{name}/rp_filter").write_text, "0")
        log.info("host tun created", name=name, sw_if_index=tun_idx)
        return tun

    async def _apply(self, tun: _HostTun, addrs: set[str], routes: set[str]) -> None:
        if tun not in self.tuns.values() or (tun.addresses, tun.routes) == (addrs, routes):
            return
        idx = (await self._ipr.link_lookup(ifname=tun.name))[0]
        for a in tun.addresses - addrs:
            ip, plen = a.split("/")
            with contextlib.suppress(Exception):
                await self._ipr.addr("del", index=idx, address=ip, prefixlen=int(plen))
        for a in addrs - tun.addresses:
            ip, plen = a.split("/")
            await self._ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
        tun.addresses = set(addrs)
        for r in tun.routes - routes:
            with contextlib.suppress(Exception):
                await self._ipr.route("del", dst=r, oif=idx)
        for r in routes - tun.routes:
            with contextlib.suppress(Exception):  # e.g. the connected /31 itself
                await self._ipr.route("replace", dst=r, oif=idx)
        tun.routes = set(routes)

    def _remove(self, tun_idx: int) -> None:
        tun = self.tuns.pop(tun_idx)
        self.loop.remove_reader(tun.fd)
        os.close(tun.fd)  # the TUN and its addresses and routes go with the fd
        log.info("host tun deleted", name=tun.name, sw_if_index=tun_idx)

    def close(self) -> None:
        for tun_idx in list(self.tuns):
            self._remove(tun_idx)
        self._drop_packet_socket()
        subprocess.run(["nft", "delete", "table", "inet", self.nft_table], capture_output=True)
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
