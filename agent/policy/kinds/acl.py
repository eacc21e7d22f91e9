"""The ACL of a rule: tagged `mlp:<rule id>`, flexiagent's pairs of permit entries.

Destination = prefix/ports for the forward direction, source = prefix/ports for the
return direction; ports without a protocol give a TCP and a UDP pair. The tag is how
the agent recognises its own objects after a restart (a rule is known by its ACL), and
VPP assigns the index, so it travels as `Ref("acl:<rule>")`, pre-filled from the dump.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

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
from agent.policy.model import Match, Protocol, expand_protocols
from agent.vpp.plan import Op, Ref

TAG_PREFIX = "mlp:"
PERMIT = 1
PROTO_NUMBERS = {Protocol.ANY: 0, Protocol.TCP: 6, Protocol.UDP: 17}
ANY_NET = IPv4Network("0.0.0.0/0")
ALL_PORTS = (0, 65535)


@dataclass(frozen=True)
class AclEntry:
    """One permit acl_rule in the fields that matter for comparison."""

    src: IPv4Network
    dst: IPv4Network
    proto: int
    sport: tuple[int, int] = ALL_PORTS
    dport: tuple[int, int] = ALL_PORTS
    is_permit: int = PERMIT

    def args(self) -> dict[str, Any]:
        return {"is_permit": self.is_permit, "src_prefix": self.src, "dst_prefix": self.dst,
                "proto": self.proto,
                "srcport_or_icmptype_first": self.sport[0],
                "srcport_or_icmptype_last": self.sport[1],
                "dstport_or_icmpcode_first": self.dport[0],
                "dstport_or_icmpcode_last": self.dport[1],
                "tcp_flags_mask": 0, "tcp_flags_value": 0}


# -- names ---------------------------------------------------------------------------


def acl_ref(rule_id: str) -> Ref:
    return Ref(f"acl:{rule_id}")


def orphan_ref(r: ObservedRule) -> Ref:
    return Ref(f"acl:{r.rule_id}#{r.acl_index}")


def acl_tag(rule_id: str) -> str:
    return f"{TAG_PREFIX}{rule_id}"


# -- desired -------------------------------------------------------------------------


def acl_entries(matches: Iterable[Match]) -> tuple[AclEntry, ...]:
    """flexiagent's permit pairs: forward (dst = prefix/ports), return (src = prefix/ports)."""
    out: dict[AclEntry, None] = {}
    for m in matches:
        net = m.prefix or ANY_NET
        ports = m.ports or ALL_PORTS
        for proto in expand_protocols(m):
            num = PROTO_NUMBERS[proto]
            out[AclEntry(ANY_NET, net, num, ALL_PORTS, ports)] = None
            out[AclEntry(net, ANY_NET, num, ports, ALL_PORTS)] = None
    return tuple(out)


# -- observed ------------------------------------------------------------------------


def _net(prefix: Any) -> IPv4Network:
    return IPv4Network(prefix) if not isinstance(prefix, IPv4Network) else prefix


def entry_from_dump(r: Any) -> AclEntry:
    return AclEntry(_net(r.src_prefix), _net(r.dst_prefix), int(r.proto),
                    (int(r.srcport_or_icmptype_first), int(r.srcport_or_icmptype_last)),
                    (int(r.dstport_or_icmpcode_first), int(r.dstport_or_icmpcode_last)),
                    int(r.is_permit))


def leftovers(observed: Observed, desired: Sequence[DesiredRule]) -> list[Leftover]:
    """What VPP has that the desired rules do not want, in the order it is taken away:
    stale rules, duplicate tags, second policies on an ACL, abandoned policies."""
    wanted = {d.rule_id for d in desired}
    out = [Leftover(r, acl_ref(r.rule_id), True, False)
           for r in observed.rules.values() if r.rule_id not in wanted]
    out += [Leftover(r, orphan_ref(r), True, False) for r in observed.orphans]
    out += [Leftover(r, acl_ref(r.rule_id), False, False) for r in observed.extras]
    out += [Leftover(r, acl_ref(r.rule_id), False, True) for r in observed.abandoned]
    return out


# -- operations ----------------------------------------------------------------------


def _acl_args(index: Any, rule_id: str, entries: Sequence[AclEntry]) -> dict[str, Any]:
    return {"acl_index": index, "tag": acl_tag(rule_id), "count": len(entries),
            "r": [e.args() for e in entries]}


def _acl_create(rule_id: str, entries: Sequence[AclEntry], ref: Ref) -> Op:
    return Op("acl_add_replace", _acl_args(NO_INDEX, rule_id, entries),
              f"rule {rule_id}: create ACL ({len(entries)} entries)",
              undo=(Op("acl_del", {"acl_index": ref}, f"rule {rule_id}: delete ACL"),),
              produces=ref.name, produces_field="acl_index")


def _acl_replace(rule_id: str, entries: Sequence[AclEntry], before: Sequence[AclEntry],
                 ref: Ref) -> Op:
    return Op("acl_add_replace", _acl_args(ref, rule_id, entries),
              f"rule {rule_id}: replace ACL ({len(entries)} entries)",
              undo=(Op("acl_add_replace", _acl_args(ref, rule_id, before),
                       f"rule {rule_id}: restore ACL"),))


def _acl_delete(rule_id: str, entries: Sequence[AclEntry], ref: Ref) -> Op:
    recreate = Op("acl_add_replace", _acl_args(NO_INDEX, rule_id, entries),
                  f"rule {rule_id}: re-create ACL", produces=ref.name,
                  produces_field="acl_index")
    return Op("acl_del", {"acl_index": ref}, f"rule {rule_id}: delete ACL", undo=(recreate,))


class AclKind(PolicyKind):
    name = "acl"
    messages = ("acl_add_replace", "acl_del", "acl_dump")

    def read_request(self) -> tuple[str, dict[str, Any]]:
        return "acl_dump", {"acl_index": NO_INDEX}

    def absorb(self, details: Sequence[Any], obs: Observed, reading: Reading) -> None:
        """Tagged ACLs -> rules; a second ACL with a rule's tag is an orphan."""
        by_acl: dict[int, ObservedRule] = {}
        for a in sorted(details, key=lambda a: int(a.acl_index)):
            tag = str(a.tag)
            if not tag.startswith(TAG_PREFIX):
                continue
            rule = ObservedRule(tag[len(TAG_PREFIX):], int(a.acl_index),
                                tuple(entry_from_dump(r) for r in a.r[: int(a.count)]))
            if rule.rule_id in obs.rules:
                obs.orphans.append(rule)
                obs.indexes[orphan_ref(rule).name] = rule.acl_index
            else:
                obs.rules[rule.rule_id] = rule
                obs.indexes[acl_ref(rule.rule_id).name] = rule.acl_index
            by_acl[rule.acl_index] = rule
        reading.owners[self.name] = by_acl

    def plan(self, observed: Observed, desired: Sequence[DesiredRule],
             leftovers: Sequence[Leftover], planning: Planning) -> tuple[list[Op], list[Op]]:
        put: list[Op] = []
        for d in desired:
            ref = acl_ref(d.rule_id)
            obs = observed.rules.get(d.rule_id)
            if obs is None:
                put.append(_acl_create(d.rule_id, d.acl, ref))
            elif obs.acl != d.acl:
                put.append(_acl_replace(d.rule_id, d.acl, obs.acl, ref))
        take = [_acl_delete(lo.rule.rule_id, lo.rule.acl, lo.ref)
                for lo in leftovers if lo.delete_acl]
        return put, take


KIND = AclKind()
