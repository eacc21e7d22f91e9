"""The contract of a policy object kind, and the desired/observed model they share.

A policy kind is one sort of VPP object a multilink rule owns (its ACL, its ABF
policy, the policy's attachments). Its module holds everything the agent knows
about it: its names, its create and delete (each with its undo), how to read it back
from VPP and how it compares with the rule. `agent.policy.kinds.KINDS` lists them in
dependency order; reading, planning and clean-up are loops over that list.

Unlike the peer kinds (`agent.vpp.kinds`), these are planned per rule and all at
once: one observed -> desired diff is one all-or-nothing executor run. A kind's
`plan` returns two lists, writes that add or change (run in kind order) and writes
that take away (run in reverse kind order), so traffic always has somewhere to go:
ACLs, paths added, attachments added, then attachments removed, paths removed,
ACLs deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from agent.vpp.plan import Op, Ref

if TYPE_CHECKING:
    from agent.policy.kinds.abf_policy import PathSpec
    from agent.policy.kinds.acl import AclEntry

NO_INDEX = 0xFFFFFFFF


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
    # VPP-assigned indexes by Ref name, pre-filled for the executor (the ACL kind's)
    indexes: dict[str, int] = field(default_factory=dict)

    def refs(self) -> dict[str, int]:
        return dict(self.indexes)


@dataclass
class Reading:
    """What one observation passes from a kind to the next (kinds absorb in order).

    `live`: the paths of the links that exist now (None: trust every path);
    `owners[kind name]`: that kind's objects by VPP id -> the rule that owns them."""

    live: frozenset[PathSpec] | None = None
    owners: dict[str, dict[int, ObservedRule]] = field(default_factory=dict)


@dataclass(frozen=True)
class Leftover:
    """Observed objects of a rule the desired state no longer wants in this form."""

    rule: ObservedRule
    ref: Ref  # its ACL index
    delete_acl: bool  # a stale rule or a duplicate tag: the ACL goes too
    keep_paths: bool  # its paths may go through a deleted interface: detach only


@dataclass
class Planning:
    """One diff's shared state: the policy ids taken so far and the ones given out."""

    taken: set[int]
    policy_ids: dict[str, int] = field(default_factory=dict)  # rule id -> its policy


class PolicyKind:
    """One VPP object kind of a rule. Kinds hold no state."""

    name: ClassVar[str] = ""
    messages: ClassVar[tuple[str, ...]] = ()  # the VPP API calls it needs

    def read_request(self) -> tuple[str, dict[str, Any]]:
        """The dump (message, fields) that reads this kind back from VPP."""
        raise NotImplementedError

    def absorb(self, details: Sequence[Any], obs: Observed, reading: Reading) -> None:
        """Put what the dump returned into `obs` (runs in kind order)."""

    def plan(self, observed: Observed, desired: Sequence[DesiredRule],
             leftovers: Sequence[Leftover], planning: Planning) -> tuple[list[Op], list[Op]]:
        """(writes that add or change, writes that take away) for every rule."""
        return [], []
