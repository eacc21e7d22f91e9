"""The acl and abf plugins of VPP 26.06: state, semantics and request handlers.

Facts from VPP v26.06 (src/plugins/acl/acl.c, src/plugins/abf/abf_api.c,
abf_policy.c, abf_itf_attach.c; vnet/api_errno.h):

* acl_add_replace: a tag of 64 bytes or more is INVALID_VALUE; per rule an invalid
  src/dst prefix, or src and dst of different families, is INVALID_SRC_ADDRESS /
  INVALID_DST_ADDRESS; first > last port is INVALID_VALUE_2; replacing an index
  that does not exist is NO_SUCH_ENTRY (all checked before anything changes); zero
  rules are allowed. The reply always carries the acl_index (the request's one on
  error). New ACLs take pool indexes: the most recently freed first, else the next.
* acl_del: NO_SUCH_ENTRY; ACL_IN_USE_BY_LOOKUP_CONTEXT while an ABF attachment uses it
  (ABF takes a lookup context per attached interface; a policy alone does not).
* acl_dump: ~0 dumps every ACL in index order, an unknown index dumps nothing.
* abf_policy_add_del: n_paths 0 is INVALID_VALUE. Add creates the policy (the ACL is
  not checked) or adds the paths that are not there yet; adding with another
  acl_index than the policy's is INVALID_VALUE. Delete of an unknown policy is
  INVALID_VALUE; it removes the given paths, and the policy goes with its last path.
* abf_itf_attach_add_del: one attachment per (policy, interface) whatever the
  family: a second is ENTRY_ALREADY_EXISTS; detaching what is not attached is
  NO_SUCH_ENTRY; the interface is not checked. VPP only ASSERTs that the policy of
  an attach exists (a release build reads past its pool): vppsim answers
  NO_SUCH_ENTRY there instead of corrupting itself.
* Observed on real VPP 26.06 (tests/vppsim/test_acl_abf_realvpp.py): adding a path
  the policy already has answers 0, but the next change of that policy's paths
  crashes VPP (SIGSEGV in fib_node_child_remove from the abf plugin). vppsim answers
  that next change with UNSPECIFIED and logs why, so a client that re-adds paths
  fails its tests instead of crashing VPP in production. Adding a drop path to a
  policy with normal paths, or a normal path to a drop-only policy, is fine.
* Also observed: deleting an interface (ipip_del_tunnel) leaves the ABF paths through
  it in place (the dump still shows them); any later change of such a policy's paths
  crashes VPP, and a path naming an interface that does not exist is refused by the
  path decoder with NO_MATCHING_INTERFACE before anything else. Detaching still works.
  vppsim refuses the crashing change with UNSPECIFIED, as above.
* Both dumps walk their pools in index order; paths come back as VPP encodes them
  (a drop path has sw_if_index ~0, weight 0 becomes 1).

Not modelled: what VPP does with a policy whose last path is removed while it is
still attached (its node stays locked by the attachment): vppsim keeps it, with no
path, until the last detach, and dumps it with n_paths 0.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.lab.vppsim.state import (
    INVALID_VALUE,
    NO_INDEX,
    NO_SUCH_ENTRY,
    NO_SUCH_FIB,
    UNSPECIFIED,
    ApiError,
    SimState,
)

log = structlog.get_logger(__name__)

INVALID_VALUE_2 = -8
NO_MATCHING_INTERFACE = -54
INVALID_SRC_ADDRESS = -57
INVALID_DST_ADDRESS = -58
ENTRY_ALREADY_EXISTS = -116
ACL_IN_USE_BY_LOOKUP_CONTEXT = -149

PATH_DROP = 2
TAG_BYTES = 64

Reply = tuple[str, dict[str, Any]]
Handler = Callable[[Any], list[Reply]]

WRITES = frozenset({"acl_add_replace", "acl_del", "abf_policy_add_del",
                    "abf_itf_attach_add_del"})

_NO_LABELS: list[dict[str, Any]] = [{} for _ in range(16)]


class Pool:
    """VPP's pool index allocation: the last freed index first, else the next new one."""

    def __init__(self) -> None:
        self.free: list[int] = []
        self.size = 0

    def get(self) -> int:
        if self.free:
            return self.free.pop()
        self.size += 1
        return self.size - 1

    def put(self, index: int) -> None:
        self.free.append(index)


@dataclass
class Acl:
    index: int
    tag: str
    rules: list[dict[str, Any]]


@dataclass
class AbfPolicy:
    index: int  # pool index: the dump order
    policy_id: int
    acl_index: int
    paths: list[dict[str, Any]] = field(default_factory=list)
    poisoned: bool = False  # a path was added twice: real VPP crashes on the next change


@dataclass
class Attachment:
    index: int
    policy_id: int
    sw_if_index: int
    priority: int
    is_ipv6: bool
    acl_index: int


def _path_key(p: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two paths the same path (fib_path_cmp_w_route_path, roughly)."""
    return (p["type"], p["sw_if_index"], p["table_id"], p["proto"], str(p["nh"]),
            p["weight"], p["preference"])


class AclAbfState:
    """ACLs, ABF policies and attachments of one vppsim instance."""

    def __init__(self, sim: SimState) -> None:
        self.sim = sim
        self.acls: dict[int, Acl] = {}
        self._acl_pool = Pool()
        self.policies: dict[int, AbfPolicy] = {}  # by policy_id
        self._policy_pool = Pool()
        self.attachments: dict[tuple[int, int], Attachment] = {}  # (policy_id, sw_if_index)
        self._attach_pool = Pool()

    # -- acl -------------------------------------------------------------------
    def acl_add_replace(self, index: int, tag: str, rules: list[dict[str, Any]]) -> int:
        if len(tag.encode()) >= TAG_BYTES:
            raise ApiError(INVALID_VALUE, f"tag of {len(tag.encode())} bytes", acl_index=index)
        for r in rules:
            src, dst = r["src_prefix"], r["dst_prefix"]
            if src.version != dst.version:
                raise ApiError(INVALID_SRC_ADDRESS, "src and dst of different families",
                               acl_index=index)
            if r["srcport_or_icmptype_first"] > r["srcport_or_icmptype_last"]:
                raise ApiError(INVALID_VALUE_2, "source port range reversed", acl_index=index)
            if r["dstport_or_icmpcode_first"] > r["dstport_or_icmpcode_last"]:
                raise ApiError(INVALID_VALUE_2, "destination port range reversed",
                               acl_index=index)
        if index != NO_INDEX:
            acl = self.acls.get(index)
            if acl is None:
                raise ApiError(NO_SUCH_ENTRY, f"no ACL {index} to replace", acl_index=index)
            acl.tag, acl.rules = tag, rules
            return index
        index = self._acl_pool.get()
        self.acls[index] = Acl(index, tag, rules)
        return index

    def acl_del(self, index: int) -> None:
        if index not in self.acls:
            raise ApiError(NO_SUCH_ENTRY, f"no ACL {index}")
        if any(a.acl_index == index for a in self.attachments.values()):
            raise ApiError(ACL_IN_USE_BY_LOOKUP_CONTEXT, f"ACL {index} used by an ABF attachment")
        del self.acls[index]
        self._acl_pool.put(index)

    # -- abf policies ----------------------------------------------------------------
    def policy_add_del(self, is_add: bool, policy_id: int, acl_index: int,
                       paths: list[dict[str, Any]]) -> None:
        if not paths:
            raise ApiError(INVALID_VALUE, "n_paths is 0")
        for p in paths:
            if p["type"] == PATH_DROP:
                continue
            if p["sw_if_index"] == NO_INDEX:
                if (p["proto"] == 1, p["table_id"]) not in self.sim.tables:
                    raise ApiError(NO_SUCH_FIB, f"no table {p['table_id']} for a recursive path")
            elif p["sw_if_index"] not in self.sim.interfaces:
                raise ApiError(NO_MATCHING_INTERFACE, f"no interface {p['sw_if_index']}")
        pol = self.policies.get(policy_id)
        if pol is not None and pol.poisoned:
            log.error("real VPP 26.06 crashes here: a path of this ABF policy was added twice "
                      "and its paths are changed again", policy_id=policy_id)
            raise ApiError(UNSPECIFIED, f"ABF policy {policy_id}: real VPP would crash (SIGSEGV) "
                           "changing a policy after a duplicate path add")
        gone_itf = [p["sw_if_index"] for p in (pol.paths if pol else [])
                    if p["type"] != PATH_DROP and p["sw_if_index"] != NO_INDEX
                    and p["sw_if_index"] not in self.sim.interfaces]
        if gone_itf:
            log.error("real VPP 26.06 crashes here: this ABF policy has a path through a "
                      "deleted interface and its paths are changed", policy_id=policy_id,
                      sw_if_index=gone_itf[0])
            raise ApiError(UNSPECIFIED, f"ABF policy {policy_id}: real VPP would crash (SIGSEGV) "
                           f"changing a policy with a path through deleted interface "
                           f"{gone_itf[0]}")
        if is_add:
            if pol is None:
                pol = AbfPolicy(self._policy_pool.get(), policy_id, acl_index)
                self.policies[policy_id] = pol
            elif pol.acl_index != acl_index:
                raise ApiError(INVALID_VALUE,
                               f"policy {policy_id} uses ACL {pol.acl_index}, not {acl_index}")
            have = {_path_key(p) for p in pol.paths}
            for p in paths:
                if _path_key(p) in have:
                    pol.poisoned = True
                    continue
                pol.paths.append(p)
                have.add(_path_key(p))
            return
        if pol is None:
            raise ApiError(INVALID_VALUE, f"no ABF policy {policy_id}")
        gone = {_path_key(p) for p in paths}
        pol.paths = [p for p in pol.paths if _path_key(p) not in gone]
        if not pol.paths:
            self._maybe_destroy(pol)

    def _maybe_destroy(self, pol: AbfPolicy) -> None:
        if pol.paths or any(a.policy_id == pol.policy_id for a in self.attachments.values()):
            return
        del self.policies[pol.policy_id]
        self._policy_pool.put(pol.index)

    # -- abf attachments -----------------------------------------------------------------
    def attach_add_del(self, is_add: bool, policy_id: int, sw_if_index: int, priority: int,
                       is_ipv6: bool) -> None:
        key = (policy_id, sw_if_index)
        if is_add:
            pol = self.policies.get(policy_id)
            if pol is None:
                raise ApiError(NO_SUCH_ENTRY, f"no ABF policy {policy_id} (VPP only ASSERTs)")
            if key in self.attachments:
                raise ApiError(ENTRY_ALREADY_EXISTS,
                               f"policy {policy_id} already attached to {sw_if_index}")
            self.attachments[key] = Attachment(self._attach_pool.get(), policy_id, sw_if_index,
                                               priority, is_ipv6, pol.acl_index)
            return
        att = self.attachments.pop(key, None)
        if att is None:
            raise ApiError(NO_SUCH_ENTRY, f"policy {policy_id} is not attached to {sw_if_index}")
        self._attach_pool.put(att.index)
        pol = self.policies.get(policy_id)
        if pol is not None:
            self._maybe_destroy(pol)

    def forwarding(self, sw_if_index: int, is_ipv6: bool = False) -> list[tuple[int, AbfPolicy]]:
        """The policies attached to an interface, best (lowest) priority first, as
        abf-input walks them (ties in attachment order)."""
        atts = sorted((a for a in self.attachments.values()
                       if a.sw_if_index == sw_if_index and a.is_ipv6 == is_ipv6),
                      key=lambda a: (a.priority, a.index))
        return [(a.priority, self.policies[a.policy_id]) for a in atts]

    def snapshot(self) -> dict[str, Any]:
        return {
            "acls": {i: (a.tag, len(a.rules)) for i, a in sorted(self.acls.items())},
            "abf_policies": {pid: (p.acl_index, len(p.paths))
                             for pid, p in sorted(self.policies.items())},
            "abf_attachments": sorted((a.policy_id, a.sw_if_index, a.priority, a.is_ipv6)
                                      for a in self.attachments.values()),
        }


def _rule(r: Any) -> dict[str, Any]:
    return {
        "is_permit": int(r.is_permit),
        "src_prefix": ipaddress.ip_network(r.src_prefix, strict=False),
        "dst_prefix": ipaddress.ip_network(r.dst_prefix, strict=False),
        "proto": int(r.proto),
        "srcport_or_icmptype_first": r.srcport_or_icmptype_first,
        "srcport_or_icmptype_last": r.srcport_or_icmptype_last,
        "dstport_or_icmpcode_first": r.dstport_or_icmpcode_first,
        "dstport_or_icmpcode_last": r.dstport_or_icmpcode_last,
        "tcp_flags_mask": r.tcp_flags_mask,
        "tcp_flags_value": r.tcp_flags_value,
    }


def _path(p: Any) -> dict[str, Any]:
    drop = int(p.type) == PATH_DROP
    proto = int(p.proto)
    nh: Any = p.nh.address.ip6 if proto == 1 else p.nh.address.ip4
    return {
        "sw_if_index": NO_INDEX if drop else p.sw_if_index,
        "table_id": p.table_id,
        "rpf_id": p.rpf_id,
        "weight": p.weight or 1,
        "preference": p.preference,
        "type": int(p.type),
        "flags": int(p.flags),
        "proto": proto,
        "nh": ipaddress.IPv4Address(0) if drop and proto != 1 else nh,
    }


def _path_out(p: dict[str, Any]) -> dict[str, Any]:
    nh = {"address": {"ip6" if p["proto"] == 1 else "ip4": p["nh"]}}
    return {k: v for k, v in p.items() if k != "nh"} | {"nh": nh, "label_stack": _NO_LABELS}


class AclAbfHandlers:
    """The acl/abf requests vppsim serves; `table` merges into Handlers.table."""

    def __init__(self, sim: SimState) -> None:
        self.state = AclAbfState(sim)
        self.table: dict[str, Handler] = {
            name[3:]: getattr(self, name) for name in dir(self) if name.startswith("on_")
        }

    def on_acl_plugin_get_version(self, m: Any) -> list[Reply]:
        return [("acl_plugin_get_version_reply", {"major": 1, "minor": 4})]

    def on_abf_plugin_get_version(self, m: Any) -> list[Reply]:
        return [("abf_plugin_get_version_reply", {"major": 1, "minor": 0})]

    def on_acl_add_replace(self, m: Any) -> list[Reply]:
        rules = [_rule(r) for r in list(m.r)[: m.count]]
        index = self.state.acl_add_replace(m.acl_index, str(m.tag), rules)
        return [("acl_add_replace_reply", {"retval": 0, "acl_index": index})]

    def on_acl_del(self, m: Any) -> list[Reply]:
        self.state.acl_del(m.acl_index)
        return [("acl_del_reply", {"retval": 0})]

    def on_acl_dump(self, m: Any) -> list[Reply]:
        acls = sorted(self.state.acls.values(), key=lambda a: a.index)
        if m.acl_index != NO_INDEX:
            acls = [a for a in acls if a.index == m.acl_index]
        return [("acl_details", {"acl_index": a.index, "tag": a.tag, "count": len(a.rules),
                                 "r": a.rules}) for a in acls]

    def on_abf_policy_add_del(self, m: Any) -> list[Reply]:
        pol = m.policy
        paths = [_path(p) for p in list(pol.paths)[: pol.n_paths]]
        self.state.policy_add_del(bool(m.is_add), pol.policy_id, pol.acl_index, paths)
        return [("abf_policy_add_del_reply", {"retval": 0})]

    def on_abf_policy_dump(self, m: Any) -> list[Reply]:
        return [("abf_policy_details",
                 {"policy": {"policy_id": p.policy_id, "acl_index": p.acl_index,
                             "n_paths": len(p.paths), "paths": [_path_out(x) for x in p.paths]}})
                for p in sorted(self.state.policies.values(), key=lambda p: p.index)]

    def on_abf_itf_attach_add_del(self, m: Any) -> list[Reply]:
        a = m.attach
        self.state.attach_add_del(bool(m.is_add), a.policy_id, a.sw_if_index, a.priority,
                                  bool(a.is_ipv6))
        return [("abf_itf_attach_add_del_reply", {"retval": 0})]

    def on_abf_itf_attach_dump(self, m: Any) -> list[Reply]:
        return [("abf_itf_attach_details",
                 {"attach": {"policy_id": a.policy_id, "sw_if_index": a.sw_if_index,
                             "priority": a.priority, "is_ipv6": a.is_ipv6}})
                for a in sorted(self.state.attachments.values(), key=lambda a: a.index)]
