"""The TCP MSS clamp on the tunnel interface (VPP's mss_clamp plugin)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import NO_INDEX, Kind, Observed
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import CapabilityError, Gap, Op, VppFacts, paired

if TYPE_CHECKING:
    from agent.vpp.client import VppClient

MSS_DIR_RX_TX = 3


def mss_op(tid: int, mss: int) -> Op:
    """Clamp to `mss`; 0 disables the clamp (the undo of a clamp)."""
    def args(value: int) -> dict[str, Any]:
        return {"sw_if_index": tunnel_ref(tid), "ipv4_mss": value, "ipv6_mss": 0,
                "ipv4_direction": MSS_DIR_RX_TX if value else 0, "ipv6_direction": 0}

    return paired("mss_clamp_enable_disable", args(mss), args(0),
                  f"clamp TCP MSS to {mss}" if mss else "disable MSS clamp",
                  "disable MSS clamp", tid)


class MssKind(Kind):
    name = "mss-clamp"
    recreates_peer = True

    def check(self, spec: PeerSpec, facts: VppFacts) -> tuple[Gap, ...]:
        if spec.tcp_mss_clamp and not facts.has_mss_clamp:
            raise CapabilityError(
                f"tunnel {spec.tunnel_id}: peer.tcp-mss-clamp {spec.tcp_mss_clamp} asked, but "
                "VPP lacks mss_clamp_enable_disable (is mss_clamp_plugin.so enabled?)"
            )
        return ()

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        return [mss_op(spec.tunnel_id, spec.tcp_mss_clamp)] if spec.tcp_mss_clamp else []

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        if not vpp.has("mss_clamp_get"):
            return None
        return await vpp.dump("mss_clamp_get", cursor=0, sw_if_index=NO_INDEX)

    def absorb(self, raw: Any, obs: Observed) -> None:
        for m in raw or ():
            if int(m.ipv4_direction):
                obs.mss[int(m.sw_if_index)] = int(m.ipv4_mss)

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        return [] if (spec.tcp_mss_clamp or None) == obs.mss.get(sw) else ["MSS clamp differs"]

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        if sw is None or sw not in obs.mss:
            return []
        return [mss_op(tid, 0)._replace(undo=())]


KIND = MssKind()
