"""The monitoring service: the peers layer's desired tunnels -> probes -> health -> stats.

It owns no policy of its own; it wires the pieces together:

* the peer manager's desired set decides which tunnels exist and what they
  monitor (``monitor_ips`` and the addresses ``monitor_urls`` resolve to); it is
  re-read on every change notification, so a job's effect on monitoring is
  immediate and a removed tunnel leaves no probe behind;
* the probe engine probes each target through its tunnel: bound to the tunnel's
  Linux-side interface (``SO_BINDTODEVICE`` on the linux-cp host interface, the
  default: the packet enters the tunnel whatever the routing tables say) or
  from the device end of the tunnel's /31 (``source``: then host routing must
  lead that address into the tunnel);
* the resolver keeps ``monitor_urls`` resolved; every tunnel's resolved
  addresses are handed to the manager as /32 routes through the tunnel, so the
  data plane sends them where the probes are meant to go. A name that does not
  resolve is reported, never fatal, and its last known addresses stay probed;
* the manager's SA state (status ``up`` = IKE SA established, child SA
  installed) feeds each tunnel's health: the manager is the only reader of SA
  state in VPP and calls back whenever a tunnel's SA status changes;
* every ``stats_period`` seconds one get-device-stats entry is recorded in a
  bounded history, which `device_stats` hands out since the previous poll.

Probe results arrive as callbacks on the event loop, so all state here is
touched from one thread and needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

from agent.logsetup import LOG_EACH_UP_TO, debug_enabled
from agent.monitor.alerts import DeviceAlerts, TunnelSample
from agent.monitor.health import (
    AlertConfig,
    AlertEvaluator,
    HealthConfig,
    HealthSnapshot,
    Status,
    TunnelHealth,
)
from agent.monitor.icmp import ProbeResult, ResultCallback
from agent.monitor.resolver import ChangeCallback, NameResolver, NameState
from agent.monitor.stats import HostHealth, stats_entry, utc_now
from agent.peers.supervision import Status as SaStatus
from agent.vpp.plan import host_if_name

if TYPE_CHECKING:
    from agent.peers.manager import PeerState
    from agent.peers.spec import PeerSpec
    from agent.peers.supervision import StatusChange

log = structlog.get_logger(__name__)

# An on-demand stats entry is rebuilt at most this often (and on any SA state change).
ON_DEMAND_MAX_AGE = 1.0

Bind = Literal["device", "source"]
# () -> (org rules, per-tunnel notificationsSettings, router running, tunnels whose WAN
# has no address or link)
AlertRulesSource = Callable[[], tuple[Mapping[str, Any], Mapping[int, Mapping[str, Any]], bool,
                                      set[int]]]
BINDS: tuple[Bind, ...] = ("device", "source")


class Engine(Protocol):
    """What the service needs of `agent.monitor.icmp.ProbeEngine`."""

    def add_target(
        self,
        key: Hashable,
        address: IPv4Address,
        on_result: ResultCallback,
        *,
        bind_device: str | None = None,
        source: IPv4Address | None = None,
    ) -> None: ...

    def remove_target(self, key: Hashable) -> None: ...

    async def run(self) -> None: ...


class Resolver(Protocol):
    """What the service needs of `agent.monitor.resolver.NameResolver`."""

    def add(self, name: str) -> None: ...

    def remove(self, name: str) -> None: ...

    def state(self, name: str) -> NameState | None: ...

    def addresses(self, name: str) -> frozenset[IPv4Address]: ...

    async def run(self) -> None: ...


ResolverFactory = Callable[[ChangeCallback], Resolver]


class Manager(Protocol):
    """What the service reads of `agent.peers.manager.PeerManager`."""

    @property
    def desired(self) -> Mapping[int, PeerSpec]: ...

    @property
    def states(self) -> Mapping[int, PeerState]: ...

    @property
    def dynamic_routes(self) -> Mapping[int, tuple[IPv4Address, ...]]: ...

    def add_change_listener(self, listener: Callable[[], None]) -> None: ...

    def add_state_listener(
        self, listener: Callable[[Sequence[StatusChange]], None]) -> None: ...

    def vpp_down_reason(self) -> str | None: ...

    async def set_dynamic_routes(self, tunnel_id: int, addrs: Iterable[IPv4Address]) -> None: ...

    def target_problem(self, spec: PeerSpec, addr: IPv4Address) -> str | None: ...


@dataclass
class _Target:
    address: IPv4Address
    last: ProbeResult | None = None
    replies: int = 0
    lost: int = 0


@dataclass
class _Tunnel:
    tunnel_id: int
    spec: PeerSpec
    health: TunnelHealth
    device: str | None
    source: IPv4Address | None
    sa: tuple[bool, str]
    status: Status
    targets: dict[IPv4Address, _Target] = field(default_factory=dict)


class MonitorService:
    """Probes every desired tunnel's targets and turns the results into stats entries."""

    def __init__(
        self,
        manager: Manager,
        engine: Engine,
        resolver: ResolverFactory = NameResolver,
        *,
        bind: Bind = "device",
        bind_overrides: Mapping[int, Bind] | None = None,
        health_config: HealthConfig | None = None,
        alert_config: AlertConfig | None = None,
        stats_period: float = 10.0,
        history: int = 60,
        route_retry: float = 5.0,
        host_health: Callable[[], Mapping[str, Any]] | None = None,
        alert_rules: AlertRulesSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        utc: Callable[[], float] = utc_now,
    ) -> None:
        """``resolver`` is called with the service's change callback (``NameResolver``
        itself, or e.g. ``functools.partial(NameResolver, refresh=60)``)."""
        for mode in (bind, *(bind_overrides or {}).values()):
            if mode not in BINDS:
                raise ValueError(f"probe binding must be one of {', '.join(BINDS)}, got {mode!r}")
        if stats_period <= 0 or route_retry <= 0:
            raise ValueError("stats_period and route_retry must be > 0 s")
        if history < 1:
            raise ValueError(f"history must keep at least 1 entry, got {history}")
        self.manager = manager
        self.engine = engine
        self.resolver = resolver(self._on_name_change)
        self.bind: Bind = bind
        self.bind_overrides: dict[int, Bind] = dict(bind_overrides or {})
        self.health_config = health_config or HealthConfig()
        self.alerts = AlertEvaluator(alert_config)
        # With a rules source (the daemon), alerts follow the controller's notification
        # configuration (flexiagent 6.3); without one, the fixed-threshold evaluator.
        self.alert_rules = alert_rules
        self.device_alerts = DeviceAlerts()
        self.stats_period = stats_period
        self.route_retry = route_retry
        self._host_health = host_health or HostHealth().sample
        self._clock = clock
        self._utc = utc
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._tunnels: dict[int, _Tunnel] = {}
        self._name_users: dict[str, set[int]] = {}
        self._skipped: dict[int, dict[IPv4Address, str]] = {}  # resolved, not routable
        self._on_demand: tuple[float, dict[str, Any]] | None = None  # (built at, entry)
        self._routes_dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._running = False
        # told (tunnel_id, status) when a tunnel goes up or down (path selection follows)
        self.status_listeners: list[Callable[[int, str], None]] = []
        self._sync_handle: asyncio.Handle | None = None
        self._stale = False  # the desired set changed since the last sync
        self._holds = 0  # open `syncs_held` scopes
        manager.add_change_listener(self._sync_soon)
        manager.add_state_listener(self._on_sa_change)

    # -- lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        """Probe, resolve, push routes and record stats until `stop()` or cancellation.

        One run per instance: a `stop()` that comes before the run has begun still
        counts, so a shutdown racing the startup cannot be lost.
        """
        if self._running:
            raise RuntimeError("MonitorService.run() is already running")
        self._running = True
        self.sync()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self.engine.run(), name="probe engine"),
                    tg.create_task(self.resolver.run(), name="name resolver"),
                    tg.create_task(self._stats_loop(), name="stats period"),
                    tg.create_task(self._routes_loop(), name="monitor routes"),
                ]
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            self._running = False

    def stop(self) -> None:
        """Ask `run()` to stop its tasks (probe sockets close) and return."""
        self._stop.set()

    # -- desired set ----------------------------------------------------------------

    def _sync_soon(self) -> None:
        """The desired set changed: `sync` on the loop's next turn, so that the job's
        commit and reply do not wait for it (and a burst of changes costs one sync),
        or once `syncs_held` ends. Without a running loop nothing can come between: at
        once."""
        self._stale = True
        if self._sync_handle is not None or self._holds:
            return
        try:
            self._sync_handle = asyncio.get_running_loop().call_soon(self.sync)
        except RuntimeError:
            self.sync()

    @contextlib.contextmanager
    def syncs_held(self) -> Iterator[None]:
        """Changes meanwhile are synced when this ends, not on the loop's next turn: a
        job's sync (12-45 ms for 1000 new tunnels) would otherwise run while the job still
        commits and replies. Readers still catch up at once."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._stale and not self._holds:
                self._sync_soon()

    def _catch_up(self) -> None:
        """Readers see the desired set as it is now, even before the deferred sync."""
        if self._stale:
            self.sync()

    def sync(self) -> None:
        """Re-read the manager's desired set: add, re-bind and remove tunnels and targets."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        self._stale = False
        self._on_demand = None
        desired = self.manager.desired
        for tid in [t for t in self._tunnels if t not in desired]:
            self._drop_tunnel(tid)
        users: dict[str, set[int]] = {}
        for tid, spec in desired.items():
            for name in spec.monitor_urls:
                users.setdefault(name, set()).add(tid)
        gone = [n for n in self._name_users if n not in users]
        new = [n for n in users if n not in self._name_users]
        self._name_users = users  # before remove(): its callback must find no users
        for name in new:
            self.resolver.add(name)
        for name in gone:
            self.resolver.remove(name)
        known = len(self._tunnels)
        # one line per tunnel for a few; one line in all for a job of hundreds
        log_each = len(desired) - known <= LOG_EACH_UP_TO
        # a job of a thousand tunnels would otherwise build two thousand dropped lines
        each: Callable[..., Any] | None = (log.info if log_each
                                           else log.debug if debug_enabled() else None)
        targets = sum(len(t.targets) for t in self._tunnels.values())
        for tid, spec in sorted(desired.items()):
            self._sync_tunnel(tid, spec, each)
        if not log_each:
            log.info("monitoring tunnels", added=len(self._tunnels) - known,
                     tunnels=len(self._tunnels),
                     targets=sum(len(t.targets) for t in self._tunnels.values()) - targets)
        self._routes_dirty.set()

    def _binding(self, spec: PeerSpec) -> tuple[str | None, IPv4Address | None]:
        mode = self.bind_overrides.get(spec.tunnel_id, self.bind)
        if mode == "device":
            return host_if_name(spec.tunnel_id), None
        return None, spec.addr.ip

    def _wanted(self, spec: PeerSpec) -> dict[IPv4Address, None]:
        """The tunnel's probe targets, in a stable order: monitor IPs, then resolved ones."""
        wanted: dict[IPv4Address, None] = dict.fromkeys(spec.monitor_ips)
        wanted.update(dict.fromkeys(self._resolved(spec)))
        return wanted

    def _resolved(self, spec: PeerSpec) -> tuple[IPv4Address, ...]:
        """What the tunnel's names resolve to, minus the answers that must not be routed
        into it (loopback, link-local, the device's WAN, another peer's address ...):
        a DNS answer cannot do what a refused monitor IP cannot."""
        addrs: set[IPv4Address] = set()
        for name in spec.monitor_urls:
            addrs |= self.resolver.addresses(name)
        skipped: dict[IPv4Address, str] = {}
        for addr in sorted(addrs):
            why = self.manager.target_problem(spec, addr)
            if why is not None:
                skipped[addr] = why
        previous = self._skipped.get(spec.tunnel_id, {})
        for addr, why in skipped.items():
            if previous.get(addr) != why:
                log.warning("resolved monitor address skipped", tunnel_id=spec.tunnel_id,
                            address=str(addr), reason=why)
        if skipped:
            self._skipped[spec.tunnel_id] = skipped
        else:
            self._skipped.pop(spec.tunnel_id, None)
        return tuple(a for a in sorted(addrs) if a not in skipped)

    def _sync_tunnel(self, tid: int, spec: PeerSpec, each: Callable[..., Any] | None) -> None:
        """`each`: what logs each new tunnel and target (None: nothing)."""
        now = self._clock()
        device, source = self._binding(spec)
        wanted = self._wanted(spec)
        t = self._tunnels.get(tid)
        rebind: list[IPv4Address] = []
        if t is None:
            sa = self._sa_state(tid)
            # with its targets from the start: a tunnel whose SA came up before this
            # first look (within its job) must still be proven by probe replies
            health = TunnelHealth(now, self.health_config, sa_up=sa[0], sa_reason=sa[1],
                                  targets=wanted)
            t = _Tunnel(tid, spec, health, device, source, sa, health.status)
            self._tunnels[tid] = t
            if each is not None:
                each("monitoring tunnel", tunnel_id=tid, bind=device or str(source),
                     ips=[str(a) for a in spec.monitor_ips], urls=list(spec.monitor_urls))
        elif (t.device, t.source) != (device, source):
            rebind = list(t.targets)
            for addr in rebind:
                self.engine.remove_target((tid, addr))
            t.device, t.source = device, source
        t.spec = spec
        for addr in [a for a in t.targets if a not in wanted]:
            self.engine.remove_target((tid, addr))
            del t.targets[addr]
            t.health.remove_target(addr, now)
            log.info("probe target removed", tunnel_id=tid, address=str(addr))
        for addr in rebind:
            if addr in t.targets:
                self._add_probe(t, addr)
        for addr in wanted:
            if addr not in t.targets:
                t.targets[addr] = _Target(addr)
                t.health.add_target(addr)
                self._add_probe(t, addr)
                if each is not None:
                    each("probe target added", tunnel_id=tid, address=str(addr),
                         bind=device or str(source))
        self._note_status(t)

    def _add_probe(self, t: _Tunnel, addr: IPv4Address) -> None:
        self.engine.add_target(
            (t.tunnel_id, addr), addr, functools.partial(self._on_result, t.tunnel_id),
            bind_device=t.device, source=t.source,
        )

    def _drop_tunnel(self, tid: int) -> None:
        t = self._tunnels.pop(tid)
        self._skipped.pop(tid, None)
        for addr in t.targets:
            self.engine.remove_target((tid, addr))
        log.info("stopped monitoring tunnel", tunnel_id=tid)

    # -- inputs: probe results, names, SA state ------------------------------------------

    def _on_result(self, tid: int, result: ProbeResult) -> None:
        t = self._tunnels.get(tid)
        if t is None or result.address not in t.targets:
            return  # removed while the probe was out
        target = t.targets[result.address]
        target.last = result
        if result.ok:
            target.replies += 1
        else:
            target.lost += 1
        t.health.record(result.address, result.rtt_ms, self._clock())
        self._note_status(t)

    def _on_name_change(
        self, name: str, added: frozenset[IPv4Address], removed: frozenset[IPv4Address]
    ) -> None:
        desired = self.manager.desired
        for tid in sorted(self._name_users.get(name, ())):
            spec = desired.get(tid)
            if spec is not None:
                self._sync_tunnel(tid, spec, log.info)
        self._routes_dirty.set()

    def _sa_state(self, tid: int) -> tuple[bool, str]:
        st = self.manager.states.get(tid)
        if st is None:
            return False, "no SA state known yet"
        if st.status is SaStatus.UP:
            return True, ""
        return False, f"SA {st.status}: {st.reason}"

    def _on_sa_change(self, changes: Sequence[StatusChange]) -> None:
        """Subscribed to the manager's SA status changes."""
        self._on_demand = None  # the cached on-demand entry shows the old SA state
        self.poll_sa()  # the manager's states already hold `changes`: one consistent read

    def poll_sa(self) -> None:
        """Feed the manager's current SA state into every tunnel's health (called by the
        manager when it changes, and before each stats entry)."""
        self._catch_up()
        now = self._clock()
        for tid, t in self._tunnels.items():
            sa = self._sa_state(tid)
            if sa != t.sa:
                t.sa = sa
                t.health.set_sa(sa[0], now, sa[1])
                self._note_status(t)

    def _note_status(self, t: _Tunnel) -> None:
        status = t.health.status
        if status is not t.status:
            t.status = status
            snap = t.health.snapshot()
            log.info("tunnel health changed", tunnel_id=t.tunnel_id, status=status.value,
                     reason=snap.reason, rtt_ms=round(snap.rtt_ms, 3),
                     drop_rate=round(snap.drop_rate, 1))
            for listener in list(self.status_listeners):
                listener(t.tunnel_id, status.value)

    # -- routes for resolved addresses -----------------------------------------------------

    async def push_routes(self) -> bool:
        """Give the manager every tunnel's resolved addresses as /32 routes; False on failure."""
        self._catch_up()
        ok = True
        for tid in sorted(self._tunnels):
            t = self._tunnels.get(tid)
            if t is None:
                continue
            want = self._resolved(t.spec)
            if tuple(sorted(self.manager.dynamic_routes.get(tid, ()))) == want:
                continue
            try:
                await self.manager.set_dynamic_routes(tid, want)
            except Exception as e:  # VPP down or refusing: keep probing, retry later
                ok = False
                log.warning("cannot install routes for monitored addresses; will retry",
                            tunnel_id=tid, addresses=[str(a) for a in want], error=str(e))
        return ok

    async def _routes_loop(self) -> None:
        while True:
            await self._routes_dirty.wait()
            self._routes_dirty.clear()
            if not await self.push_routes():
                asyncio.get_running_loop().call_later(self.route_retry, self._routes_dirty.set)

    # -- outputs -----------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        """Close one stats period: evaluate alerts and record an entry in the history."""
        self._catch_up()
        entry = self._entry(evaluate=True)
        self._history.append(entry)
        self._on_demand = None
        return entry

    async def device_stats(self) -> list[dict[str, Any]]:
        """Entries recorded since the previous call, oldest first; if none, a current
        entry, built at most once per ON_DEMAND_MAX_AGE or SA state or desired-set change:
        a query flood over 1000 tunnels must not rebuild it every time."""
        self._catch_up()
        entries = list(self._history)
        self._history.clear()
        if not entries:
            now = self._clock()
            if self._on_demand is None or now - self._on_demand[0] >= ON_DEMAND_MAX_AGE:
                self._on_demand = (now, self._entry(evaluate=False))
            entries.append(dict(self._on_demand[1]))  # a copy: the state below is current
        # the last entry is the tunnels' state now: a tunnel removed since a recorded
        # sample is no longer in it (flexiManage takes tunnel state from the last entry)
        last = entries[-1]
        if "tunnel_stats" in last:
            last["tunnel_stats"] = {k: v for k, v in last["tunnel_stats"].items()
                                    if int(k) in self._tunnels}
        # the last entry carries the device state now (flexiagent overwrites it too):
        # "stopped" while VPP's API is not connected, e.g. at boot before VPP is up
        down = self.manager.vpp_down_reason()
        entries[-1].update(running=down is None, state="stopped" if down else "running",
                           stateReason=down or "")
        return entries

    def _entry(self, *, evaluate: bool) -> dict[str, Any]:
        self.poll_sa()
        snaps: dict[int, HealthSnapshot] = {
            tid: t.health.snapshot() for tid, t in sorted(self._tunnels.items())
        }
        health = self._host_health()
        if self.alert_rules is not None:
            rules, per_tunnel, running, wan_down = self.alert_rules()
            if evaluate:
                samples = {tid: TunnelSample(s.status.value, s.rtt_ms, s.drop_rate,
                                             wan_ok=tid not in wan_down)
                           for tid, s in snaps.items()}
                alerts = self.device_alerts.evaluate(rules, per_tunnel, samples, health,
                                                     router_running=running)
            else:
                alerts = self.device_alerts.wire(rules) if rules else {}
            return stats_entry(period=self.stats_period, utc=self._utc(), tunnels=snaps,
                               health=health, alerts=alerts)
        if evaluate:
            alerts = self.alerts.evaluate(snaps)
        else:  # an entry on demand must not count as a period for alert debouncing
            alerts = {
                event: {k: v for k, v in per_tunnel.items() if int(k) in snaps}
                for event, per_tunnel in self.alerts.wire().items()
            }
            alerts = {event: per_tunnel for event, per_tunnel in alerts.items() if per_tunnel}
        return stats_entry(period=self.stats_period, utc=self._utc(), tunnels=snaps,
                           health=health, alerts=alerts)

    def tunnel_ids(self) -> list[int]:
        self._catch_up()
        return sorted(self._tunnels)

    def health(self, tunnel_id: int) -> HealthSnapshot | None:
        """The tunnel's current health numbers, None if it is not monitored."""
        self._catch_up()
        t = self._tunnels.get(tunnel_id)
        return None if t is None else t.health.snapshot()

    def snapshot(self, tunnel_id: int) -> dict[str, Any] | None:
        """One tunnel's monitoring state for peerctl and metrics (JSON-ready), None if unknown."""
        self._catch_up()
        t = self._tunnels.get(tunnel_id)
        if t is None:
            return None
        snap = t.health.snapshot()
        spec = t.spec
        targets = []
        for addr, target in t.targets.items():
            origins = (["ip"] if addr in spec.monitor_ips else []) + [
                name for name in spec.monitor_urls if addr in self.resolver.addresses(name)
            ]
            last = target.last
            targets.append({
                "address": str(addr),
                "from": origins,
                "replies": target.replies,
                "lost": target.lost,
                "last_rtt": None if last is None or last.rtt_ms is None
                else round(last.rtt_ms, 3),
                "last_error": None if last is None else last.error,
            })
        unresolved = []
        for name in spec.monitor_urls:
            state = self.resolver.state(name)
            if state is None or not state.ok:
                unresolved.append({
                    "name": name,
                    "reason": state.reason if state is not None else "not being resolved",
                    "kept": sorted(str(a) for a in (state.addresses if state else ())),
                })
        skipped = [
            {"address": str(addr), "from": [n for n in spec.monitor_urls
                                            if addr in self.resolver.addresses(n)],
             "reason": why}
            for addr, why in sorted(self._skipped.get(tunnel_id, {}).items())
        ]
        return {
            "tunnel_id": tunnel_id,
            "status": snap.status.value,
            "reason": snap.reason,
            "rtt": round(snap.rtt_ms, 3),
            "jitter": round(snap.jitter_ms, 3),
            "drop_rate": round(snap.drop_rate, 3),
            "ewma": None if snap.ewma_ms is None else round(snap.ewma_ms, 3),
            "samples": snap.samples,
            "consecutive_ok": snap.consecutive_ok,
            "consecutive_lost": snap.consecutive_lost,
            "status_age": round(max(0.0, self._clock() - snap.since), 3),
            "sa_up": snap.sa_up,
            "bind": {"device": t.device, "source": None if t.source is None else str(t.source)},
            "targets": targets,
            "unresolved": unresolved,
            "skipped": skipped,
        }

    # -- periodic loops ----------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.stats_period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.collect()
            next_at += self.stats_period
            if next_at <= loop.time():  # the loop stalled: skip periods instead of bursting
                next_at = loop.time() + self.stats_period

