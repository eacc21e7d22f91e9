"""The monitoring service end to end: real PeerManager on vppsim, real probes in namespaces.

Topology: namespace ``dev`` is the device. Its ``peer7`` stands in for the
linux-cp host interface of tunnel 7 (one end of a veth); the other end is in
``rsp``, which owns the monitor IP (198.51.100.77) and the address the monitor
URL resolves to (203.0.113.77). ``dev`` has no route to either: only the
probe socket's binding to ``peer7`` gets the echo requests there, as it gets
them into the tunnel on a real device. vppsim runs in-process on a Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from probe_netns import Lab, netns_unavailable_reason, run_in_netns

from agent.lab.vppsim.server import VppSim
from agent.monitor.health import HealthConfig
from agent.monitor.icmp import ProbeEngine
from agent.monitor.resolver import NameResolver
from agent.monitor.service import MonitorService
from agent.peers.changes import AddPeer, RemovePeer
from agent.peers.manager import PeerManager
from agent.peers.store import PeerStore
from agent.vpp.client import VppClient
from agent.vpp.readers import read_observed
from tests.conftest import WAN
from tests.spec_factory import example_spec

pytestmark = pytest.mark.netns

_SKIP = netns_unavailable_reason()
MONITOR_IP = IPv4Address("198.51.100.77")
URL_ADDR = IPv4Address("203.0.113.77")
COUNT = """
table inet count {
    counter seen {}
    counter from_tunnel {}
    chain input {
        type filter hook input priority 0;
        icmp type echo-request counter name seen
        iifname "t0" ip saddr 10.100.0.16 icmp type echo-request counter name from_tunnel
    }
}
"""
DROP = """
table inet loss {
    chain input {
        type filter hook input priority -10;
        icmp type echo-request drop
    }
}
"""


@dataclass
class Topo:
    lab: Lab
    dev: str
    rsp: str


@pytest.fixture
def topo() -> Iterator[Topo]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Lab() as lab:
        dev, rsp = lab.netns("dev"), lab.netns("rsp")
        lab.veth(dev, "peer7", "10.100.0.16/31", rsp, "t0", "10.100.0.17/31")
        for addr in (MONITOR_IP, URL_ADDR):
            lab.sh(rsp, "ip", "addr", "add", f"{addr}/32", "dev", "lo")
        lab.nft(rsp, COUNT)
        yield Topo(lab, dev, rsp)


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def lab_resolve(name: str) -> list[IPv4Address]:
    if name == "mon.lab.test":
        return [URL_ADDR]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@dataclass
class Monitored:
    manager: PeerManager
    service: MonitorService
    engine: ProbeEngine
    vpp: VppClient


@contextlib.asynccontextmanager
async def monitored(short_dir: Path) -> AsyncIterator[Monitored]:
    """vppsim, a PeerManager in sync with it and the monitor service over real probes,
    running (the manager's supervision too) until the block ends."""
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    vpp = VppClient(str(sim.socket_path), call_timeout=2.0, backoff_min=0.05, backoff_max=0.2)
    store = PeerStore(short_dir / "state")
    manager = PeerManager(vpp, store, {}, sa_poll_interval=0.05, sa_init_timeout=5.0,
                          reinit_backoff_min=0.05)
    manager.load()
    vpp.add_connect_listener(manager.on_vpp_connect)
    engine = ProbeEngine(interval=0.05, timeout=0.25)
    service = MonitorService(
        manager, engine,
        functools.partial(NameResolver, resolve=lab_resolve, refresh=0.5, retry=0.2),
        health_config=HealthConfig(window=20, down_after=3, up_after=3),
        stats_period=0.1)
    try:
        await vpp.start()
        await vpp.wait_connected(5)
        await until(lambda: manager.in_sync, 5, "initial reconcile")
        running = asyncio.create_task(service.run())
        supervising = asyncio.create_task(manager.supervise_forever())
        try:
            yield Monitored(manager, service, engine, vpp)
        finally:
            service.stop()
            supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervising
            await running
    finally:
        service.stop()
        await vpp.close()
        store.close()
        await sim.stop()


def test_monitoring_a_peer_through_its_tunnel_interface(topo: Topo, short_dir: Path) -> None:
    spec = example_spec(monitor_ips=(MONITOR_IP,),
                        monitor_urls=("mon.lab.test", "missing.lab.test"))

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with monitored(short_dir) as m:
            manager, service, engine, vpp = m.manager, m.service, m.engine, m.vpp
            await manager.apply([AddPeer(spec)])

            def snap() -> dict[str, Any]:
                s = service.snapshot(7)
                assert s is not None
                return s

            await until(lambda: snap()["status"] == "up"
                        and all(t["replies"] > 0 for t in snap()["targets"]),
                        5, "tunnel 7 up on probe replies from both targets")
            out["up"] = snap()

            async def entry_where(cond: Callable[[dict[str, Any]], bool],
                                  what: str) -> dict[str, Any]:
                """The first stats entry (polled like the controller does) matching cond."""
                deadline = asyncio.get_running_loop().time() + 5
                while True:
                    for entry in await service.device_stats():
                        if cond(entry):
                            return entry
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError(f"no stats entry with {what}")
                    await asyncio.sleep(0.02)

            out["up_stats"] = await entry_where(
                lambda e: e["tunnel_stats"]["7"]["status"] == "up", "tunnel 7 up")
            await until(lambda: manager.dynamic_routes.get(7) == (URL_ADDR,), 5,
                        "route for the resolved address")
            obs = await read_observed(vpp)
            out["routes"] = obs.routes[obs.tunnels[7].sw_if_index]

            await asyncio.to_thread(topo.lab.nft, topo.rsp, DROP)
            await until(lambda: snap()["status"] == "down", 5, "tunnel 7 down")
            out["down"] = snap()
            out["down_stats"] = await entry_where(
                lambda e: e["tunnel_stats"]["7"]["status"] == "down", "tunnel 7 down")

            await manager.apply([RemovePeer(7)])
            await asyncio.sleep(0)  # the monitor follows on the loop's next turn
            out["targets_after_remove"] = engine.targets()
            out["sockets_after_remove"] = engine.stats.sockets
            out["snapshot_after_remove"] = service.snapshot(7)
            out["stats_after_remove"] = (await service.device_stats())[-1]
        return out

    out = run_in_netns(topo.dev, lambda: asyncio.run(scenario()))

    up = out["up"]
    assert {t["address"]: t["from"] for t in up["targets"]} == {
        str(MONITOR_IP): ["ip"], str(URL_ADDR): ["mon.lab.test"]}
    assert up["bind"] == {"device": "peer7", "source": None}
    assert [u["name"] for u in up["unresolved"]] == ["missing.lab.test"]
    assert "Name or service not known" in up["unresolved"][0]["reason"]
    t7 = out["up_stats"]["tunnel_stats"]["7"]
    assert t7["status"] == "up" and t7["rtt"] > 0 and t7["drop_rate"] == 0.0

    assert IPv4Network(f"{URL_ADDR}/32") in out["routes"]
    assert IPv4Network(f"{MONITOR_IP}/32") in out["routes"]

    down = out["down"]
    assert down["consecutive_lost"] >= 3
    # two targets (the IP and the URL's address): both lost their last probes
    assert down["reason"] == (f"{down['consecutive_lost']} consecutive probes lost by "
                              "every target")
    assert all(t["last_error"] == "no reply within 0.25 s" for t in down["targets"])
    d7 = out["down_stats"]["tunnel_stats"]["7"]
    assert d7["status"] == "down" and d7["drop_rate"] > 0

    assert out["targets_after_remove"] == []
    assert out["sockets_after_remove"] == 0
    assert out["snapshot_after_remove"] is None
    assert out["stats_after_remove"]["tunnel_stats"] == {}

    # every echo request that reached the responder came in over the tunnel's link
    counters = topo.lab.nft_counters(topo.rsp)
    assert counters["seen"] == counters["from_tunnel"] > 0


SILENT_IP = IPv4Address("198.51.100.78")  # routed into the tunnel, answered by nobody


def test_a_monitor_ip_that_never_answers_does_not_hold_the_tunnel_down(
        topo: Topo, short_dir: Path) -> None:
    """flexiAgent's rule: a round succeeds when any target answers. A silent monitor IP
    next to one that answers leaves the tunnel up with no drop (it used to keep it
    down for good: replies and losses alternated and never made three in a row)."""
    spec = example_spec(monitor_ips=(MONITOR_IP, SILENT_IP), monitor_urls=())

    async def scenario() -> dict[str, Any]:
        async with monitored(short_dir) as m:
            await m.manager.apply([AddPeer(spec)])

            def snap() -> dict[str, Any]:
                s = m.service.snapshot(7)
                assert s is not None
                return s

            await until(lambda: snap()["status"] == "up"
                        and sum(t["lost"] for t in snap()["targets"]) >= 10, 5,
                        "tunnel 7 up while the silent target lost 10 probes")
            return {"snap": snap(), "stats": (await m.service.device_stats())[-1]}

    out = run_in_netns(topo.dev, lambda: asyncio.run(scenario()))
    lost = {t["address"]: t["lost"] for t in out["snap"]["targets"]}
    assert lost[str(SILENT_IP)] >= 10 and out["snap"]["status"] == "up"
    t7 = out["stats"]["tunnel_stats"]["7"]
    assert t7["status"] == "up" and t7["drop_rate"] == 0.0
