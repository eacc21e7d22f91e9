"""The VPP-independent description of one peer connection.

Produced by `agent.jobs` from controller input after validation, consumed by
`agent.vpp.plan` (translation to VPP operations), the store and the monitor.
All values here are already validated and normalized: IANA transform numbers,
key sizes in bits, addresses as ipaddress objects.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import NamedTuple

from agent.secret import Secret

FULL_START = IPv4Address("0.0.0.0")
FULL_END = IPv4Address("255.255.255.255")


class IdType(enum.IntEnum):
    """IKEv2 identification types as VPP numbers them (RFC 7296 values)."""

    IP4_ADDR = 1
    FQDN = 2
    RFC822 = 3

    @property
    def label(self) -> str:
        """The type's name as flexiManage, VPP's CLI and strongSwan's ID prefixes spell
        it: ip4-addr, fqdn, rfc822."""
        return self.name.lower().replace("_", "-")


class StaticRoute(NamedTuple):
    """A controller static route through the peer. `preference` is its VPP path
    preference (0 is best), from the route's metric (`agent.jobs.validation.routes`):
    a lower metric is the primary, a higher one the backup VPP uses while the
    primary's tunnel is down."""

    net: IPv4Network
    preference: int = 0


@dataclass(frozen=True)
class Identity:
    type: IdType
    value: str  # text form; an ip4-addr ID is packed to 4 bytes only when sent to VPP


@dataclass(frozen=True)
class TrafficSelector:
    protocol: int  # IP protocol number, 0 = any
    start_port: int
    end_port: int
    start_addr: IPv4Address
    end_addr: IPv4Address

    @functools.cached_property  # a job's peers usually share one selector object
    def is_full(self) -> bool:
        return (
            self.protocol == 0
            and self.start_port == 0
            and self.end_port == 65535
            and self.start_addr == FULL_START
            and self.end_addr == FULL_END
        )


ECP_DH_GROUPS = frozenset({19, 20, 21, 25})  # IANA: ecp-256, -384, -521, -192


@dataclass(frozen=True)
class IkeTransforms:
    crypto_alg: int  # IANA ENCR
    crypto_key_size: int  # bits
    integ_alg: int  # IANA INTEG, 0 with an AEAD cipher
    prf_alg: int  # IANA PRF
    dh_group: int  # IANA DH

    @property
    def ecp(self) -> bool:
        return self.dh_group in ECP_DH_GROUPS


@dataclass(frozen=True)
class EspTransforms:
    crypto_alg: int
    crypto_key_size: int
    integ_alg: int
    dh_group: int = 0  # PFS group; 0 = none


@dataclass(frozen=True)
class PeerSpec:
    tunnel_id: int
    dev_id: str
    src: IPv4Address  # WAN address of dev_id
    dst: IPv4Address  # the peer's public address
    addr: IPv4Interface  # device end of the /31 inside the tunnel
    role: str  # "initiator" | "responder"
    psk: Secret
    local_id: Identity
    remote_id: Identity
    ike: IkeTransforms
    esp: EspTransforms
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    child_lifetime: int  # seconds
    ike_lifetime: int  # seconds
    pfs: bool = False
    mtu: int | None = None
    tcp_mss_clamp: int | None = None
    routing: str = "ospf"
    ospf_cost: str | None = None  # as flexiManage sends it ("100", "10.5")
    ospf_area: str | None = None
    labels: tuple[str, ...] = ()
    monitor_ips: tuple[IPv4Address, ...] = ()
    monitor_urls: tuple[str, ...] = ()
    udp_encap: bool = False
    # the controller's static routes (`add-route`) whose `via` is in this tunnel's /31
    static_routes: tuple[StaticRoute, ...] = ()

    @property
    def route_based(self) -> bool:
        """Full selectors on both sides: routing decides what enters the tunnel."""
        return self.local_ts.is_full and self.remote_ts.is_full

    @property
    def peer_inner_addr(self) -> IPv4Address:
        """The third party's end of the /31."""
        net = self.addr.network
        return next(a for a in (net.network_address, net.broadcast_address) if a != self.addr.ip)
