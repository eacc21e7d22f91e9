"""The peer connections the device should have, and keeping VPP that way.

Every change (a job, a sync, a reconcile) takes one lock, so VPP is only ever
programmed by one transaction at a time. A job's transaction:

    validate against current state -> plan -> record intents (fsync)
    -> apply all-or-nothing -> commit desired state and clear intents (fsync)

so whatever is acknowledged to the controller is on disk, and whatever was
half-done when the process died is named by the intents and reconciled away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import structlog

from agent.background import on_worker_thread
from agent.logsetup import LOG_EACH_UP_TO
from agent.peers.changes import AddPeer, Change, JobError, ModifyTargets, RemovePeer
from agent.peers.codec import cfg_hash
from agent.peers.guard import PeerIndex, route_problems, target_problem
from agent.peers.jobplan import check_added, draft_job, plan_job, sync_changes
from agent.peers.reconcile import agent_objects, plan_reconcile
from agent.peers.spec import PeerSpec
from agent.peers.store import PeerStore, SpecRows, spec_rows
from agent.peers.supervision import (
    Action,
    Endpoints,
    Policy,
    Record,
    Status,
    StatusChange,
    initiated,
    match_sas,
    step,
)
from agent.vpp.client import ConnectInfo, VppClient
from agent.vpp.errors import VppError
from agent.vpp.executor import Applied, ApplyError, Executor
from agent.vpp.kinds.profile import recreate_ops
from agent.vpp.kinds.tunnel import ref_name
from agent.vpp.plan import (
    LIVENESS_PERIOD,
    LIVENESS_RETRIES,
    Op,
    VppFacts,
    liveness_op,
    plan_routes,
    route_paths,
)
from agent.vpp.readers import (
    DevIdError,
    InterfaceInfo,
    read_address_list,
    read_addresses,
    read_gateways,
    read_interfaces,
    read_observed,
    read_sas,
    resolve_dev_id,
)

# the change types are the manager's vocabulary; they live apart so the pure job
# planning (agent.peers.jobplan) can use them
__all__ = ["AddPeer", "Change", "JobError", "JobResult", "ModifyTargets", "PeerManager",
           "PeerState", "RemovePeer"]

log = structlog.get_logger(__name__)

ADMIN_POLL_EVERY = 5  # SA polls per read of the tunnels' admin state (events push it)
# Tunnels a VPP step creates or deletes from which interface events are paused for it:
# VPP sends two per tunnel, all for interfaces the agent itself is changing
EVENTS_PAUSED_FROM = 16


class PeerState:
    """What supervision knows about one peer, for monitoring, replies and the CLI.

    The decisions live in `agent.peers.supervision`; this holds its record and
    the figures the rest of the agent reads.
    """

    def __init__(self, tunnel_id: int, initiated_at: float | None = None) -> None:
        self.tunnel_id = tunnel_id
        self.record = Record(initiated_at=initiated_at) if initiated_at is None else Record(
            initiated_at=initiated_at, reason="IKE_SA_INIT sent, waiting for the answer")
        self.since = time.monotonic()
        self.reinitiations = 0  # negotiations the agent restarted
        self.sa_uptime: float | None = None

    def __repr__(self) -> str:
        return (f"PeerState({self.tunnel_id}, {self.status.value}, {self.reason!r}, "
                f"ike={self.ike_state}, children={self.child_sas})")

    @property
    def status(self) -> Status:
        return self.record.status

    @property
    def reason(self) -> str:
        return self.record.reason

    @property
    def ike_state(self) -> str | None:
        return self.record.ike_state

    @property
    def child_sas(self) -> int:
        return self.record.child_sas

    def update(self, record: Record) -> None:
        if record.status is not self.record.status:
            self.since = time.monotonic()
            log.info("peer state", tunnel_id=self.tunnel_id, status=record.status.value,
                     reason=record.reason)
        elif record.reason != self.record.reason:
            log.info("peer state reason", tunnel_id=self.tunnel_id, status=record.status.value,
                     reason=record.reason)
        if record.status is Status.UP and self.record.status is not Status.UP:
            self.sa_uptime = 0.0
        elif record.status is not Status.UP:
            self.sa_uptime = None
        self.record = record

    def set(self, status: Status, reason: str) -> None:
        self.update(replace(self.record, status=status, reason=reason))

    def initiated(self, now: float) -> None:
        """The agent (re)created the profile with an initiation: one is in flight."""
        self.record = initiated(self.record, now)


@dataclass(frozen=True)
class JobResult:
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    writes: int = 0


class PeerManager:
    def __init__(
        self,
        vpp: VppClient,
        store: PeerStore,
        interfaces: Mapping[str, str],
        *,
        sa_poll_interval: float = 2.0,
        reinit_backoff_min: float = 2.0,
        reinit_backoff_max: float = 60.0,
        sa_init_timeout: float = 30.0,
        vpp_wait: float = 0.0,
        linux_cp: bool = True,
        liveness: tuple[int, int] = (LIVENESS_PERIOD, LIVENESS_RETRIES),
        recovery_grace: float = 600.0,
        drift_check_interval: float = 30.0,
    ) -> None:
        self.vpp = vpp
        self.store = store
        self.interfaces_cfg = dict(interfaces)
        self.executor = Executor(vpp)
        self.sa_poll_interval = sa_poll_interval
        self.reinit_backoff_min = reinit_backoff_min
        self.reinit_backoff_max = reinit_backoff_max
        self.sa_init_timeout = sa_init_timeout
        self.vpp_wait = vpp_wait  # how long a job waits for VPP's API (boot order)
        self.jobs_waiting_for_vpp = 0
        self.liveness = liveness  # VPP's DPD: period (s), retries
        self.linux_cp = linux_cp  # configured: without it the plan has no lcp step
        self.desired: dict[int, PeerSpec] = {}
        # the route guard's index of `desired`, for the monitor's many look-ups; `desired`
        # is only ever replaced, never changed in place, so its identity says when to rebuild
        self._index_of: dict[int, PeerSpec] | None = None
        self._index = PeerIndex({})
        self.states: dict[int, PeerState] = {}
        self.dynamic_routes: dict[int, tuple[IPv4Address, ...]] = {}
        self._refs: dict[str, int] = {}  # replaced, never changed in place (see below)
        self._indexes: frozenset[int] = frozenset()
        self._indexes_of: dict[str, int] | None = None
        self._intents: set[int] = set()
        self._unplaced: set[int] = set()  # desired peers the last reconcile could not program
        self._lock = asyncio.Lock()
        self._liveness_generation = 0
        self._reconciled_generation = 0
        self._change_listeners: list[Callable[[], None]] = []
        self._state_listeners: list[Callable[[Sequence[StatusChange]], None]] = []
        self._drift_listeners: list[Callable[[tuple[str, ...]], None]] = []
        self.reconcile_error: str | None = None
        self._admin: dict[int, bool] = {}  # tunnel sw_if_index -> admin-up, from VPP
        self._wake = asyncio.Event()
        self._events = False  # interface events registered on this connection
        self._admin_stale = False  # events were paused: read the admin state next poll
        self._polls = 0
        self._last_step: dict[int, float] = {}
        vpp.add_event_listener(self._on_vpp_event)
        self.wan_networks: dict[int, set[IPv4Interface]] = {}  # WAN sw_if_index -> addresses
        self.wan_gateways: set[IPv4Address] = set()  # default routes' next hops, per job
        # After a corrupt store: desired state unknown. Nothing in VPP is removed until
        # the controller's sync-device says what is wanted (or the grace time passes).
        self.recovery_grace = recovery_grace
        self.drift_check_interval = drift_check_interval
        self.drift_repairs = 0  # reconciles that found VPP changed behind the agent's back
        self.awaiting_sync = False
        self._grace_until = 0.0

    # -- startup and VPP restarts ------------------------------------------------------

    def load(self) -> None:
        self.desired, self._intents = self.store.load()
        if self.store.recovered is not None:
            self.awaiting_sync = True
            self._grace_until = time.monotonic() + self.recovery_grace
            log.error("desired state lost; waiting for the controller's sync-device before "
                      "removing anything from VPP", detail=self.store.recovered,
                      grace_s=self.recovery_grace)
        self.states = {tid: PeerState(tid) for tid in self.desired}
        log.info("desired state loaded", peers=len(self.desired),
                 pending_intents=sorted(self._intents))

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Called after the desired set changed (e.g. the monitor re-reads its targets)."""
        self._change_listeners.append(listener)

    def add_drift_listener(self, listener: Callable[[tuple[str, ...]], None]) -> None:
        """Called with the repairs when a drift check found VPP changed behind the agent's
        back (the controller must be told: it believes the device holds its config)."""
        self._drift_listeners.append(listener)

    def add_state_listener(self, listener: Callable[[Sequence[StatusChange]], None]) -> None:
        """Subscribe to SA status changes: told which tunnels' status or reason a
        supervision step (or a VPP restart) changed. SA state is read from VPP here
        only, and pushed to whoever follows it."""
        self._state_listeners.append(listener)

    async def on_vpp_connect(self, info: ConnectInfo) -> None:
        """VPP (re)connected: it may have lost everything; converge it."""
        if info.reconnected:
            log.warning("VPP restarted or reconnected; reconciling", generation=info.generation)
            changes = []
            for tid, st in self.states.items():
                st.update(Record(status=Status.CONNECTING, reason="VPP restarted"))
                self._last_step.pop(tid, None)
                changes.append(StatusChange(tid, st.status, st.reason))
            self._admin.clear()
            self._notify_state(changes)
        await self._watch_interfaces()
        await self.reconcile()

    def vpp_down_reason(self) -> str | None:
        """None while VPP's API is connected; otherwise why not (for the device state)."""
        return None if self.vpp.connected else f"VPP is not connected: {self.vpp.last_error}"

    def cfg_hash(self) -> str:
        return cfg_hash(self.desired.values())

    @property
    def in_sync(self) -> bool:
        return (self.vpp.connected and self._reconciled_generation == self.vpp.generation
                and self.reconcile_error is None and not self.awaiting_sync)

    # -- VPP facts ------------------------------------------------------------------------

    async def _facts(self, specs: Iterable[PeerSpec],
                     interfaces: dict[int, InterfaceInfo] | None = None, *,
                     check_src: bool = True,
                     wans: dict[str, set[IPv4Interface]] | None = None
                     ) -> dict[int, VppFacts]:
        """Each spec's WAN interface and VPP capabilities; with `check_src`, refuse a
        spec whose src is not an address of that interface (not needed to remove one),
        and note the addresses it read in `wans` (by dev_id, as `_wan_of` keeps them)."""
        if interfaces is None:
            interfaces = await read_interfaces(self.vpp)
        names = [i.name for i in interfaces.values()]
        by_name = {i.name: i.sw_if_index for i in interfaces.values()}
        optional = self.vpp.table_check.optional_present
        has_lcp = self.linux_cp and self.vpp.has("lcp_itf_pair_add_del_v2")
        has_mss = self.vpp.has("mss_clamp_enable_disable")
        wan_addrs: dict[int, list[IPv4Interface]] = {}
        wan_names: dict[str, str] = {}  # dev_id -> interface: resolved once per job
        out: dict[int, VppFacts] = {}
        for spec in specs:
            try:
                name = wan_names.get(spec.dev_id) or resolve_dev_id(
                    spec.dev_id, self.interfaces_cfg, names)
            except DevIdError as e:
                raise JobError(f"tunnel {spec.tunnel_id}: {e}") from None
            wan_names[spec.dev_id] = name
            sw = by_name[name]
            out[spec.tunnel_id] = VppFacts(sw, optional, has_lcp, has_mss)
            if not check_src:
                continue
            if sw not in wan_addrs:
                wan_addrs[sw] = await read_address_list(self.vpp, sw)
                self.wan_networks[sw] = set(wan_addrs[sw])
            if wans is not None:
                wans[spec.dev_id] = self.wan_networks[sw]
            _check_ike_source(spec, name, wan_addrs[sw])
        return out

    async def _wan_of(self, spec: PeerSpec, interfaces: dict[int, InterfaceInfo],
                      seen: dict[str, set[IPv4Interface]]) -> set[IPv4Interface]:
        """The addresses (with their subnets) of `spec`'s WAN interface, remembered for
        judging monitor targets that names resolve to. `seen` holds the WANs already
        read in this job (by dev_id): one dump per WAN, not one per peer."""
        if (known := seen.get(spec.dev_id)) is not None:
            return known
        try:
            name = resolve_dev_id(spec.dev_id, self.interfaces_cfg,
                                  [i.name for i in interfaces.values()])
        except DevIdError:
            seen[spec.dev_id] = set()
            return set()  # refused elsewhere (a new spec) or being removed
        sw = next(i.sw_if_index for i in interfaces.values() if i.name == name)
        addrs = seen[spec.dev_id] = await read_addresses(self.vpp, sw)
        self.wan_networks[sw] = addrs
        return addrs

    def target_problem(self, spec: PeerSpec, addr: IPv4Address) -> str | None:
        """Why a resolved monitor address must not be routed into `spec`'s tunnel."""
        wan = [a for addrs in self.wan_networks.values() for a in addrs]
        if self._index_of is not self.desired:
            self._index, self._index_of = PeerIndex(self.desired), self.desired
        return target_problem(addr, spec, self._index, wan, self.wan_gateways)

    # -- jobs ------------------------------------------------------------------------------

    async def _wait_for_vpp(self) -> None:
        """At boot the controller may deliver a job before VPP's API socket is up."""
        if self.vpp.connected or self.vpp_wait <= 0:
            return
        log.info("job waits for VPP", bound=self.vpp_wait)
        self.jobs_waiting_for_vpp += 1
        try:
            await self.vpp.wait_connected(self.vpp_wait)
        except VppError as e:
            raise JobError(str(e)) from None
        finally:
            self.jobs_waiting_for_vpp -= 1

    async def apply(self, changes: Sequence[Change],
                    alongside: Callable[[], object] | None = None) -> JobResult:
        """Apply controller changes as one all-or-nothing transaction. `alongside` (work
        that needs nothing from VPP) runs on a worker thread while VPP works on the job,
        and is done when this returns successfully."""
        await self._wait_for_vpp()
        async with self._lock:
            try:
                return await self._apply_locked(changes, alongside)
            except VppError as e:  # VPP went away while reading its state: nothing written
                raise JobError(str(e)) from None

    async def sync(self, specs: Sequence[PeerSpec]) -> JobResult:
        """Converge to exactly `specs`: unchanged peers are not touched."""
        await self._wait_for_vpp()
        async with self._lock:
            if self.awaiting_sync:
                return await self._adopt_locked(specs)
            changes = sync_changes(self.desired, specs)
            try:
                result = await self._apply_locked(changes)
            except VppError as e:
                raise JobError(str(e)) from None
            if not changes:
                result = await self._reconcile_locked()
            return result

    async def _adopt_locked(self, specs: Sequence[PeerSpec]) -> JobResult:
        """The first sync-device after the store was lost: make VPP show `specs`, re-using
        what is already there and removing the agent's other objects."""
        wanted = {s.tunnel_id: s for s in specs}
        if len(wanted) != len(specs):
            raise JobError("sync-device lists the same tunnel-id more than once")
        if not self.vpp.connected:
            raise JobError(f"VPP is not connected: {self.vpp.last_error}")
        generation = self.vpp.generation
        try:
            obs = await read_observed(self.vpp)
            facts_for = await self._facts(specs, obs.interfaces)
            owned = agent_objects(obs) | set(wanted) | self._intents
            plan = plan_reconcile(wanted, owned, obs, facts_for)
            try:
                await self.store.abegin(sorted(owned))
            except sqlite3.Error as e:
                raise JobError(f"cannot record the job in {self.store.path}: {e}; "
                               "VPP was not changed") from None
            self._intents |= owned
            if self._liveness_generation != generation:
                plan.chains.insert(0, [liveness_op()])
            refs = dict(self._refs)
            refs.update(plan.refs)
            writes_before = self.executor.writes
            try:
                await self.executor.apply(plan.chains, refs)
            except ApplyError as e:
                self._refs = refs
                raise JobError(f"{e} (adopting the controller's peers after the store "
                               "was lost; send sync-device again)") from None
            self._liveness_generation = generation
            self._refs = refs
            try:
                await self.store.acommit(specs, [])
            except sqlite3.Error as e:
                raise JobError(f"VPP now shows the {len(specs)} peers, but they cannot be "
                               f"saved in {self.store.path}: {e}; send sync-device again "
                               "when the store can be written") from None
        except VppError as e:
            raise JobError(str(e)) from None
        self.desired = wanted
        self.states = {t: PeerState(t) for t in wanted}
        self.awaiting_sync = False
        self._intents = set()
        await self._finish_reconcile(generation)
        self._notify()
        log.info("desired state restored from sync-device", peers=len(wanted),
                 writes=self.executor.writes - writes_before)
        return JobResult(notes=tuple(plan.notes), writes=self.executor.writes - writes_before)

    async def _apply_locked(self, changes: Sequence[Change],
                            alongside: Callable[[], object] | None = None) -> JobResult:
        if not changes:
            return JobResult(notes=("nothing to change",))
        if not self.vpp.connected:
            raise JobError(f"VPP is not connected: {self.vpp.last_error}")
        draft = draft_job(self.desired, changes)
        new, added = draft.new, draft.added
        interfaces = await read_interfaces(self.vpp)
        wans: dict[str, set[IPv4Interface]] = {}  # WAN addresses read in this job
        facts = await self._facts(added, interfaces, wans=wans)
        gateways: set[IPv4Address] | None = None
        hazards: list[str] = []
        index = PeerIndex(new)
        for after in draft.changed(self.desired):
            if gateways is None:  # once per job: one route lookup
                gateways = self.wan_gateways = await read_gateways(self.vpp)
            hazards += route_problems(after, index, await self._wan_of(after, interfaces, wans),
                                      gateways)
        if hazards:
            more = f"; and {len(hazards) - 10} more" if len(hazards) > 10 else ""
            raise JobError("; ".join(hazards[:10]) + more)
        warnings = check_added(added, facts)
        old_facts = await self._facts(
            [self.desired[t] for t in draft.touched if t in self.desired], interfaces,
            check_src=False)
        liveness = (liveness_op(*self.liveness)
                    if self._liveness_generation != self.vpp.generation else None)
        plan = plan_job(self.desired, draft, facts, old_facts, self.dynamic_routes, liveness,
                        warnings)
        notes = list(draft.notes)
        applied: Applied | None = None
        refs = dict(self._refs)
        writes_before = self.executor.writes
        intents = list(plan.intents)  # this job's; earlier unfinished ones stay for reconcile
        rows: asyncio.Task[SpecRows] | None = None
        side: asyncio.Task[object] | None = None
        if plan.writes_vpp:
            try:
                await self.store.abegin(intents)
            except sqlite3.Error as e:  # e.g. disk full: nothing touched yet
                raise JobError(f"cannot record the job in {self.store.path}: {e}; "
                               "VPP was not changed") from None
            self._intents |= set(intents)
            # the store's rows (and the caller's work) need nothing from VPP: made on a
            # worker thread meanwhile, started now that planning no longer competes
            rows = on_worker_thread(spec_rows, plan.upserts)
            side = None if alongside is None else on_worker_thread(alongside)
            try:
                async with self._events_paused(len(plan.intents)):
                    applied = await self.executor.apply_phases(
                        [list(plan.removals.values()), list(plan.adds.values())], refs)
            except ApplyError as e:
                self._refs = refs  # a rollback may have re-created tunnels with new indexes
                if e.rolled_back:
                    await self._clear_intents(intents)
                else:
                    self._reconciled_generation = 0  # reconcile finishes the undo
                raise JobError(str(e)) from None
            except VppError as e:
                raise JobError(str(e)) from None
            if plan.sets_liveness:
                self._liveness_generation = self.vpp.generation
        if side is not None:
            # the caller's own work: its failure is the caller's to see (it runs it
            # again), never a reason to leave this job half-committed
            with contextlib.suppress(Exception):
                await side
        try:
            await self.store.acommit(plan.upserts if rows is None else await rows,
                                     plan.deletes, clear=intents)
        except sqlite3.Error as e:  # e.g. disk full: what is not on disk is not acknowledged
            self._refs = refs
            why = f"cannot save the desired state in {self.store.path}: {e}"
            if applied is None:
                raise JobError(f"{why}; VPP was not changed") from None
            undo_errors = await self.executor.rollback(applied, refs)
            self._refs = refs
            if undo_errors:
                self._reconciled_generation = 0
                raise JobError(f"{why}; ROLLBACK INCOMPLETE ({len(undo_errors)} undo steps "
                               f"failed: {'; '.join(undo_errors[:3])}); the agent will "
                               "reconcile VPP to the last acknowledged state") from None
            await self._clear_intents(intents)
            raise JobError(f"{why}; VPP restored to its previous state") from None
        self._intents -= set(intents)
        gone = {ref_name(t) for t in plan.deletes}
        self._refs = {k: v for k, v in refs.items() if k not in gone}
        writes = self.executor.writes - writes_before
        for t in plan.deletes:
            self.states.pop(t, None)
            self.dynamic_routes.pop(t, None)
        for spec in added:
            self.states[spec.tunnel_id] = PeerState(spec.tunnel_id, initiated_at=time.monotonic()
                                                    if spec.role == "initiator" else None)
        self.desired = new
        self._notify()
        for w in plan.warnings:
            log.warning("capability gap", detail=w)
        return JobResult(plan.warnings, tuple(notes), writes)

    def _notify(self) -> None:
        for listener in self._change_listeners:
            try:
                listener()
            except Exception as e:
                log.error("change listener failed", error=repr(e))

    # -- monitoring routes -------------------------------------------------------------------

    async def set_dynamic_routes(self, tunnel_id: int, addrs: Iterable[IPv4Address]) -> None:
        """Resolved monitor URL addresses: a /32 each via the tunnel (not persisted)."""
        async with self._lock:
            spec = self.desired.get(tunnel_id)
            if spec is None:
                return
            new = tuple(sorted(a for a in set(addrs) if self.target_problem(spec, a) is None))
            old = self.dynamic_routes.get(tunnel_id, ())
            if new == old:
                return
            plan = plan_routes(tunnel_id, route_paths(spec, old), route_paths(spec, new))
            refs = dict(self._refs)
            await self.executor.apply([list(plan.ops)], refs)
            self.dynamic_routes[tunnel_id] = new

    # -- reconcile ---------------------------------------------------------------------------

    async def reconcile(self) -> JobResult:
        async with self._lock:
            return await self._reconcile_locked()

    async def check_drift(self) -> JobResult:
        """Compare VPP with the desired state while in sync: whatever was changed behind
        the agent's back (vppctl, `peerctl --force vpp`) on what it owns is repaired."""
        result = await self.reconcile()
        if result.writes:
            self.drift_repairs += 1
            log.warning("VPP drifted from the desired state; repaired",
                        changes=list(result.notes), writes=result.writes)
            for listener in self._drift_listeners:
                try:
                    listener(result.notes)
                except Exception as e:
                    log.error("drift listener failed", error=repr(e))
        return result

    async def _reconcile_locked(self) -> JobResult:
        generation = self.vpp.generation
        try:
            obs = await read_observed(self.vpp)
            self.wan_gateways = obs.gateways  # for resolved monitor targets until a job
            facts_for: dict[int, VppFacts] = {}
            desired: dict[int, PeerSpec] = {}
            try:
                facts_for = await self._facts(self.desired.values(), obs.interfaces)
                desired = dict(self.desired)
            except JobError:
                # some peer cannot be placed (its WAN is gone): find which, keep the rest
                for tid, spec in self.desired.items():
                    try:
                        facts_for.update(await self._facts([spec], obs.interfaces))
                        desired[tid] = spec
                    except JobError as e:
                        self.states.setdefault(tid, PeerState(tid)).set(Status.DOWN, str(e))
            self._unplaced = set(self.desired) - set(desired)
            if self.awaiting_sync and time.monotonic() >= self._grace_until:
                self.awaiting_sync = False
                log.warning("no sync-device within the grace time after the store was "
                            "lost; removing the agent's objects from VPP",
                            grace_s=self.recovery_grace)
            if self.awaiting_sync:
                owned: set[int] = set()  # desired unknown: remove nothing yet
            else:
                owned = self._intents | set(self.desired) | agent_objects(obs)
            plan = plan_reconcile(desired, owned, obs, facts_for, self.dynamic_routes)
            if plan.empty:
                self._refs = {**self._refs, **plan.refs}
                await self._finish_reconcile(generation)
                log.info("VPP in sync with desired state", peers=len(self.desired))
                return JobResult()
            few = len(plan.notes) <= LOG_EACH_UP_TO
            for note in plan.notes:
                (log.info if few else log.debug)("reconcile", detail=note)
            if not few:  # after a VPP restart: one line, not one per tunnel
                log.info("reconcile", changes=len(plan.notes), first=plan.notes[:3])
            if self._liveness_generation != generation:
                plan.chains.insert(0, [liveness_op(*self.liveness)])
            refs = dict(self._refs)
            refs.update(plan.refs)
            writes_before = self.executor.writes
            async with self._events_paused(len(plan.chains)):
                await self.executor.apply(plan.chains, refs)
            self._liveness_generation = generation
            self._refs = refs
            self._note_initiations(plan.chains)
            await self._finish_reconcile(generation)
            writes = self.executor.writes - writes_before
            log.info("VPP reconciled", writes=writes, changes=len(plan.notes))
            return JobResult(notes=tuple(plan.notes), writes=writes)
        except (VppError, ApplyError) as e:
            self.reconcile_error = str(e)
            log.error("reconcile failed; will retry", error=str(e))
            return JobResult(notes=(f"reconcile failed: {e}",))

    def _note_initiations(self, chains: Iterable[Iterable[Op]]) -> None:
        """Profiles re-created with an initiation: supervision counts from now."""
        now = time.monotonic()
        for chain in chains:
            for op in chain:
                if op.message == "ikev2_initiate_sa_init" and op.tunnel_id is not None:
                    self.states.setdefault(op.tunnel_id, PeerState(op.tunnel_id)).initiated(now)

    async def _clear_intents(self, only: Iterable[int] | None = None) -> None:
        """These tunnels (None: all) are exactly as acknowledged: none is half-made.
        A store that cannot write now keeps its rows; they only cause a later check."""
        try:
            await self.store.aclear_intents(only)
        except sqlite3.Error as e:
            log.warning("cannot clear intents; kept for the next reconcile", error=str(e))
            return
        self._intents = set() if only is None else self._intents - set(only)

    async def _finish_reconcile(self, generation: int) -> None:
        if self._intents:
            await self._clear_intents()
        self._reconciled_generation = generation
        self.reconcile_error = None

    # -- SA supervision ------------------------------------------------------------------------

    async def supervise_forever(self) -> None:
        """Poll SA state (sooner when VPP reports a tunnel's admin state changed), restart
        failed or stalled negotiations with capped backoff, retry failed reconciles."""
        next_drift_check = time.monotonic() + self.drift_check_interval
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sa_poll_interval):
                    await self._wake.wait()
                woken = True
                # an event: let its burst (a job toggling many tunnels) settle first
                await asyncio.sleep(min(0.2, self.sa_poll_interval))
            self._wake.clear()
            if self._lock.locked():
                if not woken:
                    continue  # a job or reconcile is changing VPP: look when it is done
                # an event during it (an SA lost or installed) is not left to the timer
                async with self._lock:
                    pass
            if not self.vpp.connected:
                continue
            try:
                if not self.in_sync or self._unplaced:
                    # also while a peer's WAN is missing: after a VPP restart the agent
                    # may connect before VPP's startup-config created the interfaces
                    await self.reconcile()
                elif time.monotonic() >= next_drift_check:
                    await self.check_drift()
                    next_drift_check = time.monotonic() + self.drift_check_interval
                if not self.in_sync:
                    # VPP 26.06 crashes (SIGSEGV) on ikev2_initiate_sa_init for a profile
                    # it does not have: never initiate what is not known to be programmed
                    continue
                await self.supervise_once()
            except VppError as e:
                log.warning("SA supervision skipped", error=str(e))

    def _policy(self, spec: PeerSpec) -> Policy:
        return Policy(role=spec.role, dst=str(spec.dst), sa_init_timeout=self.sa_init_timeout,
                      backoff_min=self.reinit_backoff_min, backoff_max=self.reinit_backoff_max,
                      pending_grace=min(2.5, self.sa_init_timeout), ike_ecp=spec.ike.ecp)

    async def supervise_once(self) -> None:
        """One supervision step for every tunnel: read, decide (pure), act."""
        self._polls += 1
        if self._polls % ADMIN_POLL_EVERY == 1 or not self._events or self._admin_stale:
            # the admin state is pushed by interface events; reading it is the safety net
            self._admin_stale = False
            sas, interfaces = await asyncio.gather(read_sas(self.vpp),
                                                   read_interfaces(self.vpp))
            for info in interfaces.values():
                self._admin[info.sw_if_index] = info.admin_up
        else:
            sas = await read_sas(self.vpp)
        endpoints = {tid: Endpoints(spec.src, spec.dst,
                                    (int(spec.local_id.type), spec.local_id.value),
                                    (int(spec.remote_id.type), spec.remote_id.value))
                     for tid, spec in self.desired.items()}
        matched = match_sas(sas, endpoints)
        now = time.monotonic()
        restart: list[PeerSpec] = []
        changed: list[StatusChange] = []
        for tid, spec in list(self.desired.items()):
            if tid in self._unplaced:
                continue  # reconcile could not program it and said why
            st = self.states.setdefault(tid, PeerState(tid))
            before = (st.status, st.reason)
            sw = self._refs.get(ref_name(tid))
            result = step(matched.get(tid, []), st.record, now, self._policy(spec),
                          self._admin.get(sw) if sw is not None else None)
            was_up = st.status is Status.UP
            st.update(result.record)
            if st.status is Status.UP and was_up and st.sa_uptime is not None:
                st.sa_uptime += now - self._last_step.get(tid, now)
            self._last_step[tid] = now
            if len(matched.get(tid, [])) > 1:
                log.warning("more than one IKE SA for a tunnel", tunnel_id=tid,
                            ike_sas=len(matched[tid]))
            if result.action is Action.RESTART:
                restart.append(spec)
            if before != (st.status, st.reason):
                changed.append(StatusChange(tid, st.status, st.reason))
        if changed:
            self._notify_state(changed)
        if restart:
            await self._restart(restart, now)

    async def _restart(self, specs: list[PeerSpec], decided: float) -> None:
        """Delete and re-create each profile, then initiate: VPP drops every initiation
        still pending for it, so exactly one negotiation is in flight afterwards."""
        async with self._lock:
            # skip tunnels removed, changed or re-initiated (reconcile) since the decision
            specs = [s for s in specs if self.desired.get(s.tunnel_id) == s
                     and (st := self.states.get(s.tunnel_id)) is not None
                     and st.record.initiated_at == decided]
            if not specs or not self.vpp.connected:
                return
            try:
                facts = await self._facts(specs, check_src=False)
            except JobError as e:
                log.warning("negotiation restart skipped", error=str(e))
                return
            chains = [recreate_ops(s, facts[s.tunnel_id],
                                   "delete the profile to drop pending initiations")
                      for s in specs]
            refs = dict(self._refs)
            try:
                await self.executor.apply(chains, refs)
            except (ApplyError, VppError) as e:
                self._refs = refs
                self._reconciled_generation = 0  # let reconcile converge what is left
                log.warning("negotiation restart failed", error=str(e))
                return
            now = time.monotonic()
            for s in specs:
                st = self.states.get(s.tunnel_id)
                if st is not None:
                    st.initiated(now)
                    st.reinitiations += 1
                log.info("negotiation restarted", tunnel_id=s.tunnel_id,
                         attempt=st.record.restarts if st else None,
                         next_in=st.record.backoff if st else None)

    def _notify_state(self, changes: Sequence[StatusChange]) -> None:
        for listener in self._state_listeners:
            try:
                listener(changes)
            except Exception as e:
                log.error("state listener failed", error=repr(e))

    def _tunnel_indexes(self) -> frozenset[int]:
        """The sw_if_indexes of the agent's tunnels; rebuilt when `_refs` is replaced
        (it is never changed in place), not scanned per event: a job that adds 1000
        tunnels brings 2000 interface events."""
        if self._indexes_of is not self._refs:
            self._indexes, self._indexes_of = frozenset(self._refs.values()), self._refs
        return self._indexes

    def _on_vpp_event(self, name: str, msg: Any) -> None:
        """sw_interface_event: VPP sets a protected tunnel up when it installs a child SA
        and down when it removes one; look at the SAs now instead of at the next poll."""
        if name != "sw_interface_event":
            return
        sw = int(msg.sw_if_index)
        if sw not in self._tunnel_indexes():
            return
        self._admin[sw] = bool(int(msg.flags) & 1) and not bool(msg.deleted)
        self._wake.set()

    async def _watch_interfaces(self) -> None:
        """Ask VPP for interface events on this connection (registrations die with it)."""
        self._events = False
        try:
            await self.vpp.call("want_interface_events", enable_disable=1, pid=os.getpid())
            self._events = True
        except VppError as e:
            log.warning("interface events unavailable; SA state is polled only", error=str(e))

    @contextlib.asynccontextmanager
    async def _events_paused(self, tunnels: int) -> AsyncIterator[None]:
        """No interface events while a VPP step creates or deletes `tunnels` tunnels (at
        least EVENTS_PAUSED_FROM): VPP would send two per tunnel, which the agent ignores
        (they are its own changes): about 30 ms of VPP's CPU per 1000 tunnels, and the
        agent's decoding of them. Events of other tunnels meanwhile are lost: the next
        SA poll reads every interface's admin state instead."""
        if tunnels < EVENTS_PAUSED_FROM or not self._events:
            yield
            return
        generation = self.vpp.generation
        try:
            await self.vpp.call("want_interface_events", enable_disable=0, pid=os.getpid())
        except VppError as e:
            log.debug("interface events not paused", error=str(e))
            yield
            return
        self._events = False
        try:
            yield
        finally:
            self._admin_stale = True
            self._wake.set()
            if self.vpp.generation == generation and self.vpp.connected:
                await self._watch_interfaces()
            # else: the new connection registered on its own (on_vpp_connect)

    def peer_summary(self, tunnel_id: int) -> dict[str, Any]:
        st = self.states.get(tunnel_id, PeerState(tunnel_id))
        return {"status": st.status, "reason": st.reason, "ike_state": st.ike_state,
                "child_sas": st.child_sas, "sa_uptime": st.sa_uptime,
                "reinitiations": st.reinitiations,
                # the installed child SAs' SPIs (initiator/responder): a rekey changes them
                "spis": [f"{i:08x}/{r:08x}" for i, r in st.record.child_spis]}


def _check_ike_source(spec: PeerSpec, name: str, addrs: list[IPv4Interface]) -> None:
    """VPP sends IKE from the first address of the responder interface (the WAN), not
    from the tunnel's src: with any other src the peer sees another address than the
    one it was told, and the ipip tunnel's endpoints differ from the IKE SA's."""
    if spec.src not in {a.ip for a in addrs}:
        have = ", ".join(str(a) for a in addrs) or "no IPv4 address"
        raise JobError(
            f"tunnel {spec.tunnel_id}: src {spec.src} is not an address of {name} "
            f"(dev_id {spec.dev_id}, which has {have})")
    if spec.src != addrs[0].ip:
        raise JobError(
            f"tunnel {spec.tunnel_id}: src {spec.src} is not the first address of {name} "
            f"(dev_id {spec.dev_id}): VPP always sends IKE from {addrs[0].ip}, the first "
            "address of the WAN interface")
