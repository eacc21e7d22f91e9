"""Routes that would break the device: refused before VPP is touched. Pure code.

A route into a tunnel wins over the device's own paths for its prefix, so a
monitor IP, a static route via the peer or a policy-based remote selector must
not cover the tunnel's own peer address (its IKE/ESP would be sent into itself),
another tunnel's peer address (that tunnel's IKE/ESP would be diverted), the
device's WAN addresses, its WAN subnet (the gateway and every neighbour there),
its WAN gateway when it lies outside that subnet (an on-link gateway of a /32 or
cloud address: a route into a tunnel would take the default route's next hop,
cutting the device off), or addresses that are no host at all. A DNS answer for
a monitor URL gets the same scrutiny: it must not be able to do what a refused
monitor IP cannot.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from agent.peers.spec import PeerSpec
from agent.vpp.plan import covering_prefixes

_LIMITED_BROADCAST = IPv4Address("255.255.255.255")
# "this network", loopback, multicast, reserved + broadcast: never via a tunnel
_NEVER_ROUTED = tuple(IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4",
                                                "240.0.0.0/4"))


def address_problem(addr: IPv4Address) -> str | None:
    """Why `addr` can never be a probe target routed into a tunnel (None: it can)."""
    if addr.is_unspecified:
        return "0.0.0.0 is not a host"
    if addr.is_loopback:
        return "a loopback address (this device itself)"
    if addr.is_link_local:
        return "a link-local address (169.254/16, e.g. a cloud metadata service)"
    if addr.is_multicast:
        return "a multicast address"
    if addr == _LIMITED_BROADCAST:
        return "the broadcast address"
    if addr.is_reserved:
        return "a reserved address (240/4)"
    return None


class PeerIndex:
    """The desired peers indexed by what the checks look up, built once per job so that
    checking n peers against each other costs O(n log n), not O(n^2)."""

    def __init__(self, peers: Mapping[int, PeerSpec]) -> None:
        self.by_dst: dict[IPv4Address, list[int]] = {}
        self.by_monitor: dict[IPv4Address, list[int]] = {}
        # (tunnel id, first, last address, what routes it) of every range routed in
        self.spans: list[tuple[int, IPv4Address, IPv4Address, str]] = []
        for tid, spec in sorted(peers.items()):
            self.by_dst.setdefault(spec.dst, []).append(tid)
            for ip in spec.monitor_ips:
                self.by_monitor.setdefault(ip, []).append(tid)
            self.spans += [(tid, lo, hi, what) for _, what, lo, hi in _ranges(spec)]
        self._dsts = sorted(self.by_dst)

    def dsts_within(self, start: IPv4Address, end: IPv4Address) -> list[tuple[int, IPv4Address]]:
        """(tunnel id, dst) of every peer whose dst is in [start, end], by tunnel id."""
        lo, hi = bisect_left(self._dsts, start), bisect_right(self._dsts, end)
        return sorted((tid, dst) for dst in self._dsts[lo:hi] for tid in self.by_dst[dst])


def target_problem(addr: IPv4Address, spec: PeerSpec, peers: PeerIndex,
                   wan: Iterable[IPv4Interface],
                   gateways: Iterable[IPv4Address] = ()) -> str | None:
    """Why a /32 to `addr` through `spec`'s tunnel would break the device (None: fine).
    `gateways`: the next hops of the device's default routes."""
    static = address_problem(addr)
    if static is not None:
        return static
    if addr == spec.dst:
        return "the tunnel's own peer address (dst): its IKE/ESP would be routed into itself"
    for tid in peers.by_dst.get(addr, ()):
        if tid != spec.tunnel_id:
            return (f"the peer address of tunnel {tid}: that tunnel's IKE/ESP would be "
                    "diverted")
    if addr == spec.src:
        return "this device's own WAN address"
    for iface in wan:
        if addr == iface.ip:
            return "this device's own WAN address"
        if addr in iface.network:
            return (f"in the WAN subnet {iface.network} (the gateway and the neighbours "
                    "there must stay reachable)")
    if addr in set(gateways):
        return (f"the WAN gateway (next hop of the default route, outside the WAN "
                f"subnet): {_GATEWAY_HARM}")
    return None


_GATEWAY_HARM = ("the default route would resolve into the tunnel and cut the device off, "
                 "IKE/ESP of every tunnel included")


def _ranges(spec: PeerSpec) -> list[tuple[str, str, IPv4Address, IPv4Address]]:
    """(how the job named it, what it is, first, last address) of each range routed into
    the tunnel besides the monitor /32s: static routes via the peer, a policy-based
    remote selector."""
    out = [(f"add-route {n} via {spec.peer_inner_addr}", f"the static route {n}",
            n.network_address, n.broadcast_address) for n, _ in spec.static_routes]
    if not spec.route_based:
        out.append((f"ikev2.remote-ts {spec.remote_ts.start_addr}-{spec.remote_ts.end_addr}",
                    "the remote selector", spec.remote_ts.start_addr, spec.remote_ts.end_addr))
    return out


def route_problems(spec: PeerSpec, peers: PeerIndex,
                   wan: Iterable[IPv4Interface],
                   gateways: Iterable[IPv4Address] = ()) -> list[str]:
    """Every reason to refuse `spec`'s routes (monitor IPs, static routes, remote
    selector) given the other desired `peers`, the WAN interface addresses `wan` (with
    their subnets) and the next hops of the default routes (`gateways`)."""
    tid = spec.tunnel_id
    wan = list(wan)
    gateways = sorted(set(gateways))
    out: list[str] = []
    for ip in spec.monitor_ips:
        why = target_problem(ip, spec, peers, wan, gateways)
        if why is not None:
            out.append(f"tunnel {tid}: peer.ips {ip} is {why}")
    for shown, _, start, end in _ranges(spec):
        out += _range_problems(spec, shown, start, end, peers, wan, gateways)
    # the other direction: an existing peer's routes must not swallow this peer's dst
    swallowing: dict[int, str] = {}
    for other_id in peers.by_monitor.get(spec.dst, ()):
        swallowing.setdefault(other_id, f"tunnel {tid}: dst {spec.dst} is a monitor IP of "
                              f"tunnel {other_id}, routed into that tunnel")
    inside: dict[int, str] = {}
    for other_id, lo, hi, what in peers.spans:
        if lo <= spec.dst <= hi and other_id not in inside:
            inside[other_id] = (f"tunnel {tid}: dst {spec.dst} is inside {what} of "
                                f"tunnel {other_id}, routed into that tunnel")
    for other_id in sorted(swallowing.keys() | inside.keys()):
        if other_id == tid:
            continue
        out += [m for m in (swallowing.get(other_id), inside.get(other_id)) if m is not None]
    return out


def _range_problems(spec: PeerSpec, shown: str, start: IPv4Address, end: IPv4Address,
                    peers: PeerIndex, wan: list[IPv4Interface],
                    gateways: list[IPv4Address]) -> list[str]:
    """Why routing start..end (a static route, a remote selector) into `spec`'s tunnel
    would break the device; `shown` names it as the job did."""
    tid = spec.tunnel_id
    out = []
    if start <= spec.dst <= end:
        out.append(f"tunnel {tid}: {shown} covers the tunnel's own peer address "
                   f"{spec.dst}: its IKE/ESP would be routed into itself")
    for other_id, other_dst in peers.dsts_within(start, end):
        if other_id != tid:
            out.append(f"tunnel {tid}: {shown} covers the peer address {other_dst} of "
                       f"tunnel {other_id}: that tunnel's IKE/ESP would be diverted")
    nets = covering_prefixes(start, end)
    for iface in [*wan, IPv4Interface(f"{spec.src}/32")]:
        if any(n.overlaps(iface.network) for n in nets):
            out.append(f"tunnel {tid}: {shown} overlaps the WAN subnet {iface.network} "
                       "of this device")
            break
    for gw in gateways:
        if start <= gw <= end and not any(gw in iface.network for iface in wan):
            out.append(f"tunnel {tid}: {shown} covers the WAN gateway {gw} (next hop of "
                       f"the default route, outside the WAN subnet): {_GATEWAY_HARM}")
    special = [s for s in _NEVER_ROUTED if any(n.overlaps(s) for n in nets)]
    if special:
        out.append(f"tunnel {tid}: {shown} covers {special[0]}, which must never be "
                   "routed into a tunnel")
    return out
