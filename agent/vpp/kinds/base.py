"""The contract of a VPP object kind, and the observed state the kinds share.

A kind is one sort of VPP object the agent owns (a tunnel, its address, an IKEv2
profile, a route ...). Its module holds everything the agent knows about it: its
names, its create (each step with its undo), how to read it back from VPP, how to
compare what VPP shows with the spec, and its delete. The planner, reconcile,
cleanup and the observed-state reader are loops over the registered kinds
(`agent.vpp.kinds.KINDS`), in dependency order; cleanup walks it backwards.

Every method has a do-nothing default, so a kind overrides only what it has.
Kinds hold no state: an instance is a namespace the loops can iterate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any, ClassVar

from agent.peers.spec import PeerSpec
from agent.vpp.ops import Gap, Op, VppFacts

if TYPE_CHECKING:
    from agent.vpp.client import VppClient
    from agent.vpp.kinds.profile import ProfileInfo
    from agent.vpp.kinds.tunnel import TunnelInfo

NO_INDEX = 0xFFFFFFFF


@dataclass(frozen=True)
class InterfaceInfo:
    sw_if_index: int
    name: str
    admin_up: bool
    mtu: int


@dataclass
class Observed:
    """A consistent-enough read of what the agent manages in VPP, filled by the kinds.

    A kind added later keeps what it reads under `extra[kind.name]`."""

    interfaces: dict[int, InterfaceInfo] = field(default_factory=dict)
    addresses: dict[int, set[IPv4Interface]] = field(default_factory=dict)
    tunnels: dict[int, TunnelInfo] = field(default_factory=dict)  # by instance
    profiles: dict[str, ProfileInfo] = field(default_factory=dict)
    # via sw_if_index: each route's path preference
    route_preferences: dict[int, dict[IPv4Network, int]] = field(default_factory=dict)
    mss: dict[int, int] = field(default_factory=dict)
    lcp: dict[int, str] = field(default_factory=dict)
    gateways: set[IPv4Address] = field(default_factory=set)  # default routes' next hops
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def routes(self) -> dict[int, set[IPv4Network]]:
        """The prefixes routed via each sw_if_index."""
        return {sw: set(paths) for sw, paths in self.route_preferences.items()}

    def index_of(self, name: str) -> int | None:
        for info in self.interfaces.values():
            if info.name == name:
                return info.sw_if_index
        return None


class Kind:
    """One VPP object kind of a peer. Override what the kind has; see the module doc."""

    name: ClassVar[str] = ""
    # Drift in this kind is repaired by re-creating the whole peer (the parts that
    # live on the tunnel interface); otherwise `repair` fixes the kind in place.
    recreates_peer: ClassVar[bool] = False
    # Observation stage: kinds of stage 1 read after stage 0 was absorbed (they need
    # the tunnels' indexes); reads of one stage are pipelined.
    stage: ClassVar[int] = 0

    def check(self, spec: PeerSpec, facts: VppFacts) -> tuple[Gap, ...]:
        """Warnings for benign gaps; raise CapabilityError for what VPP cannot do."""
        return ()

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        """The steps that make this part of the peer, each with its undo (or none:
        a setter lives and dies with the object created before it)."""
        return []

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        """Dump what VPP has of this kind (None: nothing to read on this VPP)."""
        return None

    def absorb(self, raw: Any, obs: Observed) -> None:
        """Put what `read` returned into `obs` (runs in kind order)."""

    def owned(self, obs: Observed) -> set[int]:
        """Tunnel ids whose objects of this kind carry the agent's mark."""
        return set()

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        """What differs from the spec (names, never values), for `recreates_peer` kinds;
        `sw` is the tunnel's sw_if_index."""
        return []

    def repair(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int,
               extra_routes: Sequence[IPv4Address]) -> tuple[list[Op], str | None]:
        """Steps that fix this kind in place, and the note that says why."""
        return [], None

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        """Steps that delete what VPP shows of this kind for tunnel `tid` (`sw`: its
        tunnel's sw_if_index when VPP still has the tunnel)."""
        return []


async def read_interfaces(vpp: VppClient) -> dict[int, InterfaceInfo]:
    details = await vpp.dump("sw_interface_dump", sw_if_index=NO_INDEX, name_filter_valid=False)
    return {
        int(d.sw_if_index): InterfaceInfo(int(d.sw_if_index), str(d.interface_name),
                                          bool(int(d.flags) & 1), int(d.mtu[0]))
        for d in details
    }


async def read_addresses(vpp: VppClient, sw_if_index: int) -> set[IPv4Interface]:
    return set(await read_address_list(vpp, sw_if_index))


async def read_address_list(vpp: VppClient, sw_if_index: int) -> list[IPv4Interface]:
    """The interface's IPv4 addresses in VPP's order: the first is the one VPP picks
    as the source of what it sends itself (IKE)."""
    details = await vpp.dump("ip_address_dump", sw_if_index=sw_if_index, is_ipv6=False)
    return [IPv4Interface(str(d.prefix)) for d in details]
