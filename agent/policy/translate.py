"""Rules + choices -> desired VPP objects -> operations with undo. Pure code.

Each rule owns three kinds of VPP object (section 13.4 of the protocol notes):

* an ACL tagged `mlp:<rule id>` with flexiagent's pairs of permit entries
  (destination = prefix/ports for the forward direction, source = prefix/ports for
  the return direction; ports without a protocol give a TCP and a UDP pair);
* an ABF policy on that ACL whose paths are the rule's current choice (a drop
  path for `fallback: drop`; no policy at all when the FIB should decide);
* the policy's attachments, priority = the rule's priority, on the LAN-side
  interfaces (and the WANs with `apply-on-wan-rx`).

Real VPP 26.06 crashes when the paths of a policy are changed while one of them goes
through a deleted interface (and after a path was added twice). So the agent never
adds a path a policy has, takes a tunnel out of the policies before it is deleted
(PolicyManager.release), and when a policy still has a path that is not one of the
current links (`live` paths) it leaves that policy's paths alone: it only detaches
it and gives the rule a new policy.

The ACL tag is how the agent recognises its own objects after a restart: observe
reads the three dumps into `Observed`, `diff` turns observed -> desired into the
fewest writes (none when in sync), new paths before old ones are removed so
traffic always has somewhere to go. ACL indexes travel as `Ref("acl:<rule>")`,
pre-filled from the dumps, because VPP assigns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.policy.decide import Choice, Kind
from agent.policy.model import Match, Protocol, Rule, expand_protocols
from agent.vpp.plan import Op, Ref

NO_INDEX = 0xFFFFFFFF
TAG_PREFIX = "mlp:"
POLICY_ID_BASE = 0x6D6C0000  # "ml..": clear of small ids other ABF users pick
PERMIT = 1
PATH_NORMAL, PATH_DROP = 0, 2
PROTO_NUMBERS = {Protocol.ANY: 0, Protocol.TCP: 6, Protocol.UDP: 17}
ANY_NET = IPv4Network("0.0.0.0/0")
ALL_PORTS = (0, 65535)
ANY_ADDR = IPv4Address(0)


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


@dataclass(frozen=True)
class DesiredRule:
    rule_id: str
    acl: tuple[AclEntry, ...]
    paths: frozenset[PathSpec]  # empty: no ABF policy (the FIB decides)
    attach: frozenset[int]  # sw_if_index of ingress interfaces
    priority: int


@dataclass
class ObservedRule:
    rule_id: str
    acl_index: int
    acl: tuple[AclEntry, ...]
    policy_id: int | None = None
    paths: frozenset[PathSpec] = frozenset()
    attach: dict[int, int] = field(default_factory=dict)  # sw_if_index -> priority


@dataclass
class Observed:
    rules: dict[str, ObservedRule] = field(default_factory=dict)
    orphans: list[ObservedRule] = field(default_factory=list)  # duplicate tags: deleted
    used_policy_ids: set[int] = field(default_factory=set)  # every ABF policy id in VPP
    extras: list[ObservedRule] = field(default_factory=list)  # 2nd policy on an ACL: removed
    abandoned: list[ObservedRule] = field(default_factory=list)  # unsafe paths: detached only

    def refs(self) -> dict[str, int]:
        out = {acl_ref(r.rule_id).name: r.acl_index for r in self.rules.values()}
        out.update({_orphan_ref(r).name: r.acl_index for r in self.orphans})
        return out


def acl_ref(rule_id: str) -> Ref:
    return Ref(f"acl:{rule_id}")


def _orphan_ref(r: ObservedRule) -> Ref:
    return Ref(f"acl:{r.rule_id}#{r.acl_index}")


def acl_tag(rule_id: str) -> str:
    return f"{TAG_PREFIX}{rule_id}"


# -- desired ------------------------------------------------------------------------


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


def choice_paths(choice: Choice) -> frozenset[PathSpec]:
    if choice.kind is Kind.DROP:
        return frozenset({DROP_PATH})
    if choice.kind is Kind.FIB:
        return frozenset()
    return frozenset(PathSpec(PATH_NORMAL, lk.sw_if_index, lk.next_hop)
                     for lk in choice.links if lk.sw_if_index is not None)


def desired_rules(rules: Sequence[Rule], choices: Mapping[str, Choice],
                  lan: Iterable[int], wan: Iterable[int]) -> list[DesiredRule]:
    lan_set, wan_set = frozenset(lan), frozenset(wan)
    out = []
    for r in rules:
        attach = lan_set | wan_set if r.apply_on_wan_rx else lan_set
        out.append(DesiredRule(r.id, acl_entries(r.matches), choice_paths(choices[r.id]),
                               attach, r.priority))
    return out


# -- observed -------------------------------------------------------------------------


def _net(prefix: Any) -> IPv4Network:
    return IPv4Network(prefix) if not isinstance(prefix, IPv4Network) else prefix


def entry_from_dump(r: Any) -> AclEntry:
    return AclEntry(_net(r.src_prefix), _net(r.dst_prefix), int(r.proto),
                    (int(r.srcport_or_icmptype_first), int(r.srcport_or_icmptype_last)),
                    (int(r.dstport_or_icmpcode_first), int(r.dstport_or_icmpcode_last)),
                    int(r.is_permit))


def path_from_dump(p: Any) -> PathSpec:
    if int(p.type) == PATH_DROP:
        return DROP_PATH
    return PathSpec(int(p.type), int(p.sw_if_index), IPv4Address(p.nh.address.ip4))


def observe(acls: Iterable[Any], policies: Iterable[Any], attachments: Iterable[Any],
            live: frozenset[PathSpec] | None = None) -> Observed:
    """acl_dump, abf_policy_dump and abf_itf_attach_dump details -> what the agent owns.

    `live`: the paths of the links that exist now; a policy with any other normal path
    may go through a deleted interface and is abandoned (None: trust every path)."""
    obs = Observed()
    by_acl: dict[int, ObservedRule] = {}
    for a in sorted(acls, key=lambda a: int(a.acl_index)):
        tag = str(a.tag)
        if not tag.startswith(TAG_PREFIX):
            continue
        rule = ObservedRule(tag[len(TAG_PREFIX):], int(a.acl_index),
                            tuple(entry_from_dump(r) for r in a.r[: int(a.count)]))
        if rule.rule_id in obs.rules:
            obs.orphans.append(rule)
        else:
            obs.rules[rule.rule_id] = rule
        by_acl[rule.acl_index] = rule
    by_policy: dict[int, ObservedRule] = {}
    for p in policies:
        pol = p.policy
        obs.used_policy_ids.add(int(pol.policy_id))
        owner = by_acl.get(int(pol.acl_index))
        if owner is None:
            continue
        paths = frozenset(path_from_dump(x) for x in pol.paths[: int(pol.n_paths)])
        pid = int(pol.policy_id)
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
    for at in attachments:
        att = at.attach
        owner = by_policy.get(int(att.policy_id))
        if owner is not None and not att.is_ipv6:
            owner.attach[int(att.sw_if_index)] = int(att.priority)
    return obs


# -- operations ------------------------------------------------------------------------


def _acl_args(index: Any, rule_id: str, entries: Sequence[AclEntry]) -> dict[str, Any]:
    return {"acl_index": index, "tag": acl_tag(rule_id), "count": len(entries),
            "r": [e.args() for e in entries]}


def _acl_create(rule_id: str, entries: Sequence[AclEntry], ref: Ref) -> Op:
    return Op("acl_add_replace", _acl_args(NO_INDEX, rule_id, entries),
              f"rule {rule_id}: create ACL ({len(entries)} entries)",
              undo=(Op("acl_del", {"acl_index": ref}, f"rule {rule_id}: delete ACL"),),
              produces=ref.name, produces_field="acl_index")


def _acl_delete(rule_id: str, entries: Sequence[AclEntry], ref: Ref) -> Op:
    recreate = Op("acl_add_replace", _acl_args(NO_INDEX, rule_id, entries),
                  f"rule {rule_id}: re-create ACL", produces=ref.name,
                  produces_field="acl_index")
    return Op("acl_del", {"acl_index": ref}, f"rule {rule_id}: delete ACL", undo=(recreate,))


def _paths_op(rule_id: str, policy_id: int, ref: Ref, paths: Iterable[PathSpec],
              is_add: bool) -> Op:
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


def _teardown(r: ObservedRule, ref: Ref) -> tuple[list[Op], list[Op], list[Op]]:
    """Detach, remove every path, delete the ACL: (detaches, path removals, ACL delete)."""
    detach, unpath = [], []
    if r.policy_id is not None:
        detach = [_attach_op(r.rule_id, r.policy_id, i, p, False)
                  for i, p in sorted(r.attach.items())]
        if r.paths:
            unpath = [_paths_op(r.rule_id, r.policy_id, ref, r.paths, False)]
    return detach, unpath, [_acl_delete(r.rule_id, r.acl, ref)]


def diff(observed: Observed, desired: Sequence[DesiredRule]) -> list[Op]:
    """The writes that take VPP from `observed` to `desired`; [] when in sync.

    Order: ACLs, policy paths added, attachments added, attachments removed, paths
    removed (the last removal deletes a policy), ACLs deleted.
    """
    acls: list[Op] = []
    add_paths: list[Op] = []
    attach: list[Op] = []
    detach: list[Op] = []
    del_paths: list[Op] = []
    del_acls: list[Op] = []
    taken = set(observed.used_policy_ids)

    def new_policy_id() -> int:
        pid = POLICY_ID_BASE
        while pid in taken:
            pid += 1
        taken.add(pid)
        return pid

    wanted = {d.rule_id for d in desired}
    for d in desired:
        ref = acl_ref(d.rule_id)
        obs = observed.rules.get(d.rule_id)
        if obs is None:
            acls.append(_acl_create(d.rule_id, d.acl, ref))
            obs = ObservedRule(d.rule_id, -1, d.acl)
        elif obs.acl != d.acl:
            acls.append(Op("acl_add_replace", _acl_args(ref, d.rule_id, d.acl),
                           f"rule {d.rule_id}: replace ACL ({len(d.acl)} entries)",
                           undo=(Op("acl_add_replace", _acl_args(ref, d.rule_id, obs.acl),
                                    f"rule {d.rule_id}: restore ACL"),)))
        if not d.paths:  # the FIB decides: no policy
            if obs.policy_id is not None:
                det, unp, _ = _teardown(obs, ref)
                detach += det
                del_paths += unp
            continue
        pid = obs.policy_id if obs.policy_id is not None else new_policy_id()
        if d.paths - obs.paths:
            add_paths.append(_paths_op(d.rule_id, pid, ref, d.paths - obs.paths, True))
        if obs.paths - d.paths:
            del_paths.append(_paths_op(d.rule_id, pid, ref, obs.paths - d.paths, False))
        for idx in sorted(d.attach):
            prio = obs.attach.get(idx)
            if prio == d.priority:
                continue
            if prio is not None:  # VPP refuses a second attachment: detach, then attach
                attach.append(_attach_op(d.rule_id, pid, idx, prio, False))
            attach.append(_attach_op(d.rule_id, pid, idx, d.priority, True))
        for idx, prio in sorted(obs.attach.items()):
            if idx not in d.attach:
                detach.append(_attach_op(d.rule_id, pid, idx, prio, False))
    stale = [(r, acl_ref(r.rule_id)) for r in observed.rules.values() if r.rule_id not in wanted]
    stale += [(r, _orphan_ref(r)) for r in observed.orphans]
    for r, ref in stale:
        det, unp, dela = _teardown(r, ref)
        detach += det
        del_paths += unp
        del_acls += dela
    for r in observed.extras:
        det, unp, _ = _teardown(r, acl_ref(r.rule_id))
        detach += det
        del_paths += unp
    for r in observed.abandoned:  # never touch its paths: detaching is safe
        detach += [_attach_op(r.rule_id, r.policy_id or 0, i, p, False)
                   for i, p in sorted(r.attach.items())]
    return acls + add_paths + attach + detach + del_paths + del_acls


def remove_all(observed: Observed) -> list[Op]:
    """Everything the agent owns, taken away."""
    return diff(observed, [])
