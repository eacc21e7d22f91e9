"""The tunnel interface's admin state: up once its address is set.

VPP keeps it with the interface, so deleting the tunnel takes it along; drift
(set down behind the agent's back) is repaired in place."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address

from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import Op, VppFacts, paired

ADMIN_UP = 1


def admin_up_op(tid: int) -> Op:
    ref = tunnel_ref(tid)
    return paired("sw_interface_set_flags", {"sw_if_index": ref, "flags": ADMIN_UP},
                  {"sw_if_index": ref, "flags": 0}, "set admin-up", "set admin-down", tid)


class AdminKind(Kind):
    name = "admin-state"

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        return [admin_up_op(spec.tunnel_id)]

    def repair(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int,
               extra_routes: Sequence[IPv4Address]) -> tuple[list[Op], str | None]:
        iface = obs.interfaces.get(sw)  # read by the tunnel kind
        if iface is not None and not iface.admin_up:
            return [admin_up_op(spec.tunnel_id)], "admin-down: setting it up"
        return [], None


KIND = AdminKind()
