"""The lab network: device, internet and peer namespaces joined by veth pairs.

    device (wan0 192.0.2.10/24) -- internet (192.0.2.1 | 203.0.113.1) -- peer (eth0 203.0.113.10/24)
                                                                          lo: 198.51.100.100/32 ...

With `vpp_wan=True` the device's WAN veth belongs to a real VPP (an af_packet
interface): Linux in the device namespace gets no address or route on it, and
the Linux end that sends into VPP has transmit checksum offload off (otherwise
VPP keeps the pending-checksum mark through ESP decapsulation and Linux drops
what it hands back). With `nat=True` a NAT namespace sits in front of the device
(the device's WAN is 10.10.0.2/24, masqueraded to 192.0.2.20). `loss_percent`
drops that share of the echo replies the monitor addresses send (nftables numgen
in the peer namespace);
`set_delay` makes one monitor address answer late through `agent.lab.responder`.

Documentation ranges (and 10.10.0.0/24 for the NAT inside) exist only in these
namespaces; nothing is routed to the root namespace. Names are unique per lab.
Namespaces, veths, addresses and routes are made with pyroute2 (nftables and
sysctls with their own tools). `Lab` is a context manager that deletes every
namespace (and with it every veth, route and nftables table) and stops the delay
responders on exit, also when building failed half-way.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000

DEVICE_WAN = "wan0"
DEVICE_ADDR = IPv4Address("192.0.2.10")
PEER_ADDR = IPv4Address("203.0.113.10")
NAT_PUBLIC = IPv4Address("192.0.2.20")
NAT_INSIDE = IPv4Address("10.10.0.2")
MONITOR_ADDRS = (IPv4Address("198.51.100.100"), IPv4Address("198.51.100.101"))


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run fn in a new thread that joined namespace `name`; return or raise its outcome.

    setns(2) changes only the calling thread: the caller stays where it was, while
    every socket fn opens (and every thread or process it starts) is in `name`.
    """
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            enter_netns(name)
            outcome["value"] = fn()
        except BaseException as e:  # handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=body, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace `name` (only this thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def sh(ns: str, *cmd: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command in namespace `ns`; its stdout."""
    done = subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, text=True,
                          capture_output=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {ns}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Lab:
    """A fresh topology; use as `with Lab() as lab:`."""

    nat: bool = False
    vpp_wan: bool = False
    loss_percent: int = 0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    device: str = ""
    internet: str = ""
    peer: str = ""
    nat_ns: str = ""
    _made: list[str] = field(default_factory=list)
    _responders: dict[IPv4Address, subprocess.Popen[str]] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)  # pyroute2 NetNS, open while building

    def __post_init__(self) -> None:
        self.device = f"lab-{self.tag}-dev"
        self.internet = f"lab-{self.tag}-net"
        self.peer = f"lab-{self.tag}-peer"
        self.nat_ns = f"lab-{self.tag}-nat" if self.nat else ""

    # -- what the tests and the vppsim need ------------------------------------------
    @property
    def device_addr(self) -> IPv4Address:
        """The address on the device's own WAN interface (the tunnel source)."""
        return NAT_INSIDE if self.nat else DEVICE_ADDR

    @property
    def device_public(self) -> IPv4Address:
        """The address the peer sees the device at."""
        return NAT_PUBLIC if self.nat else DEVICE_ADDR

    @property
    def device_wan_cidr(self) -> str:
        return f"{self.device_addr}/24"

    @property
    def device_gateway(self) -> IPv4Address:
        """The device's next hop towards the peer."""
        return IPv4Address("10.10.0.1") if self.nat else IPv4Address("192.0.2.1")

    peer_addr = PEER_ADDR
    monitor_addrs = MONITOR_ADDRS

    # -- build / tear down ----------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.destroy()

    def _ns(self, name: str) -> Any:
        """Create namespace `name` (lo up); its pyroute2 handle."""
        from pyroute2 import NetNS

        handle = NetNS(name, flags=os.O_CREAT | os.O_EXCL)
        self._made.append(name)
        self._handles.append(handle)
        handle.link("set", index=handle.link_lookup(ifname="lo")[0], state="up")
        return handle

    @staticmethod
    def _veth(a: Any, a_name: str, b: Any, b_ns: str, b_name: str) -> None:
        """A veth pair created in a's namespace, its peer end moved straight into b_ns."""
        a.link("add", ifname=a_name, kind="veth", peer={"ifname": b_name, "net_ns_fd": b_ns})
        for handle, name in ((a, a_name), (b, b_name)):
            handle.link("set", index=handle.link_lookup(ifname=name)[0], state="up")

    @staticmethod
    def _addr(handle: Any, ifname: str, cidr: str) -> None:
        ip, plen = cidr.split("/")
        handle.addr("add", index=handle.link_lookup(ifname=ifname)[0], address=ip,
                    prefixlen=int(plen))

    def build(self) -> None:
        dev, net, peer = self._ns(self.device), self._ns(self.internet), self._ns(self.peer)
        if self.nat:
            nat = self._ns(self.nat_ns)
            self._veth(dev, DEVICE_WAN, nat, self.nat_ns, "lan0")
            if not self.vpp_wan:
                self._addr(dev, DEVICE_WAN, f"{NAT_INSIDE}/24")
            self._addr(nat, "lan0", "10.10.0.1/24")
            self._veth(nat, "wan0", net, self.internet, "i-dev")
            self._addr(nat, "wan0", f"{NAT_PUBLIC}/24")
            nat.route("add", dst="203.0.113.0/24", gateway="192.0.2.1")
            if not self.vpp_wan:
                dev.route("add", dst="203.0.113.0/24", gateway="10.10.0.1")
            sh(self.nat_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh(self.nat_ns, "nft", "-f", "-", stdin=(
                "table ip lab_nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
                '  oifname "wan0" masquerade\n }\n}\n'))
        else:
            self._veth(dev, DEVICE_WAN, net, self.internet, "i-dev")
            if not self.vpp_wan:
                self._addr(dev, DEVICE_WAN, f"{DEVICE_ADDR}/24")
                dev.route("add", dst="203.0.113.0/24", gateway="192.0.2.1")
        self._addr(net, "i-dev", "192.0.2.1/24")
        self._veth(net, "i-peer", peer, self.peer, "eth0")
        self._addr(net, "i-peer", "203.0.113.1/24")
        self._addr(peer, "eth0", f"{PEER_ADDR}/24")
        peer.route("add", dst="192.0.2.0/24", gateway="203.0.113.1")
        # the monitor addresses live on the peer's loopback (no dummy module here)
        for a in MONITOR_ADDRS:
            self._addr(peer, "lo", f"{a}/32")
        sh(self.internet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # decrypted packets arrive on ipsec0 (peer) and peer<N> (device) with sources
        # that are routed elsewhere: no reverse-path filter there
        for ns in (self.peer, self.device):
            sh(ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
               "net.ipv4.conf.default.rp_filter=0")
        self._close_handles()
        if self.vpp_wan:
            sh(self.nat_ns or self.internet, "ethtool", "-K",
               "lan0" if self.nat else "i-dev", "tx", "off")
        if self.loss_percent:
            self.set_loss(self.loss_percent)

    def _close_handles(self) -> None:
        while self._handles:
            self._handles.pop().close()

    def set_loss(self, percent: int) -> None:
        """Drop `percent` % of the monitor addresses' echo replies (0 removes the rule).

        Deterministic, not random: of every 100/gcd(percent, 100) replies the first
        percent/gcd are dropped (20 % = every 5th), so a short measurement window
        sees the injected rate exactly instead of a binomial sample of it.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss {percent} % is not within 0..100")
        sh(self.peer, "nft", "delete", "table", "inet", "lab_loss", check=False)
        self.loss_percent = percent
        if percent <= 0:
            return
        g = math.gcd(percent, 100)
        addrs = ", ".join(str(a) for a in MONITOR_ADDRS)
        sh(self.peer, "nft", "-f", "-", stdin=(
            "table inet lab_loss {\n chain out {\n  type filter hook output priority 0;\n"
            f"  ip saddr {{ {addrs} }} icmp type echo-reply "
            f"numgen inc mod {100 // g} < {percent // g} drop\n }}\n}}\n"))

    def set_delay(self, address: IPv4Address, delay_ms: float, mark: int = 0x5EED) -> None:
        """Answer pings to monitor `address` after `delay_ms` (userspace responder)."""
        if address not in MONITOR_ADDRS:
            raise ValueError(f"{address} is not one of the lab's monitor addresses")
        self.clear_delay(address)
        table = f"lab_delay_{int(address) & 0xFF}"
        # the kernel answers too: drop its (unmarked) replies from that address
        sh(self.peer, "nft", "-f", "-", stdin=(
            f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n"
            f"  ip saddr {address} icmp type echo-reply meta mark != {mark:#x} drop\n }}\n}}\n"))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.peer, sys.executable, "-m", "agent.lab.responder",
             "--address", str(address), "--delay-ms", str(delay_ms), "--mark", hex(mark)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=Path(__file__).resolve().parents[2])
        self._responders[address] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "responder ready ...": it is listening
        if not line.startswith("responder ready"):
            self.clear_delay(address)
            raise RuntimeError(f"delay responder for {address} did not start")

    def clear_delay(self, address: IPv4Address) -> None:
        proc = self._responders.pop(address, None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.peer in self._made:
            sh(self.peer, "nft", "delete", "table", "inet", f"lab_delay_{int(address) & 0xFF}",
               check=False)

    def destroy(self) -> None:
        """Stop responders, delete the namespaces (veths, routes, nftables go with them)."""
        from pyroute2 import netns

        self._close_handles()
        for address in list(self._responders):
            self.clear_delay(address)
        while self._made:
            with contextlib.suppress(OSError):
                netns.remove(self._made.pop())
