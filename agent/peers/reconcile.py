"""Desired peers vs what VPP shows -> the VPP steps that close the gap. Pure code.

Used at start, after a VPP restart and by sync-device. When VPP already matches
it yields no step at all, so a resync of an in-sync device writes nothing.
Differences are handled per kind (`agent.vpp.kinds`): drift in a kind that lives
on the tunnel interface re-creates the peer, the others repair themselves in
place (a wrong profile re-creates only the profile, missing routes are only
added).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from agent.peers.spec import PeerSpec
from agent.vpp import kinds
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.kinds.profile import profile_differences
from agent.vpp.kinds.tunnel import observed_index, ref_name
from agent.vpp.ops import Op, VppFacts

__all__ = ["ReconcilePlan", "agent_objects", "plan_reconcile", "profile_differences"]


@dataclass
class ReconcilePlan:
    chains: list[list[Op]] = field(default_factory=list)
    refs: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why each chain exists, for the log

    @property
    def empty(self) -> bool:
        return not any(self.chains)


def agent_objects(obs: Observed) -> set[int]:
    """Tunnel ids whose VPP objects carry the agent's marks: an IKEv2 profile `peer-<N>`,
    or an ipip tunnel of instance N whose Linux pair is `peer<N>`. With the intents the
    store records before VPP is touched, this finds everything the agent ever made
    (after a crash, a lost connection, a corrupt store) and nothing it did not make."""
    return kinds.owned(obs)


def plan_reconcile(
    desired: Mapping[int, PeerSpec],
    owned: Iterable[int],
    obs: Observed,
    facts_for: Mapping[int, VppFacts],
    dynamic_routes: Mapping[int, Iterable[IPv4Address]] | None = None,
    kind_list: Sequence[Kind] = kinds.KINDS,
) -> ReconcilePlan:
    """Steps that make VPP show `desired`, removing owned peers that are not desired.

    `facts_for` gives each desired tunnel's VPP facts (its WAN interface).
    """
    plan = ReconcilePlan()
    dynamic_routes = dynamic_routes or {}
    for tid in sorted(set(owned) - set(desired)):
        chain = _cleanup(tid, obs, plan, kind_list)
        if chain:
            plan.chains.append(chain)
            plan.notes.append(f"tunnel {tid}: not desired, removing its leftovers")
    for tid, spec in sorted(desired.items()):
        facts = facts_for[tid]
        extra = tuple(dynamic_routes.get(tid, ()))
        sw = observed_index(obs, tid)
        problems = ["tunnel missing"] if sw is None else [
            p for k in kind_list if k.recreates_peer for p in k.drift(spec, facts, obs, sw)]
        if sw is None or problems:
            chain = _cleanup(tid, obs, plan, kind_list) + kinds.create(spec, facts, extra,
                                                                       kind_list)
            plan.chains.append(chain)
            plan.notes.append(f"tunnel {tid}: {', '.join(problems)}: programming it")
            continue
        plan.refs[ref_name(tid)] = sw
        chain = []
        for kind in kind_list:
            if kind.recreates_peer:
                continue
            ops, note = kind.repair(spec, facts, obs, sw, extra)
            chain += ops
            if note is not None:
                plan.notes.append(f"tunnel {tid}: {note}")
        if chain:
            plan.chains.append(chain)
    return plan


def _cleanup(tid: int, obs: Observed, plan: ReconcilePlan, kind_list: Sequence[Kind]) -> list[Op]:
    sw = observed_index(obs, tid)
    if sw is not None:
        plan.refs[ref_name(tid)] = sw
    return kinds.delete(tid, obs, kind_list)
