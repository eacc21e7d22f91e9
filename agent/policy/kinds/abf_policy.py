"""The ABF policy of a rule: on the rule's ACL, its paths are the rule's current choice.

A drop path for `fallback: drop`; no policy at all when the FIB should decide. The
policy id is the agent's pick, above POLICY_ID_BASE and clear of every id VPP shows.

Real VPP 26.06 crashes when the paths of a policy are changed while one of them goes
through a deleted interface (and after a path was added twice). So this kind only
ever adds the paths a policy lacks and removes the ones it has; and a policy with a
path that is not one of the current links (`live` paths) is abandoned at observation:
its paths are never touched again (the attachment kind detaches it and the rule gets a
new policy). PolicyManager.release takes a tunnel out of the policies before the
tunnel is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from agent.policy.decide import Choice, Kind
from agent.policy.kinds.acl import acl_ref
from agent.policy.kinds.base import (
    NO_INDEX,
    DesiredRule,
    Leftover,
    Observed,
    ObservedRule,
    Planning,
    PolicyKind,
    Reading,
)
from agent.vpp.plan import Op, Ref

POLICY_ID_BASE = 0x6D6C0000  # "ml..": clear of small ids other ABF users pick
PATH_NORMAL, PATH_DROP = 0, 2
ANY_ADDR = IPv4Address(0)


@dataclass(frozen=True, order=True)
class PathSpec:
    """A forwarding path of an ABF policy: via next hop on an interface, or drop."""

    type: int
    sw_if_index: int
    next_hop: IPv4Address = ANY_ADDR

    def args(self) -> dict[str, Any]:
        return {"sw_if_index": self.sw_if_index, "table_id": 0, "rpf_id": 0, "weight": 1,
                "preference": 0, "type": self.type, "flags": 0, "proto": 0,
                "nh": {"address": {"ip4": self.next_hop}}, "n_labels": 0,
                # papi packs this fixed array only when all 16 entries are given
                "label_stack": [{}] * 16}

    def describe(self) -> str:
        if self.type == PATH_DROP:
            return "drop"
        return f"via {self.next_hop} sw_if_index {self.sw_if_index}"


DROP_PATH = PathSpec(PATH_DROP, NO_INDEX)


def choice_paths(choice: Choice) -> frozenset[PathSpec]:
    if choice.kind is Kind.DROP:
        return frozenset({DROP_PATH})
    if choice.kind is Kind.FIB:
        return frozenset()
    return frozenset(PathSpec(PATH_NORMAL, lk.sw_if_index, lk.next_hop)
                     for lk in choice.links if lk.sw_if_index is not None)


def path_from_dump(p: Any) -> PathSpec:
    if int(p.type) == PATH_DROP:
        return DROP_PATH
    return PathSpec(int(p.type), int(p.sw_if_index), IPv4Address(p.nh.address.ip4))


def new_policy_id(planning: Planning) -> int:
    pid = POLICY_ID_BASE
    while pid in planning.taken:
        pid += 1
    planning.taken.add(pid)
    return pid


def _paths_op(rule_id: str, policy_id: int, ref: Ref, paths: Iterable[PathSpec],
              is_add: bool) -> Op:
    """Add (or remove) paths; the last removal deletes the policy in VPP."""
    ordered = sorted(paths)

    def args(add: bool) -> dict[str, Any]:
        return {"is_add": add,
                "policy": {"policy_id": policy_id, "acl_index": ref, "n_paths": len(ordered),
                           "paths": [p.args() for p in ordered]}}

    text = ", ".join(p.describe() for p in ordered)
    do, undo = ("add", "remove") if is_add else ("remove", "add")
    return Op("abf_policy_add_del", args(is_add),
              f"rule {rule_id}: ABF policy {policy_id} {do} paths {text}",
              undo=(Op("abf_policy_add_del", args(not is_add),
                       f"rule {rule_id}: ABF policy {policy_id} {undo} paths {text}"),))


class AbfPolicyKind(PolicyKind):
    name = "abf_policy"
    messages = ("abf_policy_add_del", "abf_policy_dump")

    def read_request(self) -> tuple[str, dict[str, Any]]:
        return "abf_policy_dump", {}

    def absorb(self, details: Sequence[Any], obs: Observed, reading: Reading) -> None:
        """Policies on the agent's ACLs: the rule's first safe one is its policy, a
        second one is an extra, one with a path outside `live` is abandoned."""
        by_acl = reading.owners.get("acl", {})
        by_policy: dict[int, ObservedRule] = {}
        for p in details:
            pol = p.policy
            obs.used_policy_ids.add(int(pol.policy_id))
            owner = by_acl.get(int(pol.acl_index))
            if owner is None:
                continue
            paths = frozenset(path_from_dump(x) for x in pol.paths[: int(pol.n_paths)])
            pid = int(pol.policy_id)
            live = reading.live
            if live is not None and any(x.type != PATH_DROP and x not in live for x in paths):
                held = ObservedRule(owner.rule_id, owner.acl_index, (), pid, paths)
                obs.abandoned.append(held)
            elif owner.policy_id is not None:
                held = ObservedRule(owner.rule_id, owner.acl_index, (), pid, paths)
                obs.extras.append(held)
            else:
                owner.policy_id, owner.paths = pid, paths
                held = owner
            by_policy[pid] = held
        reading.owners[self.name] = by_policy

    def plan(self, observed: Observed, desired: Sequence[DesiredRule],
             leftovers: Sequence[Leftover], planning: Planning) -> tuple[list[Op], list[Op]]:
        put: list[Op] = []
        take: list[Op] = []
        for d in desired:
            ref = acl_ref(d.rule_id)
            obs = observed.rules.get(d.rule_id)
            had_id = obs.policy_id if obs is not None else None
            had = obs.paths if obs is not None else frozenset()
            if not d.paths:  # the FIB decides: no policy
                if had_id is not None and had:
                    take.append(_paths_op(d.rule_id, had_id, ref, had, False))
                continue
            pid = had_id if had_id is not None else new_policy_id(planning)
            planning.policy_ids[d.rule_id] = pid
            if d.paths - had:
                put.append(_paths_op(d.rule_id, pid, ref, d.paths - had, True))
            if had - d.paths:
                take.append(_paths_op(d.rule_id, pid, ref, had - d.paths, False))
        for lo in leftovers:
            r = lo.rule
            if not lo.keep_paths and r.policy_id is not None and r.paths:
                take.append(_paths_op(r.rule_id, r.policy_id, lo.ref, r.paths, False))
        return put, take


KIND = AbfPolicyKind()
