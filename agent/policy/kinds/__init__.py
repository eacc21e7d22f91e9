"""The VPP object kinds of a multilink rule, in dependency order, and the loops over them.

To add a kind: write its module (a `PolicyKind` subclass, see `base.py`, and `KIND =
YourKind()`), then add it to `KINDS` below after what it depends on. Reading absorbs
the dumps in this order; a diff runs every kind's additions in this order, then every
kind's removals in the reverse one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.policy.kinds import abf_attach, abf_policy, acl
from agent.policy.kinds.abf_policy import PathSpec
from agent.policy.kinds.base import DesiredRule, Observed, Planning, PolicyKind, Reading
from agent.vpp.plan import Op

KINDS: tuple[PolicyKind, ...] = (
    acl.KIND,  # the rule's match; VPP names it by index, the agent by its tag
    abf_policy.KIND,  # on the ACL's index
    abf_attach.KIND,  # of the policy's id
)


def messages(kinds: Sequence[PolicyKind] = KINDS) -> tuple[str, ...]:
    """The VPP API calls the kinds need (the ACL and ABF plugins loaded)."""
    return tuple(m for k in kinds for m in k.messages)


def read_requests(kinds: Sequence[PolicyKind] = KINDS) -> list[tuple[str, dict[str, Any]]]:
    """The dumps (message, fields) that read the kinds back, in kind order."""
    return [k.read_request() for k in kinds]


def observe(dumps: Sequence[Sequence[Any]], live: frozenset[PathSpec] | None = None,
            kinds: Sequence[PolicyKind] = KINDS) -> Observed:
    """The kinds' dump details (in kind order) -> what the agent owns.

    `live`: the paths of the links that exist now; a policy with any other normal path
    may go through a deleted interface and is abandoned (None: trust every path)."""
    obs = Observed()
    reading = Reading(live)
    for kind, details in zip(kinds, dumps, strict=True):
        kind.absorb(details, obs, reading)
    return obs


def diff(observed: Observed, desired: Sequence[DesiredRule],
         kinds: Sequence[PolicyKind] = KINDS) -> list[Op]:
    """The writes that take VPP from `observed` to `desired`; [] when in sync.

    Additions kind by kind (ACLs, paths added, attachments), then removals in reverse
    (attachments removed, paths removed, ACLs deleted)."""
    planning = Planning(set(observed.used_policy_ids))
    leftovers = acl.leftovers(observed, desired)  # rules are known by their ACL
    puts: list[list[Op]] = []
    takes: list[list[Op]] = []
    for kind in kinds:
        put, take = kind.plan(observed, desired, leftovers, planning)
        puts.append(put)
        takes.append(take)
    return [op for ops in puts for op in ops] + [op for ops in reversed(takes) for op in ops]


def remove_all(observed: Observed) -> list[Op]:
    """Everything the agent owns, taken away."""
    return diff(observed, [])
