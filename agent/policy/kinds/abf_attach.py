"""The attachments of a rule's ABF policy: priority = the rule's priority, on the
LAN-side interfaces (and the WANs with `apply-on-wan-rx`).

VPP refuses a second attachment of a policy to an interface, so a changed priority
is a detach, then an attach. Detaching is always safe, even for a policy whose paths
are left alone (see abf_policy.py): it is how an abandoned policy is taken out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.policy.kinds.base import (
    DesiredRule,
    Leftover,
    Observed,
    Planning,
    PolicyKind,
    Reading,
)
from agent.vpp.plan import Op


def _attach_op(rule_id: str, policy_id: int, sw_if_index: int, priority: int,
               is_add: bool) -> Op:
    def args(add: bool) -> dict[str, Any]:
        return {"is_add": add, "attach": {"policy_id": policy_id, "sw_if_index": sw_if_index,
                                          "priority": priority, "is_ipv6": False}}

    verb = ("attach", "detach") if is_add else ("detach", "attach")
    what = f"ABF policy {policy_id} on sw_if_index {sw_if_index} priority {priority}"
    return Op("abf_itf_attach_add_del", args(is_add), f"rule {rule_id}: {verb[0]} {what}",
              undo=(Op("abf_itf_attach_add_del", args(not is_add),
                       f"rule {rule_id}: {verb[1]} {what}"),))


def _detach_all(rule_id: str, policy_id: int, attach: dict[int, int]) -> list[Op]:
    return [_attach_op(rule_id, policy_id, i, p, False) for i, p in sorted(attach.items())]


class AbfAttachKind(PolicyKind):
    name = "abf_attach"
    messages = ("abf_itf_attach_add_del", "abf_itf_attach_dump")

    def read_request(self) -> tuple[str, dict[str, Any]]:
        return "abf_itf_attach_dump", {}

    def absorb(self, details: Sequence[Any], obs: Observed, reading: Reading) -> None:
        by_policy = reading.owners.get("abf_policy", {})
        for at in details:
            att = at.attach
            owner = by_policy.get(int(att.policy_id))
            if owner is not None and not att.is_ipv6:
                owner.attach[int(att.sw_if_index)] = int(att.priority)

    def plan(self, observed: Observed, desired: Sequence[DesiredRule],
             leftovers: Sequence[Leftover], planning: Planning) -> tuple[list[Op], list[Op]]:
        put: list[Op] = []
        take: list[Op] = []
        for d in desired:
            obs = observed.rules.get(d.rule_id)
            had: dict[int, int] = obs.attach if obs is not None else {}
            if not d.paths:  # no policy: whatever was attached goes
                if obs is not None and obs.policy_id is not None:
                    take += _detach_all(d.rule_id, obs.policy_id, had)
                continue
            pid = planning.policy_ids[d.rule_id]
            for idx in sorted(d.attach):
                prio = had.get(idx)
                if prio == d.priority:
                    continue
                if prio is not None:  # VPP refuses a second attachment: detach, then attach
                    put.append(_attach_op(d.rule_id, pid, idx, prio, False))
                put.append(_attach_op(d.rule_id, pid, idx, d.priority, True))
            for idx, prio in sorted(had.items()):
                if idx not in d.attach:
                    take.append(_attach_op(d.rule_id, pid, idx, prio, False))
        for lo in leftovers:
            if lo.rule.policy_id is not None:
                take += _detach_all(lo.rule.rule_id, lo.rule.policy_id, lo.rule.attach)
        return put, take


KIND = AbfAttachKind()
