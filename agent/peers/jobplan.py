"""A job's decisions, as pure functions: desired state + changes + what VPP showed
-> a typed plan. `PeerManager` reads VPP, records intents, runs the plan and
commits; everything it decides is decided here.

Two steps, because what VPP must be asked depends on the first:

    draft_job(desired, changes)                -> Draft (new desired set, added specs)
    plan_job(desired, draft, facts, ...)       -> JobPlan (ops per tunnel, store rows)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address

from agent.peers.changes import AddPeer, Change, JobError, RemovePeer
from agent.peers.spec import Identity, PeerSpec
from agent.vpp import kinds
from agent.vpp.ops import CapabilityError, DeferredChain, Gap, Op, VppFacts
from agent.vpp.plan import (
    plan_add_ops,
    plan_remove,
    plan_routes,
    route_paths,
)

GLOBAL = -1  # the chain key of VPP-global steps (liveness) in `JobPlan.removals`


@dataclass(frozen=True)
class Draft:
    """What the job does to the desired set, decided before VPP is read."""

    new: dict[int, PeerSpec]
    added: tuple[PeerSpec, ...]
    touched: tuple[int, ...]  # tunnel ids the job names, in job order
    notes: tuple[str, ...]

    def changed(self, desired: Mapping[int, PeerSpec]) -> list[PeerSpec]:
        """Specs the job adds or alters (their routes must be judged again)."""
        return [s for t in self.touched if (s := self.new.get(t)) is not None
                and desired.get(t) != s]


@dataclass(frozen=True)
class JobPlan:
    """The VPP steps of a job and the store rows that make it durable."""

    removals: dict[int, list[Op]] = field(default_factory=dict)  # run first, per tunnel
    adds: dict[int, Sequence[Op]] = field(default_factory=dict)  # run after every removal
    upserts: tuple[PeerSpec, ...] = ()
    deletes: tuple[int, ...] = ()
    intents: tuple[int, ...] = ()  # tunnels VPP is touched for: recorded before applying
    warnings: tuple[str, ...] = ()

    @property
    def writes_vpp(self) -> bool:
        return any(self.removals.values()) or any(self.adds.values())

    @property
    def sets_liveness(self) -> bool:
        return GLOBAL in self.removals


def draft_job(desired: Mapping[int, PeerSpec], changes: Sequence[Change]) -> Draft:
    """Apply the changes to the desired set in job order; refuse what cannot coexist."""
    new = dict(desired)
    endpoints = {(s.src, s.dst): t for t, s in new.items()}
    notes: list[str] = []
    added: list[PeerSpec] = []
    for ch in changes:
        if isinstance(ch, AddPeer):
            spec = ch.spec
            old = new.get(spec.tunnel_id)
            if old == spec:
                notes.append(f"tunnel {spec.tunnel_id} already configured as requested")
                continue
            if old is not None:
                raise JobError(
                    f"tunnel-id {spec.tunnel_id} already exists with different parameters; "
                    "remove it first (or send sync-device)")
            other = endpoints.get((spec.src, spec.dst))
            if other is not None and other in new:
                raise JobError(
                    f"tunnel {spec.tunnel_id}: src {spec.src} / dst {spec.dst} are "
                    f"already used by tunnel {other}; VPP allows one ipip "
                    "tunnel per endpoint pair")
            new[spec.tunnel_id] = spec
            endpoints[(spec.src, spec.dst)] = spec.tunnel_id
            added.append(spec)
        elif isinstance(ch, RemovePeer):
            if ch.tunnel_id not in new:
                notes.append(f"tunnel {ch.tunnel_id} does not exist; nothing to remove")
                continue
            del new[ch.tunnel_id]
        else:
            old = new.get(ch.tunnel_id)
            if old is None:
                raise JobError(f"modify-tunnel: tunnel-id {ch.tunnel_id} does not exist")
            new[ch.tunnel_id] = ch.applied_to(old)
    refuse_shared_ids(added, new)
    return Draft(new, tuple(added), tuple(touched(changes)), tuple(notes))


def plan_job(
    desired: Mapping[int, PeerSpec],
    draft: Draft,
    facts: Mapping[int, VppFacts],
    old_facts: Mapping[int, VppFacts],
    dynamic_routes: Mapping[int, Iterable[IPv4Address]],
    liveness: Op | None = None,
    warnings: Sequence[Gap] = (),
) -> JobPlan:
    """The steps that take VPP from `desired` to `draft.new`: per tunnel its net
    effect, in job order; removals all run before any add (a peer moved to a new
    tunnel id re-uses the old one's endpoints, /31 and route paths).

    `facts` covers the added specs, `old_facts` the touched ones being replaced or
    removed; `liveness` is the global step to prepend when VPP has not had it yet;
    `warnings` are `check_added`'s, collapsed here.
    """
    removals: dict[int, list[Op]] = {}
    adds: dict[int, Sequence[Op]] = {}
    for tid in draft.touched:
        before, after = desired.get(tid), draft.new.get(tid)
        if before == after:
            continue
        extra_before = tuple(dynamic_routes.get(tid, ()))
        if before is not None and after is not None and only_targets_differ(before, after):
            ops = plan_routes(tid, route_paths(before, extra_before),
                              route_paths(after, extra_before)).ops
            removals[tid] = [op for op in ops if not op.args["is_add"]]
            adds[tid] = [op for op in ops if op.args["is_add"]]
        else:
            if before is not None:
                removals[tid] = list(plan_remove(before, old_facts[tid], extra_before).ops)
            if after is not None:  # made by the executor (DeferredChain)
                adds[tid] = DeferredChain(partial(plan_add_ops, after, facts[tid]), tid)
    upserts = tuple(s for t, s in draft.new.items() if desired.get(t) != s)
    deletes = tuple(t for t in desired if t not in draft.new)
    intents: tuple[int, ...] = ()
    if any(removals.values()) or any(adds.values()):
        if liveness is not None:
            removals[GLOBAL] = [liveness]
        intents = tuple(sorted({t for t in (*removals, *adds) if t >= 0}))
    return JobPlan(removals, adds, upserts, deletes, intents, tuple(collapse(warnings)))


def check_added(added: Iterable[PeerSpec], facts: Mapping[int, VppFacts]) -> list[Gap]:
    """The capability gaps of the added peers; JobError for what VPP cannot do."""
    warnings: list[Gap] = []
    for spec in added:
        try:
            warnings += kinds.check(spec, facts[spec.tunnel_id])
        except CapabilityError as e:
            raise JobError(str(e)) from None
    return warnings


def sync_changes(desired: Mapping[int, PeerSpec], specs: Sequence[PeerSpec]) -> list[Change]:
    """The changes that turn `desired` into exactly `specs`; unchanged peers are not
    touched, a changed one is removed and added again."""
    wanted = {s.tunnel_id: s for s in specs}
    if len(wanted) != len(specs):
        raise JobError("sync-device lists the same tunnel-id more than once")
    changes: list[Change] = []
    for tid in sorted(desired):
        if tid not in wanted or wanted[tid] != desired[tid]:
            changes.append(RemovePeer(tid))
    for tid, spec in sorted(wanted.items()):
        if desired.get(tid) != spec:
            changes.append(AddPeer(spec))
    return changes


def touched(changes: Sequence[Change]) -> list[int]:
    seen: dict[int, None] = {}
    for ch in changes:
        seen[ch.spec.tunnel_id if isinstance(ch, AddPeer) else ch.tunnel_id] = None
    return list(seen)


def refuse_shared_ids(added: Iterable[PeerSpec], desired: Mapping[int, PeerSpec]) -> None:
    """Two tunnels with one local/remote ID pair cannot coexist in VPP: it negotiates
    with the first profile whose IDs match, and an initiation deletes every established
    SA with the same IDs, so each tunnel would tear the other down."""
    users: dict[tuple[Identity, Identity], list[int]] = {}
    for tid, other in sorted(desired.items()):
        users.setdefault((other.local_id, other.remote_id), []).append(tid)
    for spec in added:
        for tid in users.get((spec.local_id, spec.remote_id), []):
            if tid != spec.tunnel_id:
                raise JobError(
                    f"tunnel {spec.tunnel_id}: local ID {spec.local_id.value} / remote ID "
                    f"{spec.remote_id.value} are already used by tunnel {tid}; VPP matches "
                    "SAs to profiles by IDs and would tear one tunnel down with the other")


def collapse(gaps: Sequence[Gap]) -> list[str]:
    """One line per distinct gap, naming its tunnels: 1000 peers must not mean 1000 lines."""
    by_text: dict[str, list[str]] = {}
    for gap in gaps:
        by_text.setdefault(gap.text, []).append(str(gap.tunnel_id))
    out = []
    for text, tunnels in by_text.items():
        shown = ", ".join(tunnels[:10]) + (f" and {len(tunnels) - 10} more"
                                           if len(tunnels) > 10 else "")
        out.append(f"tunnel{'s' if len(tunnels) > 1 else ''} {shown}: {text}")
    return out


def only_targets_differ(a: PeerSpec, b: PeerSpec) -> bool:
    return replace(a, monitor_ips=b.monitor_ips, monitor_urls=b.monitor_urls,
                   static_routes=b.static_routes) == b
