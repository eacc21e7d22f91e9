"""The tunnel's address: the device end of the /31 inside the tunnel."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface
from typing import TYPE_CHECKING, Any

from agent.iptext import interface_text
from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import Kind, Observed, read_addresses
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import Op, VppFacts, add_del

if TYPE_CHECKING:
    from agent.vpp.client import VppClient


def address_op(tid: int, prefix: IPv4Interface, is_add: bool) -> Op:
    def args(add: bool) -> dict[str, Any]:
        return {"sw_if_index": tunnel_ref(tid), "is_add": add, "del_all": False,
                "prefix": prefix}

    text = interface_text(prefix)
    return add_del("sw_interface_add_del_address", args, is_add, f"add address {text}",
                   f"delete address {text}", tid)


class AddressKind(Kind):
    name = "address"
    recreates_peer = True
    stage = 1  # per tunnel interface: needs the tunnels' indexes

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        return [address_op(spec.tunnel_id, spec.addr, True)]

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        indexes = sorted({t.sw_if_index for t in obs.tunnels.values()})
        return indexes, await asyncio.gather(*(read_addresses(vpp, i) for i in indexes))

    def absorb(self, raw: Any, obs: Observed) -> None:
        indexes, addrs = raw
        for i, a in zip(indexes, addrs, strict=True):
            obs.addresses[i] = a

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        return [] if spec.addr in obs.addresses.get(sw, set()) else ["tunnel address missing"]

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        if sw is None:
            return []
        return [address_op(tid, a, False)._replace(undo=())
                for a in sorted(obs.addresses.get(sw, set()))]


KIND = AddressKind()
