"""Controller messages -> validated changes -> the peer manager; outcomes back.

Implements the link's JobHandler. A peering device is a drop-in flexiEdge
device (protocol reference, section 16): it applies what it implements (peer
tunnels, through the peer manager, all-or-nothing with undo) and accepts and
records every other configuration message flexiManage sends (interfaces,
routes, OSPF, BGP, policies, notifications...), keyed like flexiagent's DB, so
that `sync-device` converges and `get-device-config` can be answered. Only what
cannot be parsed is refused, with the reason.

Routing and path selection ride on the same jobs: after the recorded configuration
changed, the routing model built from it goes to FRR (agent.routing) and the
multilink policy to VPP's ACL/ABF (agent.policy), in that order after the peer
tunnels; a failure of either undoes the job's VPP steps (the routing manager restores
FRR itself), so a job is all or nothing across VPP and FRR. Parameters FRR or the
policy could not take refuse the job before anything is changed.

After every ok:1 job of the signed set that came with a job id, the
configuration hash chain advances exactly as flexiManage's (section 5); a
successful `sync-device` resets it to ''. Items, chain and router state are
written in one transaction after VPP was programmed.

Every failure becomes an `ok: 0` outcome whose text names what was wrong;
nothing secret reaches an outcome (validation masks PSKs; internal errors are
reported by type only, details go to the log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NoReturn

import structlog

from agent.jobs.cfgstore import ConfigStore, Rows, difference
from agent.jobs.devcfg import (
    ConfigRequest,
    Items,
    application_order,
    apply_requests,
    is_config_message,
    parse_request,
    recorded,
)
from agent.jobs.info import (
    cpu_facts,
    device_info_body,
    distro_facts,
    interface_entry,
    normalize_vpp_version,
    reconfig_hash,
)
from agent.jobs.messages import (
    AGGREGATED,
    REFUSED,
    RESET_DEVICE,
    START_ROUTER,
    STOP_ROUTER,
    SYNC_DEVICE,
)
from agent.jobs.outcome import Outcome
from agent.jobs.rooms import (
    Policies,
    PolicyStep,
    Routing,
    policy_step,
    policy_step_sync,
    routing_model,
    touches_routing,
)
from agent.jobs.signature import advance, is_signed
from agent.jobs.validation import (
    JobRejected,
    Problem,
    Shared,
    ValidationPolicy,
    normalize_add_tunnel,
    normalize_modify_tunnel,
    normalize_remove_tunnel,
    pasted_psk_problems,
    peer_static_routes,
    rejection,
    render,
)
from agent.peers.changes import AddPeer, Change, ModifyTargets, RemovePeer
from agent.peers.manager import JobError, JobResult, PeerManager
from agent.peers.spec import PeerSpec, StaticRoute
from agent.policy.model import PolicyError
from agent.routing.manager import RoutingError
from agent.routing.model import RoutingModel, RoutingModelError
from agent.vpp.counters import Counters, delta, entry_spans, spread
from agent.vpp.errors import VppError
from agent.vpp.executor import ApplyError
from agent.vpp.readers import WanFacts

log = structlog.get_logger(__name__)

StatsProvider = Callable[[], Awaitable[list[dict[str, Any]]]]
FactsProvider = Callable[[], Awaitable[list[WanFacts]]]
# (the WAN facts of this reply) -> (totals per dev_id, totals per tunnel id); raises when
# VPP's counters are unreadable
CountersProvider = Callable[[Sequence[WanFacts]],
                            Awaitable[tuple[dict[str, Counters], dict[int, Counters]]]]
JobObserver = Callable[[str, bool, float], None]  # message, ok, seconds (metrics)

# A value that can never match flexiManage's chain: forces a sync-device (flexiagent's
# sentinel after a local reset).
FORCE_SYNC_SIGNATURE = "empty_cfg"
# The peer store was corrupt and moved aside: the desired state is unknown until the
# controller's sync-device, which a hash no chain can reach makes it send.
STORE_LOST_SIGNATURE = "peers_store_lost"
# VPP was changed behind the agent's back (drift, e.g. vppctl) and the agent repaired
# it: flexiManage believes the device holds its configuration, so a hash no chain
# reaches tells it; it shows the device out of sync and answers with its automatic
# sync-device, whose reply resets the hash to ''. Persisted, like flexiagent's sentinels.
DRIFT_SIGNATURE = "vpp_drift_repaired"
INTERFACE_FACTS_TTL = 10.0  # seconds a stats reply may reuse the interface facts


async def _no_facts() -> list[WanFacts]:
    return []


async def _no_counters(_wans: Sequence[WanFacts]
                       ) -> tuple[dict[str, Counters], dict[int, Counters]]:
    raise OSError("no counter source")


class JobDispatcher:
    """The agent's JobHandler for the controller link."""

    def __init__(
        self,
        manager: PeerManager,
        policy: ValidationPolicy,
        *,
        stats: StatsProvider,
        config: ConfigStore,
        agent_version: str = "6.3.0",
        vpp_version: Callable[[], str] = lambda: "",
        vpp_fallback: str = "26.06",
        frr_version: str = "8.4.4",
        facts: FactsProvider = _no_facts,
        counters: CountersProvider = _no_counters,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        observe: JobObserver | None = None,
        routing: Routing | None = None,
        policies: Policies | None = None,
    ) -> None:
        """`routing` is None when FRR is not usable: routing is then recorded only."""
        self.manager = manager
        self.routing = routing
        self.policies = policies
        self._lock = asyncio.Lock()  # one job (or routing reconcile) at a time
        self._warned_no_frr = False
        self._routing_error = ""
        self._observe = observe
        self.policy = policy
        self._stats = stats
        self._config = config
        self._vpp_version = vpp_version
        self._vpp_fallback = vpp_fallback
        self.agent_version = agent_version
        self.frr_version = frr_version
        self._facts = facts
        self._counters = counters
        self._clock = clock
        self._wall_clock = wall_clock  # the stats entries' `utc`
        self._interfaces_read_at: float | None = None
        self._interfaces_refresh: asyncio.Task[list[dict[str, Any]]] | None = None
        # (monotonic, utc) of the last counter reading, and its totals
        self._last_counters: tuple[float, float, dict[str, Counters],
                                   dict[int, Counters]] | None = None
        self._last_interfaces: list[dict[str, Any]] = []
        self._last_facts: list[WanFacts] = []  # what `_last_interfaces` was made from
        self._distro = distro_facts()  # flexiManage stores it on every connect
        self._cpu_info = cpu_facts()  # and rebuilds cpuInfo from it
        self.items: Items
        self.items, meta = config.load()
        self.signature = meta.get("signature", "")
        self.router_state = meta.get("router_state", "running")
        self._drift_report: asyncio.Task[None] | None = None

    # -- jobs ---------------------------------------------------------------------------

    async def run_job(self, message: str, params: Any, jobid: str,
                      original: Mapping[str, Any] | None = None) -> Outcome:
        started = time.monotonic()
        if original is None:
            original = {"entity": "agent", "message": message,
                        **({} if params is None else {"params": params})}
        outcome = await self._run_job(message, params, jobid, original, started)
        if self._observe is not None:
            self._observe(message, outcome.ok, time.monotonic() - started)
        return outcome

    async def _run_job(self, message: str, params: Any, jobid: str,
                       original: Mapping[str, Any], started: float) -> Outcome:
        bound = log.bind(jobid=jobid, job=message)
        try:
            async with self._lock:
                result = await self._run(message, params, jobid, original)
        except JobRejected as e:
            bound.warning("job rejected", reason=e.message)
            return Outcome(False, e.message)
        except JobError as e:
            bound.warning("job failed", reason=str(e))
            return Outcome(False, str(e))
        except Exception as e:  # a bug must not kill the session; its text may hold input
            bound.exception("job crashed", error_type=type(e).__name__)
            return Outcome(False, f"internal error while handling {message} "
                                  f"({type(e).__name__}); see the agent's log")
        bound.info("job done", seconds=round(time.monotonic() - started, 3),
                   writes=result.writes, notes=list(result.notes), hash=self.signature)
        for w in result.warnings:
            bound.warning("job warning", detail=w)
        return Outcome(True, "success")

    async def _run(self, message: str, params: Any, jobid: str,
                   original: Mapping[str, Any]) -> JobResult:
        if message == SYNC_DEVICE:
            result, items = await self._sync(params)
            await self._commit(items, "", self.router_state)
            return result
        if message == RESET_DEVICE:
            result = await self._transact({}, self.router_state, target=[],
                                          policy=PolicyStep("replace-apps"), converge=True,
                                          job_params=params)
            await self._commit({}, FORCE_SYNC_SIGNATURE, self.router_state)
            return result
        if message in REFUSED:
            raise JobError(f"{message}: {REFUSED[message]}")
        if message == AGGREGATED:
            # Parsing and validating 1000 peers takes a second of CPU: off the event
            # loop, so stats and the device tabs are answered meanwhile.
            requests = await asyncio.to_thread(self._request_list, message, params,
                                               allow_all=True)
        elif is_config_message(message):
            req, problems = parse_request(message, params, original)
            if problems:
                raise JobRejected(problems)
            assert req is not None
            requests = [req]
        else:
            raise JobError(f"{message} is not supported by this device (an IPsec peering "
                           "agent that records flexiManage's device configuration)")
        sign = original if is_signed(message) and jobid else None
        result, items, router, prep = await self._apply(application_order(requests), params,
                                                        sign)
        rows, signature = await prep.result()
        await self._commit(items, signature, router, rows)
        return result

    async def report_store_lost(self) -> None:
        """The peer store was lost: record STORE_LOST_SIGNATURE, which no hash chain
        reaches, so the controller sends sync-device. Kept across restarts and past the
        grace time (when the agent has removed its objects from VPP) until a sync-device
        commits its own hash: until then the device must not look synced."""
        async with self._lock:
            if self.signature != STORE_LOST_SIGNATURE:
                await self._commit(self.items, STORE_LOST_SIGNATURE, self.router_state)

    def note_drift(self, changes: Sequence[str]) -> None:
        """The manager repaired drift in VPP: report it to the controller (DRIFT_SIGNATURE)
        once the running job, if any, is done; returns at once (supervision goes on)."""
        if self._drift_report is None or self._drift_report.done():
            self._drift_report = asyncio.get_running_loop().create_task(
                self._report_drift(tuple(changes)), name="report-drift")

    async def _report_drift(self, changes: tuple[str, ...]) -> None:
        async with self._lock:  # after the running job: its commit would overwrite it
            if self.signature == DRIFT_SIGNATURE:
                return
            try:
                await self._commit(self.items, DRIFT_SIGNATURE, self.router_state)
            except Exception as e:  # the store is full or gone: say so, keep running
                log.error("cannot record the drift report; the controller is not told",
                          error=repr(e))
                return
        log.warning("VPP drift reported to the controller: out of sync until its "
                    "sync-device", changes=list(changes))

    async def _commit(self, items: Items, signature: str, router_state: str,
                      rows: Rows | None = None) -> None:
        """Persist (fsync'd sqlite, canonical JSON of every item) off the event loop;
        `rows`: the items' rows made beforehand (`CommitPrep`)."""
        await self._config.asave(self.items, items,
                                 {"signature": signature, "router_state": router_state}, rows)
        self.items, self.signature, self.router_state = items, signature, router_state

    def _request_list(self, job: str, params: Any, *, allow_all: bool) -> list[ConfigRequest]:
        """The nested requests of aggregated / sync-device, keyed; malformed ones refused."""
        if not isinstance(params, Mapping) or not isinstance(params.get("requests"), list):
            raise JobRejected([Problem("requests", "(missing)", f"{job} needs a requests list",
                                       "params {requests: [{entity, message, params}, ...]}")])
        out: list[ConfigRequest] = []
        problems: list[Problem] = []
        for i, sub in enumerate(params["requests"]):
            fld = f"requests[{i}]"
            if not isinstance(sub, Mapping) or not isinstance(sub.get("message"), str):
                problems.append(Problem(fld, "(not a request)", "not an object with a message",
                                        "{entity, message, params}"))
                continue
            message = sub["message"]
            if sub.get("entity", "agent") != "agent":
                problems.append(Problem(f"{fld}.entity", render(sub.get("entity")),
                                        "unknown entity", "agent"))
                continue
            allowed = is_config_message(message) and (allow_all or message.startswith("add-"))
            if not allowed:
                problems.append(Problem(f"{fld}.message", render(message),
                                        f"not a configuration message accepted in {job}",
                                        "add-X" if not allow_all else "add-/remove-/modify-X, "
                                        "start-router, stop-router"))
                continue
            req, sub_problems = parse_request(message, sub.get("params"), sub,
                                              f"{fld}.params")
            problems += sub_problems
            if req is not None:
                out.append(req)
        if problems:
            raise rejection(problems, params)
        return out

    def _peer_changes(self, requests: Sequence[ConfigRequest], job_params: Any) -> list[Change]:
        """The peer-tunnel part of `requests` as manager changes (validated)."""
        view: dict[int, PeerSpec] = dict(self.manager.desired)
        changes: list[Change] = []
        problems: list[Problem] = []
        added: set[int] = set()
        shared: Shared = {}
        for req in requests:
            if req.item != "tunnel":
                continue
            params = req.params if isinstance(req.params, Mapping) else {}
            try:
                if req.verb == "add":
                    if "peer" not in params:
                        continue  # a site-to-site tunnel: recorded, not built by a peering agent
                    spec = normalize_add_tunnel(params, self.policy, check_pasted=False,
                                                shared=shared)
                    if spec.tunnel_id in added:
                        problems.append(Problem("requests", f"tunnel-id {spec.tunnel_id}",
                                                "added twice in one job",
                                                "one add-tunnel per tunnel-id"))
                    added.add(spec.tunnel_id)
                    view[spec.tunnel_id] = spec
                    changes.append(AddPeer(spec))
                elif req.verb == "remove":
                    removal = normalize_remove_tunnel(params)
                    if removal.tunnel_id in view:
                        del view[removal.tunnel_id]
                        changes.append(removal)
                else:
                    targets = normalize_modify_tunnel(params)
                    # alert thresholds only, or a tunnel that is not there: recorded only
                    if targets.tunnel_id in view and not targets.empty:
                        changes.append(targets)
            except JobRejected as e:
                problems += e.prefixed(_prefix(req))
        problems += pasted_psk_problems(job_params, problems)  # one request's PSK in another
        if problems:
            raise rejection(problems, job_params)
        return changes

    def _recorded_specs(self, items: Items, job_params: Any) -> list[PeerSpec]:
        """The peer tunnels of a recorded configuration, validated."""
        specs: list[PeerSpec] = []
        problems: list[Problem] = []
        shared: Shared = {}
        for key, (_, params) in sorted(items.items()):
            if key.startswith("tunnel:") and isinstance(params, Mapping) and "peer" in params:
                try:
                    specs.append(normalize_add_tunnel(params, self.policy, shared=shared))
                except JobRejected as e:
                    problems += e.prefixed(f"{key}.")
        if problems:
            raise rejection(problems, job_params)
        return self._with_routes(specs, items, job_params)

    @staticmethod
    def _static_routes(items: Items, specs: Iterable[PeerSpec], job_params: Any
                       ) -> dict[int, tuple[StaticRoute, ...]]:
        """The recorded static routes through each of `specs`; the job is refused for one
        through a peer that cannot be programmed."""
        routes, problems = peer_static_routes(items, specs)
        if problems:
            raise rejection(problems, job_params)
        return routes

    @classmethod
    def _with_routes(cls, specs: Sequence[PeerSpec], items: Items, job_params: Any
                     ) -> list[PeerSpec]:
        """`specs` carrying the recorded static routes through each of them."""
        routes = cls._static_routes(items, specs, job_params)
        return [s if s.static_routes == (want := routes.get(s.tunnel_id, ()))
                else replace(s, static_routes=want) for s in specs]

    def _routed(self, changes: Sequence[Change], items: Items, job_params: Any
                ) -> list[Change]:
        """`changes` with the static routes the job's recorded configuration routes
        through each peer: an added tunnel carries its own, and a tunnel whose routes
        the job changed (add-route / remove-route alone) gets them as a targets change."""
        view: dict[int, PeerSpec] = dict(self.manager.desired)
        for ch in changes:
            if isinstance(ch, AddPeer):
                view[ch.spec.tunnel_id] = ch.spec
            elif isinstance(ch, RemovePeer):
                view.pop(ch.tunnel_id, None)
            elif ch.tunnel_id in view:
                view[ch.tunnel_id] = ch.applied_to(view[ch.tunnel_id])
        routes = self._static_routes(items, view.values(), job_params)
        out: list[Change] = []
        added: set[int] = set()
        for ch in changes:
            if isinstance(ch, AddPeer):
                tid = ch.spec.tunnel_id
                added.add(tid)
                if ch.spec.static_routes != (want := routes.get(tid, ())):
                    ch = AddPeer(replace(ch.spec, static_routes=want))  # 1000s: only if needed
            out.append(ch)
        for tid, spec in sorted(view.items()):
            want = routes.get(tid, ())
            if tid not in added and spec.static_routes != want:
                out.append(ModifyTargets(tid, static_routes=want))
        return out

    async def _apply(self, requests: Sequence[ConfigRequest], job_params: Any,
                     sign: Mapping[str, Any] | None = None
                     ) -> tuple[JobResult, Items, str, CommitPrep]:
        """Record `requests`; program the peer tunnels while the router runs. A stopped
        router (stop-router) has no peer data plane: its tunnels are removed from VPP,
        changes are only recorded, and start-router brings the recorded peers back."""
        router = self.router_state
        for req in requests:
            if req.message == START_ROUTER:
                router = "running"
            elif req.message == STOP_ROUTER:
                router = "stopped"
        # validates in every state; CPU-heavy for big jobs, so off the event loop
        changes = await asyncio.to_thread(self._peer_changes, requests, job_params)
        items = apply_requests(self.items, requests)
        changes = self._routed(changes, items, job_params)
        prep = CommitPrep(self.items, items, self.signature, sign)
        step = policy_step(requests)
        touched = touches_routing(requests)
        if router == "stopped":
            if self.manager.desired:
                result = await self._transact(items, router, target=[], policy=step,
                                              touched=touched, job_params=job_params)
            else:
                result = await self._transact(items, router, policy=step, touched=touched,
                                              note="recorded; the router is stopped",
                                              job_params=job_params)
        elif self.router_state == "stopped":
            result = await self._transact(items, router,
                                          target=self._recorded_specs(items, job_params),
                                          policy=step, touched=touched, job_params=job_params)
        else:
            result = await self._transact(items, router, changes=changes, policy=step,
                                          touched=touched, job_params=job_params,
                                          alongside=prep.run)
        return result, items, router, prep

    async def _sync(self, params: Any) -> tuple[JobResult, Items]:
        """Converge to exactly the configuration listed: the VPP part through the peer
        manager (unchanged peers untouched), FRR and the multilink policy to what the
        list says (nothing written when they hold it already), the recorded part replaced."""
        requests, specs = await asyncio.to_thread(self._sync_requests, params)
        items = apply_requests({}, application_order(requests))
        specs = self._with_routes(specs, items, params)
        step = policy_step_sync(items)
        if self.router_state == "stopped":
            return await self._transact(items, self.router_state, policy=step, converge=True,
                                        note="recorded; the router is stopped",
                                        job_params=params), items
        return await self._transact(items, self.router_state, target=specs, policy=step,
                                    converge=True, job_params=params), items

    def _sync_requests(self, params: Any) -> tuple[list[ConfigRequest], list[PeerSpec]]:
        """sync-device's requests and its peer tunnels, validated (pure, CPU-heavy)."""
        requests = self._request_list(SYNC_DEVICE, params, allow_all=False)
        problems: list[Problem] = []
        seen: set[str] = set()
        specs: list[PeerSpec] = []
        shared: Shared = {}
        for req in requests:
            if req.key in seen:
                problems.append(Problem(req.fld, render(req.key), "listed twice in sync-device",
                                        "one item per key"))
            seen.add(req.key)
            if req.item == "tunnel" and isinstance(req.params, Mapping) \
                    and "peer" in req.params:
                try:
                    specs.append(normalize_add_tunnel(req.params, self.policy,
                                                      check_pasted=False, shared=shared))
                except JobRejected as e:
                    problems += e.prefixed(_prefix(req))
        problems += pasted_psk_problems(params, problems)  # one request's PSK in another
        if problems:
            raise rejection(problems, params)
        return requests, specs

    # -- one job across VPP, FRR and the multilink policy -----------------------------------

    async def _transact(self, items: Items, router: str, *,
                        changes: Sequence[Change] | None = None,
                        target: Sequence[PeerSpec] | None = None,
                        policy: PolicyStep | None = None, touched: bool = True,
                        converge: bool = False, note: str = "recorded",
                        job_params: Any = None,
                        alongside: Callable[[], object] | None = None) -> JobResult:
        """Peer tunnels (`changes` applied, or converged to `target`), then FRR, then the
        policy; all or nothing. `converge` (sync-device) hands FRR its model even when it
        equals the last one applied, so a restarted FRR is repaired (no write when equal).
        """
        model = self._desired_routing(items, router, touched)
        if policy is not None and self.policies is not None:
            try:
                policy.check(self.policies.applications)
            except PolicyError as e:
                raise JobError(f"multilink policy: {e}") from None
        before = dict(self.manager.desired)
        result = await self._vpp_step(changes, target, note, alongside)
        old_model = self.routing.model if self.routing is not None else None
        routed = False
        if self.routing is not None and model is not None and (
                converge or (touched and model != old_model)):
            try:
                plan = await self.routing.apply(model)
            except RoutingError as e:  # the routing manager put FRR back already
                await self._undo_vpp(before, f"FRR: {e}")
            routed = not plan.empty
            if routed:
                result = _with(result, f"FRR: {len(plan.commands())} line(s) changed")
        if policy is not None and self.policies is not None:
            try:
                writes = await self._policy_step(policy)
            except (PolicyError, ApplyError, VppError) as e:
                reason = f"multilink policy: {e}"
                if routed and self.routing is not None:
                    try:
                        await self.routing.apply(old_model or RoutingModel())
                    except RoutingError as undo:
                        reason += f"; restoring FRR failed: {undo}"
                await self._undo_vpp(before, reason)
            if writes:
                result = _with(result, f"multilink policy: {writes} VPP write(s)")
        return result

    def _desired_routing(self, items: Items, router: str, touched: bool) -> RoutingModel | None:
        """The routing model for FRR (None without FRR); a field FRR cannot take refuses
        the job here, before any VPP step."""
        if self.routing is None:
            if touched and not self._warned_no_frr:
                self._warned_no_frr = True
                log.warning("FRR (vtysh) is not installed: routing messages are recorded "
                            "but not applied")
            return None
        try:
            return routing_model(items, router)
        except RoutingModelError as e:
            raise JobError(f"routing: {e}") from None

    async def _vpp_step(self, changes: Sequence[Change] | None,
                        target: Sequence[PeerSpec] | None, note: str,
                        alongside: Callable[[], object] | None = None) -> JobResult:
        """The peer-tunnel part; tunnels about to be deleted or re-created are taken out of
        the multilink policy first (changing an ABF path through a deleted interface
        crashes VPP 26.06) and given back once the step is over."""
        desired = self.manager.desired
        if target is not None:
            wanted = {s.tunnel_id: s for s in target}
            going = {t for t, s in desired.items() if wanted.get(t) != s}
        elif changes:
            going = {c.tunnel_id for c in changes
                     if isinstance(c, RemovePeer) and c.tunnel_id in desired}
        else:
            return JobResult(notes=(note,))
        await self._release(going)
        try:
            if target is not None:
                return await self.manager.sync(target)
            assert changes is not None
            return await self.manager.apply(changes, alongside=alongside)
        finally:
            if going and self.policies is not None:
                self.policies.restore(going)

    async def _release(self, tunnel_ids: set[int]) -> None:
        if not tunnel_ids or self.policies is None:
            return
        try:
            await self.policies.release(tunnel_ids)
        except (PolicyError, ApplyError, VppError) as e:
            self.policies.restore(tunnel_ids)
            raise JobError(f"multilink policy: cannot take tunnel(s) "
                           f"{', '.join(map(str, sorted(tunnel_ids)))} out of it: {e}") from None

    async def _undo_vpp(self, before: Mapping[int, PeerSpec], reason: str) -> NoReturn:
        """Put the peer tunnels back to `before` and fail the job with `reason`."""
        now = self.manager.desired
        if dict(now) == dict(before):
            raise JobError(reason)
        going = {t for t, s in now.items() if before.get(t) != s}
        try:
            await self._release(going)
            try:
                await self.manager.sync(list(before.values()))
            finally:
                if going and self.policies is not None:
                    self.policies.restore(going)
        except JobError as undo:
            raise JobError(f"{reason}; undoing the job's VPP changes failed too: {undo}"
                           ) from None
        raise JobError(f"{reason}; the job's VPP changes were undone")

    async def _policy_step(self, step: PolicyStep) -> int:
        assert self.policies is not None
        if step.kind == "apply":
            assert step.policy is not None
            return await self.policies.apply(step.policy, step.apps)
        if step.kind == "remove":
            return await self.policies.remove()
        if step.kind == "applications":
            return await self.policies.set_applications(step.apps)
        writes = await self.policies.remove()  # replace-apps: sync-device without a policy
        return writes + await self.policies.set_applications(step.apps)

    # -- routing outside jobs -------------------------------------------------------------

    async def reconcile_routing(self) -> None:
        """FRR to the recorded configuration's routing (at start, then periodically: an
        FRR restart loses it); no write when FRR holds it. Problems are logged once."""
        if self.routing is None:
            return
        async with self._lock:
            try:
                plan = await self.routing.apply(routing_model(self.items, self.router_state))
            except (RoutingError, RoutingModelError) as e:
                if str(e) != self._routing_error:
                    log.warning("FRR reconcile failed", error=str(e))
                self._routing_error = str(e)
                return
        if self._routing_error:
            log.info("FRR reconciled again")
        self._routing_error = ""
        if not plan.empty:
            log.info("FRR reconciled", lines=len(plan.commands()))

    async def adopt_recorded_routes(self) -> None:
        """Program the recorded static routes through peers as the peer store lacks them:
        a store written before 2026-11-30 recorded them without programming them, and
        one written before metrics were programmed holds no preferences. Through the job path
        (route guard included); problems are logged, VPP is left as it is."""
        async with self._lock:
            if self.router_state == "stopped":
                return
            try:
                changes = self._routed([], self.items, None)
                if changes:
                    await self.manager.apply(changes)
                    log.info("recorded static routes through peers programmed",
                             tunnels=[c.tunnel_id for c in changes
                                      if isinstance(c, ModifyTargets)])
            except (JobError, JobRejected, VppError) as e:
                log.warning("recorded static routes through peers not programmed",
                            error=str(e))

    async def routing_forever(self, period: float = 30.0) -> None:
        """`reconcile_routing` now and every `period` seconds until cancelled."""
        while True:
            await self.reconcile_routing()
            await asyncio.sleep(period)

    async def bgp_status(self) -> dict[str, Any]:
        """The `get-bgp-status` answer: `{}` without FRR or BGP (section 12.6)."""
        return await self.routing.bgp_status() if self.routing is not None else {}

    async def routing_status(self) -> list[dict[str, Any]]:
        """Per peer routing state for `peerctl show routing` ([] without FRR)."""
        return await self.routing.peer_status() if self.routing is not None else []

    # -- what the controller reads --------------------------------------------------------

    def recorded_config(self) -> list[dict[str, Any]]:
        """`[{message, params}]`: the stored configuration (for get-device-config)."""
        return recorded(self.items)

    def notification_rules(self) -> Mapping[str, Any]:
        """The org rules of the stored add-notifications-config ({} without one)."""
        item = self.items.get("notifications-config")
        params = item[1] if item is not None else None
        rules = params.get("rules") if isinstance(params, Mapping) else None
        return rules if isinstance(rules, Mapping) else {}

    def tunnel_notifications(self) -> dict[int, Mapping[str, Any]]:
        """Per-tunnel notificationsSettings of the recorded tunnels."""
        out: dict[int, Mapping[str, Any]] = {}
        for key, (_, params) in self.items.items():
            if key.startswith("tunnel:") and isinstance(params, Mapping):
                settings = params.get("notificationsSettings")
                if isinstance(settings, Mapping):
                    out[int(key[7:])] = settings
        return out

    def tunnels_without_wan(self) -> set[int]:
        """Peer tunnels whose WAN (last known facts) has no IPv4 address or no link:
        flexiagent raises no tunnel alerts for them."""
        wans = {e.get("devId"): e for e in self._last_interfaces}
        out = set()
        for tid, spec in self.manager.desired.items():
            wan = wans.get(spec.dev_id)
            if wan is not None and (not wan.get("IPv4") or wan.get("link") == "down"):
                out.add(tid)
        return out

    async def interfaces(self) -> list[dict[str, Any]]:
        """`network.interfaces` entries; the last known ones while VPP cannot answer."""
        try:
            facts = await self._facts()
            self._last_facts, self._last_interfaces = facts, [interface_entry(f) for f in facts]
            self._interfaces_read_at = self._clock()
        except Exception as e:  # VPP away: get-device-info must still answer
            log.info("interface facts unavailable, reporting the last known", error=str(e))
        return self._last_interfaces

    async def _recent_interfaces(self) -> list[dict[str, Any]]:
        """The interface facts for a stats reply. While a job runs, VPP answers the
        interface dump only after the job's queued requests (seconds for 1000 peers), so
        the last facts are used and refreshed in the background at most every
        INTERFACE_FACTS_TTL seconds (flexiagent recomputes `reconfig` every 10 s)."""
        if self._interfaces_read_at is None or not self._lock.locked():
            return await self.interfaces()
        stale = self._clock() - self._interfaces_read_at >= INTERFACE_FACTS_TTL
        if stale and (self._interfaces_refresh is None or self._interfaces_refresh.done()):
            self._interfaces_refresh = asyncio.create_task(self.interfaces(),
                                                           name="interface-facts")
        return self._last_interfaces

    def vpp_version(self) -> str:
        return normalize_vpp_version(self._vpp_version(), self._vpp_fallback)

    async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
        interfaces = await self.interfaces()
        body = device_info_body(agent_version=self.agent_version,
                                vpp_version=self.vpp_version(),
                                frr_version=self.frr_version, interfaces=interfaces,
                                distro=self._distro, cpu_info=self._cpu_info)
        if not interfaces:
            body["reconfig"] = ""  # never a non-empty reconfig without interfaces (9.4)
        return body

    def data_plane_state(self) -> tuple[str, str]:
        """(`state`, `stateReason`) as flexiManage shows them: the truth, not a constant."""
        if self.router_state == "stopped":
            return "stopped", "stopped by the controller (stop-router)"
        vpp = self.manager.vpp
        if not vpp.connected:
            reason = f"VPP is not connected: {vpp.last_error or 'down'}"
            # flexiagent: `stopped` while VPP does not run (at boot, before its socket is
            # up); a VPP that ran and went away is a failure until it is back
            return ("failed" if vpp.generation else "stopped"), reason
        return "running", ""

    async def device_stats(self) -> list[dict[str, Any]]:
        """The monitor's entries, the last one overwritten with the current state (as
        flexiagent does); every entry has `stats` and at least one CPU value."""
        entries = await self._stats()
        state, reason = self.data_plane_state()
        for entry in entries:
            entry.setdefault("stats", {})
            health = entry.setdefault("health", {})
            if not health.get("cpu"):
                health["cpu"] = [0]
        if entries:
            entries[-1].update(state=state, stateReason=reason, running=state == "running")
            # flexiManage re-reads get-device-info when this changes (DHCP, link, MTU...)
            interfaces = await self._recent_interfaces()
            entries[-1]["reconfig"] = reconfig_hash(interfaces) if interfaces else ""
            await self._add_counters(entries, self._last_facts)
            if self.routing is not None:  # flexiagent's 3-minute reading; {} without BGP
                entries[-1]["bgp"] = await self.routing.stats_bgp()
        return entries

    async def _add_counters(self, entries: list[dict[str, Any]],
                            wans: Sequence[WanFacts]) -> None:
        """rx/tx counted since the previous reply, per interface dev_id (of `wans`, the
        facts the reply's `reconfig` was made from: one reading per reply) and per peer
        tunnel, shared out over the reply's entries by the time each covers, with
        `period` set to it (the controller divides the counters by it).

        flexiManage stores the first entry of each 5-minute bucket and sums every
        entry's bytes into the month's traffic: counters in the newest entry alone left
        most buckets without throughput, and the same counters in every entry would
        count them twice. Shared out, each entry's rate is the reply's average and the
        totals are exact."""
        try:
            by_dev, by_tunnel = await self._counters(wans)
        except Exception as e:  # VPP or its stats segment away: no counters, not zeros
            log.debug("interface counters unavailable", error=str(e))
            return
        now, wall = self._clock(), self._wall_clock()
        previous = self._last_counters
        self._last_counters = (now, wall, by_dev, by_tunnel)
        if previous is None or now <= previous[0]:
            return  # the first reading is the baseline
        period = now - previous[0]
        spans = entry_spans([e.get("utc") for e in entries], previous[1], wall)
        whole = sum(spans)
        for entry, span in zip(entries, spans, strict=True):
            if span > 0:
                entry["period"] = round(period * span / whole, 3)
                entry["stats"] = {}
        for dev, c in delta(previous[2], by_dev).items():
            for entry, part, span in zip(entries, spread(c, spans), spans, strict=True):
                if span:
                    entry["stats"][dev] = part.wire()
        for tid, c in delta(previous[3], by_tunnel).items():
            key = str(tid)
            weights = [s if key in e.get("tunnel_stats", {}) else 0.0
                       for e, s in zip(entries, spans, strict=True)]
            if not any(weights):
                continue
            for entry, part, w in zip(entries, spread(c, weights), weights, strict=True):
                if w:
                    entry["tunnel_stats"][key].update(part.wire())

    def cfg_hash(self) -> str:
        return self.signature



class CommitPrep:
    """The store rows of a job's items and the next hash-chain value (`sign`: the job
    to chain; None: unchanged). They need nothing from VPP: `run` is handed to the peer
    manager, which runs it on a worker thread while VPP works on the job, so the reply
    does not wait for them; `result` computes them if that did not happen."""

    def __init__(self, old: Items, new: Items, signature: str,
                 sign: Mapping[str, Any] | None) -> None:
        self._args = (old, new, signature, sign)
        self._done: tuple[Rows, str] | None = None

    def run(self) -> None:
        old, new, signature, sign = self._args
        texts: dict[int, str] = {}  # the job's params, written once for both
        rows = difference(old, new, texts)
        self._done = (rows, signature if sign is None else advance(signature, sign, texts))

    async def result(self) -> tuple[Rows, str]:
        if self._done is None:
            await asyncio.to_thread(self.run)
        assert self._done is not None
        return self._done


def _prefix(req: ConfigRequest) -> str:
    """Where the request's params sit in the job (``requests[2].params.``), for messages."""
    return "" if req.fld == "params" else req.fld + "."


def _with(result: JobResult, note: str) -> JobResult:
    return JobResult(result.warnings, (*result.notes, note), result.writes)
