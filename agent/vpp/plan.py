"""Peer connection spec -> ordered VPP operations, each with its undo. Pure code.

What each VPP object kind looks like lives in its module under `agent.vpp.kinds`;
this is the planner over them. The executor runs the list; when a step fails it
runs the undos of the steps already done, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from agent.peers.spec import PeerSpec
from agent.vpp import kinds
from agent.vpp.kinds.lcp import host_if_name
from agent.vpp.kinds.profile import child_sa_lifetime, delete_profile_op, profile_ops
from agent.vpp.kinds.route import RoutePath, covering_prefixes, route_changes, route_paths
from agent.vpp.ops import CapabilityError, Op, Ref, VppFacts, resolve

__all__ = [
    "LIVENESS_PERIOD", "LIVENESS_RETRIES", "CapabilityError", "Op", "Plan", "Ref", "VppFacts",
    "check_capabilities", "child_sa_lifetime", "covering_prefixes", "delete_profile_op",
    "host_if_name", "inverse", "liveness_op", "plan_add", "plan_add_ops", "plan_remove",
    "plan_routes", "profile_ops", "resolve", "route_paths",
]

LIVENESS_PERIOD = 10
LIVENESS_RETRIES = 3


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    warnings: tuple[str, ...] = field(default=())


def check_capabilities(spec: PeerSpec, facts: VppFacts) -> tuple[str, ...]:
    """Refuse what VPP would silently do differently; return warnings for benign gaps."""
    return tuple(str(gap) for gap in kinds.check(spec, facts))


def plan_add_ops(
    spec: PeerSpec, facts: VppFacts, extra_routes: Iterable[IPv4Address] = ()
) -> list[Op]:
    return kinds.create(spec, facts, tuple(extra_routes))


def plan_add(spec: PeerSpec, facts: VppFacts) -> Plan:
    warnings = check_capabilities(spec, facts)
    return Plan(tuple(plan_add_ops(spec, facts)), warnings)


def inverse(ops: Sequence[Op]) -> list[Op]:
    """The steps that take `ops` away, newest first, each undone by re-running its group.

    A group is an op with an undo plus the setters after it that have none (they
    live and die with their parent: the MTU with the tunnel, the PSK with the
    profile), so re-creating a deleted parent re-applies its setters too.
    """
    groups: list[list[Op]] = []
    for op in ops:
        if op.undo or not groups:
            groups.append([op])
        else:
            groups[-1].append(op)
    out: list[Op] = []
    for group in reversed(groups):
        parent = group[0]
        for u in parent.undo:
            out.append(Op(u.message, u.args, u.what, undo=tuple(group), tunnel_id=u.tunnel_id))
    return out


def plan_remove(spec: PeerSpec, facts: VppFacts,
                extra_routes: Iterable[IPv4Address] = ()) -> Plan:
    """Remove exactly what plan_add created (and the routes to resolved monitor
    names); each step's undo re-creates its part."""
    return Plan(tuple(inverse(plan_add_ops(spec, facts, extra_routes))))


def plan_routes(
    tunnel_id: int, before: Iterable[RoutePath], after: Iterable[RoutePath]
) -> Plan:
    """Only the route changes between two sets of paths through one tunnel."""
    return Plan(tuple(route_changes(tunnel_id, before, after)))


def liveness_op(period: int = LIVENESS_PERIOD, retries: int = LIVENESS_RETRIES) -> Op:
    """Global in VPP: one setting for every profile."""
    return Op("ikev2_profile_set_liveness", {"period": period, "max_retries": retries},
              f"set IKE liveness {period} s x {retries}")
