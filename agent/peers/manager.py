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
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import structlog

from agent.peers.codec import cfg_hash
from agent.peers.guard import route_problems, target_problem
from agent.peers.reconcile import agent_objects, plan_reconcile
from agent.peers.spec import PeerSpec
from agent.peers.store import PeerStore
from agent.vpp.client import ConnectInfo, VppClient
from agent.vpp.errors import VppError
from agent.vpp.executor import Applied, ApplyError, Executor
from agent.vpp.plan import (
    LIVENESS_PERIOD,
    LIVENESS_RETRIES,
    CapabilityError,
    Op,
    VppFacts,
    check_capabilities,
    liveness_op,
    plan_add_ops,
    plan_remove,
    plan_routes,
    route_prefixes,
)
from agent.vpp.readers import (
    DevIdError,
    InterfaceInfo,
    SaInfo,
    read_addresses,
    read_interfaces,
    read_observed,
    read_sas,
    resolve_dev_id,
    swap_spi,
)

log = structlog.get_logger(__name__)

FAILED_STATES = {
    "AUTH_FAILED": "AUTH_FAILED: authentication failed (PSK or IKE IDs do not match the peer)",
    "NO_PROPOSAL_CHOSEN": "NO_PROPOSAL_CHOSEN: the peer accepts none of our IKE/ESP proposals",
    "TS_UNACCEPTABLE": "TS_UNACCEPTABLE: the peer refused our traffic selectors",
}


class JobError(Exception):
    """A job cannot be done; the message is for the controller's administrator."""


@dataclass(frozen=True)
class AddPeer:
    spec: PeerSpec


@dataclass(frozen=True)
class RemovePeer:
    tunnel_id: int


@dataclass(frozen=True)
class ModifyTargets:
    tunnel_id: int
    monitor_ips: tuple[IPv4Address, ...]
    monitor_urls: tuple[str, ...]


Change = AddPeer | RemovePeer | ModifyTargets


@dataclass
class PeerState:
    """What supervision knows about one peer, for monitoring, replies and the CLI."""

    tunnel_id: int
    status: str = "connecting"  # connecting | up | down
    reason: str = "not initiated yet"
    ike_state: str | None = None
    child_sas: int = 0
    sa_uptime: float | None = None
    since: float = field(default_factory=time.monotonic)
    reinitiations: int = 0
    next_attempt: float = 0.0
    backoff: float = 0.0
    initiated_at: float | None = None

    def set(self, status: str, reason: str) -> None:
        if status != self.status:
            self.since = time.monotonic()
            log.info("peer state", tunnel_id=self.tunnel_id, status=status, reason=reason)
        self.status = status
        self.reason = reason


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
        self.states: dict[int, PeerState] = {}
        self.dynamic_routes: dict[int, tuple[IPv4Address, ...]] = {}
        self._refs: dict[str, int] = {}
        self._intents: set[int] = set()
        self._unplaced: set[int] = set()  # desired peers the last reconcile could not program
        self._lock = asyncio.Lock()
        self._liveness_generation = 0
        self._reconciled_generation = 0
        self._change_listeners: list[Callable[[], None]] = []
        self.reconcile_error: str | None = None
        self.wan_networks: dict[int, set[IPv4Interface]] = {}  # WAN sw_if_index -> addresses
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

    async def on_vpp_connect(self, info: ConnectInfo) -> None:
        """VPP (re)connected: it may have lost everything; converge it."""
        if info.reconnected:
            log.warning("VPP restarted or reconnected; reconciling", generation=info.generation)
            for st in self.states.values():
                st.set("connecting", "VPP restarted")
                st.backoff = 0.0
                st.next_attempt = 0.0
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
                     check_src: bool = True) -> dict[int, VppFacts]:
        """Each spec's WAN interface and VPP capabilities; with `check_src`, refuse a
        spec whose src is not an address of that interface (not needed to remove one)."""
        if interfaces is None:
            interfaces = await read_interfaces(self.vpp)
        names = [i.name for i in interfaces.values()]
        by_name = {i.name: i.sw_if_index for i in interfaces.values()}
        optional = self.vpp.table_check.optional_present
        has_lcp = self.linux_cp and self.vpp.has("lcp_itf_pair_add_del_v2")
        has_mss = self.vpp.has("mss_clamp_enable_disable")
        wan_addrs: dict[int, set[IPv4Interface]] = {}
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
                wan_addrs[sw] = await read_addresses(self.vpp, sw)
                self.wan_networks[sw] = wan_addrs[sw]
            if spec.src not in {a.ip for a in wan_addrs[sw]}:
                have = ", ".join(str(a) for a in sorted(wan_addrs[sw])) or "no IPv4 address"
                raise JobError(
                    f"tunnel {spec.tunnel_id}: src {spec.src} is not an address of {name} "
                    f"(dev_id {spec.dev_id}, which has {have})"
                )
        return out

    async def _wan_of(self, spec: PeerSpec,
                      interfaces: dict[int, InterfaceInfo]) -> set[IPv4Interface]:
        """The addresses (with their subnets) of `spec`'s WAN interface, remembered for
        judging monitor targets that names resolve to."""
        try:
            name = resolve_dev_id(spec.dev_id, self.interfaces_cfg,
                                  [i.name for i in interfaces.values()])
        except DevIdError:
            return set()  # refused elsewhere (a new spec) or being removed
        sw = next(i.sw_if_index for i in interfaces.values() if i.name == name)
        addrs = await read_addresses(self.vpp, sw)
        self.wan_networks[sw] = addrs
        return addrs

    def target_problem(self, spec: PeerSpec, addr: IPv4Address) -> str | None:
        """Why a resolved monitor address must not be routed into `spec`'s tunnel."""
        wan = [a for addrs in self.wan_networks.values() for a in addrs]
        return target_problem(addr, spec, self.desired, wan)

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

    async def apply(self, changes: Sequence[Change]) -> JobResult:
        """Apply controller changes as one all-or-nothing transaction."""
        await self._wait_for_vpp()
        async with self._lock:
            try:
                return await self._apply_locked(changes)
            except VppError as e:  # VPP went away while reading its state: nothing written
                raise JobError(str(e)) from None

    async def sync(self, specs: Sequence[PeerSpec]) -> JobResult:
        """Converge to exactly `specs`: unchanged peers are not touched."""
        await self._wait_for_vpp()
        async with self._lock:
            if self.awaiting_sync:
                return await self._adopt_locked(specs)
            wanted = {s.tunnel_id: s for s in specs}
            if len(wanted) != len(specs):
                raise JobError("sync-device lists the same tunnel-id more than once")
            changes: list[Change] = []
            for tid in sorted(self.desired):
                if tid not in wanted or wanted[tid] != self.desired[tid]:
                    changes.append(RemovePeer(tid))
            for tid, spec in sorted(wanted.items()):
                if self.desired.get(tid) != spec:
                    changes.append(AddPeer(spec))
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
                self.store.begin(sorted(owned))
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
                self.store.commit(specs, [])
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
        self._finish_reconcile(generation)
        self._notify()
        log.info("desired state restored from sync-device", peers=len(wanted),
                 writes=self.executor.writes - writes_before)
        return JobResult(notes=tuple(plan.notes), writes=self.executor.writes - writes_before)

    async def _apply_locked(self, changes: Sequence[Change]) -> JobResult:
        if not changes:
            return JobResult(notes=("nothing to change",))
        if not self.vpp.connected:
            raise JobError(f"VPP is not connected: {self.vpp.last_error}")
        new = dict(self.desired)
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
                new[ch.tunnel_id] = replace(old, monitor_ips=ch.monitor_ips,
                                            monitor_urls=ch.monitor_urls)
        interfaces = await read_interfaces(self.vpp)
        facts = await self._facts(added, interfaces)
        touched = self._touched(changes)
        hazards: list[str] = []
        for tid in touched:
            after = new.get(tid)
            if after is not None and self.desired.get(tid) != after:
                hazards += route_problems(after, new, await self._wan_of(after, interfaces))
        if hazards:
            more = f"; and {len(hazards) - 10} more" if len(hazards) > 10 else ""
            raise JobError("; ".join(hazards[:10]) + more)
        warnings: list[str] = []
        for spec in added:
            try:
                warnings += check_capabilities(spec, facts[spec.tunnel_id])
            except CapabilityError as e:
                raise JobError(str(e)) from None
        # Net effect per tunnel, in job order: remove the old, then add / re-route.
        # Every removal runs before any add (phase 0, then phase 1): a peer moved to a
        # new tunnel id re-uses the old one's endpoints, /31 and route paths.
        old_facts = await self._facts(
            [self.desired[t] for t in touched if t in self.desired], interfaces, check_src=False)
        removals: dict[int, list[Op]] = {}
        adds: dict[int, list[Op]] = {}
        for tid in touched:
            before, after = self.desired.get(tid), new.get(tid)
            if before == after:
                continue
            extra_before = self.dynamic_routes.get(tid, ())
            if before is not None and after is not None and _only_targets_differ(before, after):
                ops = plan_routes(tid, route_prefixes(before, extra_before),
                                  route_prefixes(after, extra_before)).ops
                removals[tid] = [op for op in ops if not op.args["is_add"]]
                adds[tid] = [op for op in ops if op.args["is_add"]]
            else:
                if before is not None:
                    removals[tid] = list(plan_remove(before, old_facts[tid], extra_before).ops)
                if after is not None:
                    adds[tid] = plan_add_ops(after, facts[tid])
        upserts = [s for t, s in new.items() if self.desired.get(t) != s]
        deletes = [t for t in self.desired if t not in new]
        applied: Applied | None = None
        refs = dict(self._refs)
        writes_before = self.executor.writes
        intents: list[int] = []  # this job's; earlier unfinished ones stay for reconcile
        if any(removals.values()) or any(adds.values()):
            if self._liveness_generation != self.vpp.generation:
                removals[-1] = [liveness_op(*self.liveness)]
            intents = sorted({t for t in (*removals, *adds) if t >= 0})
            try:
                self.store.begin(intents)
            except sqlite3.Error as e:  # e.g. disk full: nothing touched yet
                raise JobError(f"cannot record the job in {self.store.path}: {e}; "
                               "VPP was not changed") from None
            self._intents |= set(intents)
            try:
                applied = await self.executor.apply_phases(
                    [list(removals.values()), list(adds.values())], refs)
            except ApplyError as e:
                self._refs = refs  # a rollback may have re-created tunnels with new indexes
                if e.rolled_back:
                    self._clear_intents(intents)
                else:
                    self._reconciled_generation = 0  # reconcile finishes the undo
                raise JobError(str(e)) from None
            except VppError as e:
                raise JobError(str(e)) from None
            if -1 in removals:
                self._liveness_generation = self.vpp.generation
        try:
            self.store.commit(upserts, deletes, clear=intents)
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
            self._clear_intents(intents)
            raise JobError(f"{why}; VPP restored to its previous state") from None
        self._intents -= set(intents)
        self._refs = refs
        writes = self.executor.writes - writes_before
        for t in deletes:
            self.states.pop(t, None)
            self.dynamic_routes.pop(t, None)
            self._refs.pop(f"tun:{t}", None)
        for spec in added:
            self.states[spec.tunnel_id] = PeerState(spec.tunnel_id, initiated_at=time.monotonic()
                                                    if spec.role == "initiator" else None)
        self.desired = new
        self._notify()
        warnings = _collapse(warnings)
        for w in warnings:
            log.warning("capability gap", detail=w)
        return JobResult(tuple(warnings), tuple(notes), writes)

    @staticmethod
    def _touched(changes: Sequence[Change]) -> list[int]:
        seen: dict[int, None] = {}
        for ch in changes:
            seen[ch.spec.tunnel_id if isinstance(ch, AddPeer) else ch.tunnel_id] = None
        return list(seen)

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
            plan = plan_routes(tunnel_id, route_prefixes(spec, old), route_prefixes(spec, new))
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
        return result

    async def _reconcile_locked(self) -> JobResult:
        generation = self.vpp.generation
        try:
            obs = await read_observed(self.vpp)
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
                        self.states.setdefault(tid, PeerState(tid)).set("down", str(e))
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
                self._refs.update(plan.refs)
                self._finish_reconcile(generation)
                log.info("VPP in sync with desired state", peers=len(self.desired))
                return JobResult()
            for note in plan.notes:
                log.info("reconcile", detail=note)
            if self._liveness_generation != generation:
                plan.chains.insert(0, [liveness_op(*self.liveness)])
            refs = dict(self._refs)
            refs.update(plan.refs)
            writes_before = self.executor.writes
            await self.executor.apply(plan.chains, refs)
            self._liveness_generation = generation
            self._refs = refs
            self._finish_reconcile(generation)
            writes = self.executor.writes - writes_before
            log.info("VPP reconciled", writes=writes, changes=len(plan.notes))
            return JobResult(notes=tuple(plan.notes), writes=writes)
        except (VppError, ApplyError) as e:
            self.reconcile_error = str(e)
            log.error("reconcile failed; will retry", error=str(e))
            return JobResult(notes=(f"reconcile failed: {e}",))

    def _clear_intents(self, only: Iterable[int] | None = None) -> None:
        """These tunnels (None: all) are exactly as acknowledged: none is half-made.
        A store that cannot write now keeps its rows; they only cause a later check."""
        try:
            self.store.clear_intents(only)
        except sqlite3.Error as e:
            log.warning("cannot clear intents; kept for the next reconcile", error=str(e))
            return
        self._intents = set() if only is None else self._intents - set(only)

    def _finish_reconcile(self, generation: int) -> None:
        if self._intents:
            self._clear_intents()
        self._reconciled_generation = generation
        self.reconcile_error = None

    # -- SA supervision ------------------------------------------------------------------------

    async def supervise_forever(self) -> None:
        """Poll SA state, re-initiate lost SAs with capped backoff, retry failed reconciles."""
        next_drift_check = time.monotonic() + self.drift_check_interval
        while True:
            await asyncio.sleep(self.sa_poll_interval)
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

    async def supervise_once(self) -> None:
        sas = await read_sas(self.vpp)
        by_profile: dict[str, list[SaInfo]] = {}
        for sa in sas:
            by_profile.setdefault(sa.profile, []).append(sa)
        now = time.monotonic()
        for tid, spec in list(self.desired.items()):
            st = self.states.setdefault(tid, PeerState(tid))
            mine = by_profile.get(spec.profile_name, [])
            up = [s for s in mine if s.state == "AUTHENTICATED" and s.children > 0]
            if up:
                best = up[0]
                st.ike_state, st.child_sas, st.sa_uptime = best.state, best.children, best.uptime
                st.set("up", "IKE SA established, child SA installed")
                st.backoff = 0.0
                st.initiated_at = None
                continue
            failed = [s for s in mine if s.state in FAILED_STATES]
            pending = [s for s in mine if s.state in ("SA_INIT", "AUTHENTICATED")]
            st.child_sas, st.sa_uptime = 0, None
            st.ike_state = mine[0].state if mine else None
            if failed:
                st.set("down", FAILED_STATES[failed[0].state])
            elif pending and st.initiated_at is not None \
                    and now - st.initiated_at < self.sa_init_timeout:
                st.set("connecting", f"IKE {pending[0].state}")
            elif spec.role == "initiator":
                if st.initiated_at is not None and now - st.initiated_at >= self.sa_init_timeout:
                    st.set("down", f"no answer from peer {spec.dst} "
                                   f"within {self.sa_init_timeout:g} s")
                elif st.status == "up":
                    st.set("down", "IKE SA lost")
            else:
                st.set("down" if st.status == "up" else st.status,
                       "waiting for the peer to initiate")
            if spec.role == "initiator" and now >= st.next_attempt \
                    and tid not in self._unplaced:
                await self._reinitiate(spec, st, failed + pending)

    async def _reinitiate(self, spec: PeerSpec, st: PeerState, stale: list[SaInfo]) -> None:
        st.backoff = (self.reinit_backoff_min if st.backoff == 0
                      else min(st.backoff * 2, self.reinit_backoff_max))
        st.next_attempt = time.monotonic() + st.backoff
        for sa in stale:
            try:
                await self.vpp.call("ikev2_initiate_del_ike_sa", ispi=swap_spi(sa.ispi))
            except VppError as e:
                log.debug("stale SA delete failed", tunnel_id=spec.tunnel_id, error=str(e))
        try:
            await self.vpp.call("ikev2_initiate_sa_init", name=spec.profile_name)
            st.reinitiations += 1
            # the first unanswered attempt counts: on VPP a refused IKE_SA_INIT leaves
            # nothing in the dumps, so re-initiating must not restart the clock
            if st.initiated_at is None:
                st.initiated_at = time.monotonic()
            log.info("re-initiated IKE SA", tunnel_id=spec.tunnel_id,
                     attempt=st.reinitiations, next_in=st.backoff)
        except VppError as e:
            st.set("down", f"initiate failed: {e}")

    def peer_summary(self, tunnel_id: int) -> dict[str, Any]:
        st = self.states.get(tunnel_id, PeerState(tunnel_id))
        return {"status": st.status, "reason": st.reason, "ike_state": st.ike_state,
                "child_sas": st.child_sas, "sa_uptime": st.sa_uptime,
                "reinitiations": st.reinitiations}


def _collapse(warnings: list[str]) -> list[str]:
    """One line per distinct gap, naming its tunnels: 1000 peers must not mean 1000 lines."""
    by_text: dict[str, list[str]] = {}
    for w in warnings:
        head, sep, text = w.partition(": ")
        if sep and head.startswith("tunnel "):
            by_text.setdefault(text, []).append(head.removeprefix("tunnel "))
        else:
            by_text.setdefault(w, [])
    out = []
    for text, tunnels in by_text.items():
        if not tunnels:
            out.append(text)
        else:
            shown = ", ".join(tunnels[:10]) + (f" and {len(tunnels) - 10} more"
                                               if len(tunnels) > 10 else "")
            out.append(f"tunnel{'s' if len(tunnels) > 1 else ''} {shown}: {text}")
    return out


def _only_targets_differ(a: PeerSpec, b: PeerSpec) -> bool:
    return replace(a, monitor_ips=b.monitor_ips, monitor_urls=b.monitor_urls) == b


