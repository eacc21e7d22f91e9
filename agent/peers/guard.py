"""Routes that would break the device: refused before VPP is touched. Pure code.

A route into a tunnel wins over the device's own paths for its prefix, so a
monitor IP or a policy-based remote selector must not cover the tunnel's own
peer address (its IKE/ESP would be sent into itself), another tunnel's peer
address (that tunnel's IKE/ESP would be diverted), the device's WAN addresses,
its WAN subnet (the gateway and every neighbour there), its WAN gateway when it
lies outside that subnet (an on-link gateway of a /32 or cloud address: a route
into a tunnel would take the default route's next hop, cutting the device off),
or addresses that are no host at all. A DNS answer for a monitor URL gets the same scrutiny: it must
not be able to do what a refused monitor IP cannot.
"""

from __future__ import annotations

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


def target_problem(addr: IPv4Address, spec: PeerSpec, peers: Mapping[int, PeerSpec],
                   wan: Iterable[IPv4Interface],
                   gateways: Iterable[IPv4Address] = ()) -> str | None:
    """Why a /32 to `addr` through `spec`'s tunnel would break the device (None: fine).
    `gateways`: the next hops of the device's default routes."""
    static = address_problem(addr)
    if static is not None:
        return static
    if addr == spec.dst:
        return "the tunnel's own peer address (dst): its IKE/ESP would be routed into itself"
    for tid, other in sorted(peers.items()):
        if tid != spec.tunnel_id and addr == other.dst:
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


def _range(spec: PeerSpec) -> tuple[IPv4Address, IPv4Address] | None:
    if spec.route_based:
        return None
    return spec.remote_ts.start_addr, spec.remote_ts.end_addr


def route_problems(spec: PeerSpec, peers: Mapping[int, PeerSpec],
                   wan: Iterable[IPv4Interface],
                   gateways: Iterable[IPv4Address] = ()) -> list[str]:
    """Every reason to refuse `spec`'s routes (monitor IPs, remote selector) given the
    other desired `peers`, the WAN interface addresses `wan` (with their subnets) and
    the next hops of the default routes (`gateways`)."""
    tid = spec.tunnel_id
    wan = list(wan)
    gateways = sorted(set(gateways))
    out: list[str] = []
    for ip in spec.monitor_ips:
        why = target_problem(ip, spec, peers, wan, gateways)
        if why is not None:
            out.append(f"tunnel {tid}: peer.ips {ip} is {why}")
    span = _range(spec)
    if span is not None:
        start, end = span
        shown = f"ikev2.remote-ts {start}-{end}"
        inside = lambda a: start <= a <= end  # noqa: E731
        if inside(spec.dst):
            out.append(f"tunnel {tid}: {shown} covers the tunnel's own peer address "
                       f"{spec.dst}: its IKE/ESP would be routed into itself")
        for other_id, other in sorted(peers.items()):
            if other_id != tid and inside(other.dst):
                out.append(f"tunnel {tid}: {shown} covers the peer address {other.dst} of "
                           f"tunnel {other_id}: that tunnel's IKE/ESP would be diverted")
        nets = covering_prefixes(start, end)
        for iface in [*wan, IPv4Interface(f"{spec.src}/32")]:
            if any(n.overlaps(iface.network) for n in nets):
                out.append(f"tunnel {tid}: {shown} overlaps the WAN subnet {iface.network} "
                           "of this device")
                break
        for gw in gateways:
            if inside(gw) and not any(gw in iface.network for iface in wan):
                out.append(f"tunnel {tid}: {shown} covers the WAN gateway {gw} (next hop of "
                           f"the default route, outside the WAN subnet): {_GATEWAY_HARM}")
        special = [s for s in _NEVER_ROUTED if any(n.overlaps(s) for n in nets)]
        if special:
            out.append(f"tunnel {tid}: {shown} covers {special[0]}, which must never be "
                       "routed into a tunnel")
    # the other direction: an existing peer's routes must not swallow this peer's dst
    for other_id, other in sorted(peers.items()):
        if other_id == tid:
            continue
        if spec.dst in other.monitor_ips:
            out.append(f"tunnel {tid}: dst {spec.dst} is a monitor IP of tunnel {other_id}, "
                       "routed into that tunnel")
        other_span = _range(other)
        if other_span is not None and other_span[0] <= spec.dst <= other_span[1]:
            out.append(f"tunnel {tid}: dst {spec.dst} is inside the remote selector of "
                       f"tunnel {other_id}, routed into that tunnel")
    return out

