"""The Linux side of the tunnel (a linux-cp pair): `peer<tunnel-id>` in Linux.

Its name is one of the agent's marks: an ipip tunnel of instance N whose pair is
`peer<N>` is the agent's even when no store remembers it."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import Op, VppFacts, add_del

if TYPE_CHECKING:
    from agent.vpp.client import VppClient

LCP_HOST_TUN = 1


def host_if_name(tunnel_id: int) -> str:
    return f"peer{tunnel_id}"


def lcp_op(tid: int, name: str, is_add: bool) -> Op:
    def args(add: bool) -> dict[str, Any]:
        return {"is_add": add, "sw_if_index": tunnel_ref(tid), "host_if_name": name,
                "host_if_type": LCP_HOST_TUN, "netns": ""}

    return add_del("lcp_itf_pair_add_del_v2", args, is_add, f"create Linux interface {name}",
                   f"delete Linux interface {name}", tid)


class LcpKind(Kind):
    name = "linux-cp"
    recreates_peer = True

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        if not facts.has_lcp:
            return []
        return [lcp_op(spec.tunnel_id, host_if_name(spec.tunnel_id), True)]

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        if not vpp.has("lcp_itf_pair_get"):
            return None
        return await vpp.dump("lcp_itf_pair_get", cursor=0)

    def absorb(self, raw: Any, obs: Observed) -> None:
        for pair in raw or ():
            obs.lcp[int(pair.phy_sw_if_index)] = str(pair.host_if_name)

    def owned(self, obs: Observed) -> set[int]:
        return {instance for instance, tun in obs.tunnels.items()
                if obs.lcp.get(tun.sw_if_index) == host_if_name(instance)}

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        if facts.has_lcp and obs.lcp.get(sw) != host_if_name(spec.tunnel_id):
            return ["Linux interface missing"]
        return []

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        name = obs.lcp.get(sw) if sw is not None else None
        if sw is None or name is None:
            return []
        return [lcp_op(tid, name, False)._replace(undo=())]


KIND = LcpKind()
