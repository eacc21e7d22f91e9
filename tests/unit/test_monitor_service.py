"""MonitorService driven by a fake manager, engine and resolver: exact outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.monitor.health import DROP_EVENT, RTT_EVENT, AlertConfig, HealthConfig, alerts_hash
from agent.monitor.icmp import ProbeResult, ResultCallback
from agent.monitor.resolver import ChangeCallback, NameState
from agent.monitor.service import Bind, MonitorService
from agent.peers.guard import PeerIndex, target_problem
from agent.peers.manager import PeerState
from agent.peers.spec import PeerSpec
from agent.peers.supervision import Status, StatusChange
from tests.spec_factory import example_spec, numbered_spec

A = IPv4Address
HOST = {"cpu": [1.0], "mem": 2.0, "disk": 3.0}


@dataclass
class Probe:
    address: IPv4Address
    on_result: ResultCallback
    device: str | None
    source: IPv4Address | None


class FakeEngine:
    def __init__(self) -> None:
        self.targets: dict[Hashable, Probe] = {}
        self.running = False
        self.seq = 0

    def add_target(self, key: Hashable, address: IPv4Address, on_result: ResultCallback, *,
                   bind_device: str | None = None, source: IPv4Address | None = None) -> None:
        assert key not in self.targets, f"{key!r} added twice"
        self.targets[key] = Probe(address, on_result, bind_device, source)

    def remove_target(self, key: Hashable) -> None:
        self.targets.pop(key, None)

    async def run(self) -> None:
        self.running = True
        try:
            await asyncio.Future()
        finally:
            self.running = False

    def of(self, tid: int) -> dict[IPv4Address, Probe]:
        return {p.address: p for k, p in self.targets.items() if k[0] == tid}  # type: ignore[index]

    def deliver(self, tid: int, addr: str, rtt: float | None) -> None:
        self.seq += 1
        probe = self.targets[(tid, A(addr))]
        probe.on_result(ProbeResult((tid, A(addr)), A(addr), self.seq, 0.0, rtt,
                                    None if rtt is not None else "no reply within 1 s"))


class FakeResolver:
    def __init__(self, on_change: ChangeCallback) -> None:
        self.on_change = on_change
        self.names: dict[str, NameState] = {}
        self.removed: list[str] = []

    def add(self, name: str) -> None:
        self.names.setdefault(name, NameState(name, frozenset(), False, "not resolved yet",
                                              None, 0))

    def remove(self, name: str) -> None:
        self.removed.append(name)
        state = self.names.pop(name)
        if state.addresses:
            self.on_change(name, frozenset(), state.addresses)

    def state(self, name: str) -> NameState | None:
        return self.names.get(name)

    def addresses(self, name: str) -> frozenset[IPv4Address]:
        state = self.names.get(name)
        return state.addresses if state else frozenset()

    async def run(self) -> None:
        await asyncio.Future()

    def resolved(self, name: str, *addrs: str) -> None:
        old = self.names[name]
        new = frozenset(map(A, addrs))
        self.names[name] = NameState(name, new, True, "", 1.0, old.attempts + 1)
        self.on_change(name, new - old.addresses, old.addresses - new)

    def failed(self, name: str, reason: str) -> None:
        old = self.names[name]
        self.names[name] = NameState(name, old.addresses, False, reason, old.resolved_at,
                                     old.attempts + 1)


class FakeManager:
    def __init__(self, *specs: PeerSpec) -> None:
        self.desired: dict[int, PeerSpec] = {s.tunnel_id: s for s in specs}
        self.states: dict[int, PeerState] = {s.tunnel_id: PeerState(s.tunnel_id)
                                             for s in specs}
        self.dynamic_routes: dict[int, tuple[IPv4Address, ...]] = {}
        self.listeners: list[Callable[[], None]] = []
        self.state_listeners: list[Callable[[Sequence[StatusChange]], None]] = []
        self.route_calls: list[tuple[int, tuple[IPv4Address, ...]]] = []
        self.route_failures = 0
        self.vpp_down: str | None = None
        self.wan = [IPv4Interface("192.168.1.10/24")]

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)

    def add_state_listener(self, listener: Callable[[Sequence[StatusChange]], None]) -> None:
        self.state_listeners.append(listener)

    def vpp_down_reason(self) -> str | None:
        return self.vpp_down

    def target_problem(self, spec: PeerSpec, addr: IPv4Address) -> str | None:
        return target_problem(addr, spec, PeerIndex(self.desired), self.wan)


    async def set_dynamic_routes(self, tunnel_id: int, addrs: Iterable[IPv4Address]) -> None:
        addrs = tuple(addrs)
        self.route_calls.append((tunnel_id, addrs))
        if self.route_failures:
            self.route_failures -= 1
            raise ConnectionError("VPP is not connected")
        if tunnel_id in self.desired:
            self.dynamic_routes[tunnel_id] = tuple(sorted(set(addrs)))

    def put(self, *specs: PeerSpec) -> None:
        for s in specs:
            self.desired[s.tunnel_id] = s
            self.states.setdefault(s.tunnel_id, PeerState(s.tunnel_id))
        self.notify()

    def delete(self, tid: int) -> None:
        del self.desired[tid]
        self.states.pop(tid, None)
        self.dynamic_routes.pop(tid, None)
        self.notify()

    def notify(self) -> None:
        for listener in self.listeners:
            listener()

    def sa(self, tid: int, status: str, reason: str = "") -> None:
        self.states[tid].set(Status(status), reason)
        for listener in self.state_listeners:
            listener((StatusChange(tid, Status(status), reason),))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Rig:
    manager: FakeManager
    engine: FakeEngine
    resolver: FakeResolver
    service: MonitorService
    clock: Clock


def rig(*specs: PeerSpec, bind: Bind = "device", overrides: dict[int, Bind] | None = None,
        alert_config: AlertConfig | None = None, **kw: Any) -> Rig:
    manager, engine, clock = FakeManager(*specs), FakeEngine(), Clock()
    made: list[FakeResolver] = []

    def factory(cb: ChangeCallback) -> FakeResolver:
        made.append(FakeResolver(cb))
        return made[0]

    utc = iter(range(1_700_000_000, 1_800_000_000))
    kw.setdefault("stats_period", 10.0)
    service = MonitorService(
        manager, engine, factory, bind=bind, bind_overrides=overrides,
        health_config=HealthConfig(window=10, down_after=3, up_after=3),
        alert_config=alert_config, clock=clock,
        utc=lambda: float(next(utc)), host_health=lambda: HOST, **kw)
    service.sync()
    return Rig(manager, engine, made[0], service, clock)


def plain(tid: int, ips: tuple[str, ...] = (), urls: tuple[str, ...] = ()) -> PeerSpec:
    return replace(numbered_spec(tid), monitor_ips=tuple(map(A, ips)), monitor_urls=urls)


def tstats(r: Rig, tid: int) -> dict[str, Any]:
    stats: dict[str, Any] = r.service.collect()["tunnel_stats"]
    return stats[str(tid)]


# -- targets follow the desired set ----------------------------------------------------


def test_targets_are_bound_to_the_tunnels_linux_interface() -> None:
    r = rig(plain(7, ("198.51.100.1", "198.51.100.2")), plain(8, ("198.51.100.1",)))
    assert {k: (p.device, p.source) for k, p in r.engine.targets.items()} == {
        (7, A("198.51.100.1")): ("peer7", None),
        (7, A("198.51.100.2")): ("peer7", None),
        (8, A("198.51.100.1")): ("peer8", None),
    }


def test_source_binding_globally_and_per_tunnel_override() -> None:
    r = rig(plain(7, ("198.51.100.1",)), plain(8, ("198.51.100.1",)), bind="source",
            overrides={8: "device"})
    p7, p8 = r.engine.of(7)[A("198.51.100.1")], r.engine.of(8)[A("198.51.100.1")]
    assert (p7.device, p7.source) == (None, plain(7).addr.ip)
    assert (p8.device, p8.source) == ("peer8", None)


def test_invalid_binding_is_refused() -> None:
    with pytest.raises(ValueError, match="probe binding must be one of device, source"):
        rig(plain(7), overrides={7: "vrf"})  # type: ignore[dict-item]


def test_desired_changes_add_and_remove_targets() -> None:
    r = rig(plain(7, ("198.51.100.1", "198.51.100.2")))
    r.manager.put(plain(7, ("198.51.100.2", "198.51.100.3")), plain(9, ("203.0.113.9",)))
    assert set(r.engine.of(7)) == {A("198.51.100.2"), A("198.51.100.3")}
    assert set(r.engine.of(9)) == {A("203.0.113.9")}
    r.manager.delete(7)
    assert list(r.engine.targets) == [(9, A("203.0.113.9"))]
    assert r.service.snapshot(7) is None
    assert set(r.service.collect()["tunnel_stats"]) == {"9"}


async def test_on_the_loop_a_burst_of_changes_is_one_sync_on_the_next_turn() -> None:
    """A job's reply must not wait for the monitor: the sync comes on the loop's next
    turn, once for however many changes came before it."""
    r = rig()
    syncs: list[int] = []
    real = r.service.sync
    r.service.sync = lambda: (syncs.append(1), real())[1]  # type: ignore[method-assign]
    r.manager.put(plain(7, ("198.51.100.1",)))
    r.manager.put(plain(9, ("203.0.113.9",)))
    assert r.engine.targets == {} and syncs == []
    await asyncio.sleep(0)
    assert syncs == [1]
    assert set(r.engine.targets) == {(7, A("198.51.100.1")), (9, A("203.0.113.9"))}
    # a reader before that turn sees the change at once, and the turn then has no work
    r.manager.delete(7)
    assert r.service.tunnel_ids() == [9] and syncs == [1, 1]
    await asyncio.sleep(0)
    assert syncs == [1, 1]


async def test_changes_while_syncs_are_held_are_synced_once_the_hold_ends() -> None:
    """A job holds the monitor's syncs until it has replied: its changes are followed
    after that, once, and a reader meanwhile still sees them."""
    r = rig()
    syncs: list[int] = []
    real = r.service.sync
    r.service.sync = lambda: (syncs.append(1), real())[1]  # type: ignore[method-assign]
    with r.service.syncs_held():
        r.manager.put(plain(7, ("198.51.100.1",)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert syncs == [] and r.engine.targets == {}
        r.manager.put(plain(9, ("203.0.113.9",)))
        assert r.service.tunnel_ids() == [7, 9] and syncs == [1]  # a reader catches up
        r.manager.delete(9)
        await asyncio.sleep(0)
        assert syncs == [1]
    assert syncs == [1]  # on the loop's next turn, not inside the scope's exit
    await asyncio.sleep(0)
    assert syncs == [1, 1]
    assert set(r.engine.targets) == {(7, A("198.51.100.1"))}
    with r.service.syncs_held():
        pass  # nothing changed: nothing to sync
    await asyncio.sleep(0)
    assert syncs == [1, 1]


def test_a_few_new_tunnels_are_logged_one_by_one_hundreds_in_one_line() -> None:
    r = rig()
    with capture_logs() as few:
        r.manager.put(*(plain(t, ("198.51.100.1",)) for t in range(1, 4)))
    assert [e["event"] for e in few if e["log_level"] == "info"].count("monitoring tunnel") == 3
    with capture_logs() as many:
        r.manager.put(*(plain(t, ("198.51.100.1",)) for t in range(10, 510)))
    info = [e for e in many if e["log_level"] == "info"]
    assert [e["event"] for e in info] == ["monitoring tunnels"]
    assert (info[0]["added"], info[0]["tunnels"], info[0]["targets"]) == (500, 503, 500)
    assert sum(e["event"] == "monitoring tunnel" for e in many) == 500  # at debug
    assert len(r.engine.targets) == 503
    with capture_logs() as next_one:
        r.manager.put(plain(600, ("198.51.100.1",)))
    assert [e["event"] for e in next_one if e["log_level"] == "info"] == [
        "monitoring tunnel", "probe target added"]


def test_rebinding_when_the_tunnel_address_changes_in_source_mode() -> None:
    r = rig(plain(7, ("198.51.100.1",)), bind="source")
    moved = replace(plain(7, ("198.51.100.1",)), addr=IPv4Interface("10.9.9.8/31"))
    r.manager.put(moved)
    assert r.engine.of(7)[A("198.51.100.1")].source == A("10.9.9.8")
    assert len(r.engine.targets) == 1


def test_results_after_removal_are_ignored() -> None:
    r = rig(plain(7, ("198.51.100.1",)))
    probe = r.engine.of(7)[A("198.51.100.1")]
    r.manager.delete(7)
    probe.on_result(ProbeResult((7, A("198.51.100.1")), A("198.51.100.1"), 1, 0.0, 5.0))
    assert r.service.snapshot(7) is None


# -- URL targets, routes, unresolved names -------------------------------------------------


async def test_resolved_addresses_become_targets_and_routes() -> None:
    r = rig(plain(7, ("198.51.100.1",), ("mon.example.com",)))
    assert r.service.snapshot(7)["unresolved"] == [  # type: ignore[index]
        {"name": "mon.example.com", "reason": "not resolved yet", "kept": []}]
    r.resolver.resolved("mon.example.com", "203.0.113.5", "203.0.113.4")
    assert set(r.engine.of(7)) == {A("198.51.100.1"), A("203.0.113.4"), A("203.0.113.5")}
    assert r.engine.of(7)[A("203.0.113.4")].device == "peer7"
    assert await r.service.push_routes()
    assert r.manager.route_calls == [(7, (A("203.0.113.4"), A("203.0.113.5")))]
    # unchanged: no second call
    assert await r.service.push_routes()
    assert len(r.manager.route_calls) == 1
    # one address goes away: its target and its route go with it
    r.resolver.resolved("mon.example.com", "203.0.113.5")
    assert set(r.engine.of(7)) == {A("198.51.100.1"), A("203.0.113.5")}
    await r.service.push_routes()
    assert r.manager.route_calls[-1] == (7, (A("203.0.113.5"),))
    snap = r.service.snapshot(7)
    assert snap is not None and snap["unresolved"] == []
    assert {t["address"]: t["from"] for t in snap["targets"]} == {
        "198.51.100.1": ["ip"], "203.0.113.5": ["mon.example.com"]}


async def test_a_name_shared_by_two_tunnels_and_then_dropped() -> None:
    r = rig(plain(7, (), ("mon.example.com",)), plain(8, (), ("mon.example.com",)))
    r.resolver.resolved("mon.example.com", "203.0.113.5")
    assert set(r.engine.targets) == {(7, A("203.0.113.5")), (8, A("203.0.113.5"))}
    await r.service.push_routes()
    assert sorted(r.manager.route_calls) == [(7, (A("203.0.113.5"),)), (8, (A("203.0.113.5"),))]
    r.manager.put(plain(7))  # tunnel 7 stops monitoring the name; 8 keeps it
    await asyncio.sleep(0)  # the monitor follows on the loop's next turn
    assert r.resolver.removed == []
    assert set(r.engine.targets) == {(8, A("203.0.113.5"))}
    await r.service.push_routes()
    assert r.manager.route_calls[-1] == (7, ())
    r.manager.put(plain(8))  # nobody uses it any more: the resolver forgets it
    await asyncio.sleep(0)
    assert r.resolver.removed == ["mon.example.com"]
    assert r.engine.targets == {}
    await r.service.push_routes()
    assert r.manager.dynamic_routes == {7: (), 8: ()}


def test_a_name_that_does_not_resolve_is_reported_not_fatal() -> None:
    r = rig(plain(7, ("198.51.100.1",), ("mon.example.com",)))
    r.resolver.resolved("mon.example.com", "203.0.113.5")
    r.resolver.failed("mon.example.com", "cannot resolve mon.example.com: Name or service "
                                         "not known")
    snap = r.service.snapshot(7)
    assert snap is not None
    assert snap["unresolved"] == [{
        "name": "mon.example.com",
        "reason": "cannot resolve mon.example.com: Name or service not known",
        "kept": ["203.0.113.5"]}]
    # the last known address stays probed
    assert set(r.engine.of(7)) == {A("198.51.100.1"), A("203.0.113.5")}


async def test_route_failures_are_retried_while_running() -> None:
    r = rig(plain(7, (), ("mon.example.com",)), route_retry=0.02)
    r.manager.route_failures = 2
    task = asyncio.create_task(r.service.run())
    r.resolver.resolved("mon.example.com", "203.0.113.5")
    async with asyncio.timeout(2):
        while r.manager.dynamic_routes.get(7) != (A("203.0.113.5"),):
            await asyncio.sleep(0.005)
    assert r.manager.route_calls == [(7, (A("203.0.113.5"),))] * 3
    r.service.stop()
    async with asyncio.timeout(2):
        await task


# -- status, SA, health --------------------------------------------------------------------


def test_without_targets_status_follows_the_sa() -> None:
    r = rig(plain(7))
    assert tstats(r, 7) == {"status": "down", "rtt": 0.0, "drop_rate": 0.0, "jitter": 0.0}
    assert r.service.snapshot(7)["reason"] == "SA connecting: not initiated yet"  # type: ignore[index]
    r.manager.sa(7, "up", "IKE SA established, child SA installed")
    assert tstats(r, 7) == {"status": "up", "rtt": 0.0, "drop_rate": 0.0, "jitter": 0.0}
    r.manager.sa(7, "down", "AUTH_FAILED: authentication failed")
    snap = r.service.collect()
    assert snap["tunnel_stats"]["7"]["status"] == "down"
    assert r.service.snapshot(7)["reason"] == "SA down: AUTH_FAILED: authentication failed"  # type: ignore[index]


def test_probes_bring_the_tunnel_up_and_down_with_hysteresis() -> None:
    r = rig(plain(7, ("198.51.100.1",)))
    r.manager.sa(7, "up")
    r.service.poll_sa()
    for rtt in (10.0, 20.0):
        r.engine.deliver(7, "198.51.100.1", rtt)
    assert tstats(r, 7)["status"] == "down"  # 2 of 3 replies needed
    r.engine.deliver(7, "198.51.100.1", 30.0)
    # RFC 3550 jitter over |20-10| and |30-20|: 10/16 = 0.625, then + (10-0.625)/16
    assert tstats(r, 7) == {"status": "up", "rtt": 20.0, "drop_rate": 0.0, "jitter": 1.211}
    r.engine.deliver(7, "198.51.100.1", None)
    r.engine.deliver(7, "198.51.100.1", None)
    assert tstats(r, 7)["status"] == "up"  # 2 losses are not enough
    r.engine.deliver(7, "198.51.100.1", None)
    st = tstats(r, 7)
    assert st["status"] == "down" and st["drop_rate"] == 50.0 and st["rtt"] == 20.0
    snap = r.service.snapshot(7)
    assert snap is not None
    assert snap["reason"] == "3 consecutive probes lost"
    assert snap["targets"] == [{"address": "198.51.100.1", "from": ["ip"], "replies": 3,
                                "lost": 3, "last_rtt": None,
                                "last_error": "no reply within 1 s"}]


def test_a_tunnel_first_seen_with_its_sa_up_still_needs_probe_replies() -> None:
    """The SA of a new tunnel can come up before the monitor first looks (on real VPP,
    within the job): the monitor's targets must still prove the tunnel, not the SA."""
    r = rig()
    spec = plain(7, ("198.51.100.1",))
    r.manager.desired[7] = spec  # the job's tunnel, not yet seen by the monitor
    r.manager.states[7] = PeerState(7)
    r.manager.states[7].set(Status("up"), "IKE SA established, child SA installed")
    r.manager.notify()
    snap = r.service.snapshot(7)
    assert snap is not None and snap["sa_up"]
    assert (snap["status"], snap["reason"]) == (
        "down", "waiting for 3 consecutive probe replies (0 so far)")
    for _ in range(3):
        r.engine.deliver(7, "198.51.100.1", 5.0)
    assert tstats(r, 7)["status"] == "up"


def test_sa_down_takes_a_probed_tunnel_down_at_once() -> None:
    r = rig(plain(7, ("198.51.100.1",)))
    r.manager.sa(7, "up")
    r.service.poll_sa()
    for _ in range(3):
        r.engine.deliver(7, "198.51.100.1", 5.0)
    assert tstats(r, 7)["status"] == "up"
    r.manager.sa(7, "down", "IKE SA lost")
    assert tstats(r, 7)["status"] == "down"  # collect() polls the SA state itself


# -- stats entries and history ---------------------------------------------------------------


async def test_entry_shape_matches_the_protocol() -> None:
    r = rig(plain(7, ("198.51.100.1",)), plain(12))
    r.manager.sa(12, "up")
    [entry] = await r.service.device_stats()
    assert entry == {
        "ok": 1, "running": True, "state": "running", "stateReason": "", "period": 10.0,
        "utc": 1_700_000_000.0, "stats": {},
        "tunnel_stats": {
            "7": {"status": "down", "rtt": 0.0, "drop_rate": 0.0, "jitter": 0.0},
            "12": {"status": "up", "rtt": 0.0, "drop_rate": 0.0, "jitter": 0.0},
        },
        "health": HOST, "alerts": {}, "alerts_hash": "",
    }


async def test_history_since_the_previous_poll() -> None:
    r = rig(plain(7), history=3)
    for _ in range(4):
        r.service.collect()
    first = await r.service.device_stats()
    # bounded: the oldest of the four was dropped; oldest first
    assert [e["utc"] for e in first] == [1_700_000_001.0, 1_700_000_002.0, 1_700_000_003.0]
    second = await r.service.device_stats()
    assert [e["utc"] for e in second] == [1_700_000_004.0]  # built on demand
    r.service.collect()
    assert [e["utc"] for e in await r.service.device_stats()] == [1_700_000_005.0]


async def test_alerts_are_evaluated_once_per_period() -> None:
    cfg = AlertConfig(samples=3, raise_after=2, clear_after=2)
    r = rig(plain(7, ("198.51.100.1",)), alert_config=cfg)
    r.manager.sa(7, "up")
    r.service.poll_sa()
    for _ in range(3):
        r.engine.deliver(7, "198.51.100.1", 400.0)
    assert r.service.collect()["alerts"] == {}
    # entries built on demand do not count as periods
    assert (await r.service.device_stats())[-1]["alerts"] == {}
    assert (await r.service.device_stats())[-1]["alerts"] == {}
    entry = r.service.collect()
    expected = {RTT_EVENT: {"7": {"value": 400.0, "threshold": 300.0, "severity": "warning",
                                  "unit": "ms", "type": "tunnel"}}}
    assert entry["alerts"] == expected
    assert entry["alerts_hash"] == alerts_hash(expected) != ""
    assert DROP_EVENT not in entry["alerts"]
    # the on-demand entry repeats the active alerts; gone with the tunnel
    await r.service.device_stats()
    assert (await r.service.device_stats())[0]["alerts"] == expected
    r.manager.delete(7)
    assert (await r.service.device_stats())[0]["alerts"] == {}


async def test_run_records_entries_every_period_and_stops_cleanly() -> None:
    spec = example_spec(monitor_ips=(A("198.51.100.1"),), monitor_urls=())
    r = rig(spec, stats_period=0.02)
    task = asyncio.create_task(r.service.run())
    async with asyncio.timeout(2):
        while not r.engine.running:
            await asyncio.sleep(0.005)
    r.manager.sa(7, "up")
    async with asyncio.timeout(2):  # the manager pushes the state change
        while r.service.snapshot(7)["sa_up"] is not True:  # type: ignore[index]
            await asyncio.sleep(0.005)
    entries: list[dict[str, Any]] = []
    async with asyncio.timeout(2):  # more than one entry per poll: recorded by the loop
        while len(entries) < 2:
            await asyncio.sleep(0.05)
            entries = await r.service.device_stats()
    utcs = [e["utc"] for e in entries]
    assert utcs == sorted(utcs)
    assert all(e["period"] == 0.02 and set(e["tunnel_stats"]) == {"7"} for e in entries)
    r.service.stop()
    async with asyncio.timeout(2):
        await task
    assert not r.engine.running


async def test_a_stop_before_the_run_has_begun_is_not_lost() -> None:
    r = rig(plain(7, ("198.51.100.1",)))
    task = asyncio.create_task(r.service.run())
    r.service.stop()  # the task has not started yet
    async with asyncio.timeout(2):
        await task
    assert not r.engine.running


def test_status_listeners_hear_each_up_and_down_once() -> None:
    r = rig(plain(7, ("198.51.100.1",)))
    heard: list[tuple[int, str]] = []
    r.service.status_listeners.append(lambda tid, status: heard.append((tid, status)))
    r.manager.sa(7, "up")
    r.service.poll_sa()
    for rtt in (10.0, 20.0, 30.0, 40.0):
        r.engine.deliver(7, "198.51.100.1", rtt)
    assert heard == [(7, "up")]
    for _ in range(4):
        r.engine.deliver(7, "198.51.100.1", None)
    assert heard == [(7, "up"), (7, "down")]


async def test_dns_answers_that_must_not_be_routed_are_skipped_with_a_reason() -> None:
    other = plain(8)
    r = rig(plain(7, ("198.51.100.1",), ("mon.example.com",)), other)
    hostile = ("127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.5", "192.168.1.10",
               "192.168.1.1", str(other.dst), str(numbered_spec(7).dst))
    r.resolver.resolved("mon.example.com", "203.0.113.200", *hostile)
    assert set(r.engine.of(7)) == {A("198.51.100.1"), A("203.0.113.200")}
    await r.service.push_routes()
    assert r.manager.dynamic_routes[7] == (A("203.0.113.200"),)
    snap = r.service.snapshot(7)
    assert snap is not None
    reasons = {s["address"]: s["reason"] for s in snap["skipped"]}
    assert set(reasons) == set(hostile)
    assert reasons["169.254.169.254"].startswith("a link-local address")
    assert reasons[str(other.dst)] == ("the peer address of tunnel 8: that tunnel's IKE/ESP "
                                       "would be diverted")
    assert reasons["192.168.1.1"].startswith("in the WAN subnet 192.168.1.0/24")
    assert all(s["from"] == ["mon.example.com"] for s in snap["skipped"])


async def test_a_query_flood_builds_the_stats_entry_once_a_second() -> None:
    r = rig(*[plain(n, (f"198.51.100.{n}",)) for n in range(1, 51)])
    built = 0
    real = r.service._entry

    def counting(*, evaluate: bool) -> dict[str, Any]:
        nonlocal built
        built += 1
        return real(evaluate=evaluate)

    r.service._entry = counting  # type: ignore[method-assign]
    first = await r.service.device_stats()
    for _ in range(99):
        assert await r.service.device_stats() == first
    assert built == 1
    r.clock.t += 1.0  # a second later: fresh numbers
    r.engine.deliver(7, "198.51.100.7", 12.0)
    fresh = await r.service.device_stats()
    assert built == 2 and fresh[0]["tunnel_stats"]["7"] != first[0]["tunnel_stats"]["7"]
    r.manager.put(plain(60, ("198.51.100.60",)))  # a desired-set change: at once
    assert "60" in (await r.service.device_stats())[0]["tunnel_stats"]
    before = built
    await r.service.device_stats()
    assert built == before  # cached
    r.manager.sa(7, "up")  # an SA state change the manager pushes: rebuilt at once
    await r.service.device_stats()
    assert built == before + 1
