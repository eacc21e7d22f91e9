"""The ipip tunnel interface: the anchor every other part of a peer hangs from.

Its name in VPP is ipip<tunnel-id> (the instance), so the operator sees the
controller's tunnel number; its sw_if_index is known only once VPP created it and
travels as the Ref `tun:<tunnel-id>`. The MTU is a setter that lives and dies
with the tunnel.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from agent.iptext import ip_text
from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import NO_INDEX, Kind, Observed, read_interfaces
from agent.vpp.ops import Op, Ref, VppFacts

if TYPE_CHECKING:
    from agent.vpp.client import VppClient


@dataclass(frozen=True)
class TunnelInfo:
    instance: int
    sw_if_index: int
    src: IPv4Address
    dst: IPv4Address


@functools.lru_cache(maxsize=8192)
def tunnel_ref(tunnel_id: int) -> Ref:  # nine per peer planned; a Ref is immutable
    return Ref(ref_name(tunnel_id))


def ref_name(tunnel_id: int) -> str:
    """The name under which the tunnel's sw_if_index is known to later steps."""
    return f"tun:{tunnel_id}"


def tunnel_instance(tunnel_id: int) -> int:
    """ipip<tunnel-id>: the operator sees the controller's tunnel number in VPP's names."""
    return tunnel_id


def observed_index(obs: Observed, tunnel_id: int) -> int | None:
    """The sw_if_index VPP shows for the tunnel, None when VPP has no such tunnel."""
    tun = obs.tunnels.get(tunnel_instance(tunnel_id))
    return tun.sw_if_index if tun is not None else None


def delete_tunnel_op(tid: int) -> Op:
    return Op("ipip_del_tunnel", {"sw_if_index": tunnel_ref(tid)},
              f"tunnel {tid}: delete ipip tunnel", tunnel_id=tid)


class TunnelKind(Kind):
    name = "tunnel"
    recreates_peer = True

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        tid = spec.tunnel_id
        ref = tunnel_ref(tid)
        ops = [Op(
            "ipip_add_tunnel",
            {"tunnel": {"instance": tunnel_instance(tid), "src": spec.src, "dst": spec.dst,
                        "table_id": 0, "flags": 0, "mode": 0, "dscp": 0}},
            f"tunnel {tid}: create ipip tunnel {ip_text(spec.src)} -> {ip_text(spec.dst)}",
            undo=(delete_tunnel_op(tid),), produces=ref.name, tunnel_id=tid,
        )]
        if spec.mtu:
            ops.append(Op("sw_interface_set_mtu",
                          {"sw_if_index": ref, "mtu": [spec.mtu, 0, 0, 0]},
                          f"tunnel {tid}: set MTU {spec.mtu}", tunnel_id=tid))
        return ops

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        # the interfaces too: the tunnel's MTU and admin state are read from them
        return await asyncio.gather(read_interfaces(vpp),
                                    vpp.dump("ipip_tunnel_dump", sw_if_index=NO_INDEX))

    def absorb(self, raw: Any, obs: Observed) -> None:
        obs.interfaces, tunnels = raw
        for t in tunnels:
            tun = t.tunnel
            obs.tunnels[int(tun.instance)] = TunnelInfo(
                int(tun.instance), int(tun.sw_if_index), IPv4Address(str(tun.src)),
                IPv4Address(str(tun.dst)))

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        tun = obs.tunnels[tunnel_instance(spec.tunnel_id)]
        problems = []
        if tun.src != spec.src or tun.dst != spec.dst:
            problems.append("tunnel endpoints differ")
        iface = obs.interfaces.get(sw)
        if spec.mtu and (iface is None or iface.mtu != spec.mtu):
            problems.append("tunnel MTU differs")
        return problems

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        return [] if sw is None else [delete_tunnel_op(tid)._replace(undo=())]


KIND = TunnelKind()
