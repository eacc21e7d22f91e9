"""Probe socket bindings: device, source address, ping-socket fallback, late devices.

Topology: namespace ``a`` (the engine) has two veths, v1 to ``b1``
(198.51.100.0/24) and v2 to ``b2`` (203.0.113.0/24). Both responders own
192.0.2.10, so only the binding decides which of them a probe reaches; nftables
counters in each responder count the echo requests that really arrived.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from probe_netns import Lab, netns_unavailable_reason, run_in_netns

from agent.monitor.icmp import ProbeEngine, ProbeResult

pytestmark = pytest.mark.netns

_SKIP = netns_unavailable_reason()
COUNTERS = """
table inet count {
    counter seen {}
    counter from3 {}
    chain input {
        type filter hook input priority 0;
        icmp type echo-request counter name seen
        ip saddr 198.51.100.3 icmp type echo-request counter name from3
    }
}
"""


@dataclass
class Topo:
    lab: Lab
    a: str
    b1: str
    b2: str


@pytest.fixture
def topo() -> Iterator[Topo]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Lab() as lab:
        a, b1, b2 = lab.netns("a"), lab.netns("b1"), lab.netns("b2")
        lab.veth(a, "v1", "198.51.100.1/24", b1, "e0", "198.51.100.2/24")
        lab.veth(a, "v2", "203.0.113.1/24", b2, "e0", "203.0.113.2/24")
        lab.sh(a, "ip", "addr", "add", "198.51.100.3/24", "dev", "v1")
        for ns, gw in ((b1, "198.51.100.1"), (b2, "203.0.113.1")):
            lab.sh(ns, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
            lab.sh(ns, "ip", "route", "add", "default", "via", gw)
            lab.nft(ns, COUNTERS)
        lab.sh(a, "ip", "route", "add", "192.0.2.10/32", "via", "198.51.100.2", "dev", "v1")
        lab.sh(a, "ip", "route", "add", "192.0.2.10/32", "via", "203.0.113.2", "dev", "v2",
               "metric", "100")
        yield Topo(lab, a, b1, b2)


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


Spec = tuple[str, str, str | None, str | None]  # key, address, device, source


async def probe_counted(engine: ProbeEngine, specs: list[Spec], per_target: int
                        ) -> dict[str, list[ProbeResult]]:
    """Probe each spec until it has per_target results; timeout < interval keeps it exact."""
    results: dict[str, list[ProbeResult]] = {key: [] for key, *_ in specs}

    def on_result(r: ProbeResult) -> None:
        results[str(r.key)].append(r)
        if len(results[str(r.key)]) == per_target:
            engine.remove_target(r.key)

    for key, addr, dev, src in specs:
        engine.add_target(key, IPv4Address(addr), on_result, bind_device=dev,
                          source=IPv4Address(src) if src else None)
    await until(lambda: all(len(v) >= per_target for v in results.values()), 5.0,
                f"{per_target} results per target")
    return results


def test_device_binding_decides_the_path(topo: Topo) -> None:
    k = 20

    async def scenario() -> tuple[dict[str, list[ProbeResult]], int]:
        async with ProbeEngine(interval=0.03, timeout=0.02) as engine:
            specs: list[Spec] = [
                ("via-v1", "192.0.2.10", "v1", None),
                ("via-v2", "192.0.2.10", "v2", None),
                ("b1-via-v2", "198.51.100.2", "v2", None),  # b1's address, wrong device
            ]
            probing = asyncio.ensure_future(probe_counted(engine, specs, k))
            # a socket opens at its binding's first probe: two rounds in, all are open
            await until(lambda: engine.stats.sent >= 2 * len(specs), 2.0, "two probe rounds")
            sockets = engine.stats.sockets  # one per binding, shared by targets
            results = await probing
        return results, sockets

    results, sockets = run_in_netns(topo.a, lambda: asyncio.run(scenario()))
    assert sockets == 2
    assert all(r.ok for r in results["via-v1"])
    assert all(r.ok for r in results["via-v2"])
    assert not any(r.ok for r in results["b1-via-v2"])
    # each responder saw exactly the probes of the device bound towards it
    assert topo.lab.nft_counters(topo.b1)["seen"] == k
    assert topo.lab.nft_counters(topo.b2)["seen"] == k


def test_source_address_binding(topo: Topo) -> None:
    k = 15

    async def scenario() -> dict[str, list[ProbeResult]]:
        async with ProbeEngine(interval=0.03, timeout=0.02) as engine:
            return await probe_counted(engine, [
                ("from-3", "198.51.100.2", None, "198.51.100.3"),
                ("from-1", "198.51.100.2", None, None),
            ], k)

    results = run_in_netns(topo.a, lambda: asyncio.run(scenario()))
    assert all(r.ok for rs in results.values() for r in rs)
    counters = topo.lab.nft_counters(topo.b1)
    assert (counters["seen"], counters["from3"]) == (2 * k, k)


def test_unprivileged_ping_socket_fallback(topo: Topo) -> None:
    topo.lab.sh(topo.a, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 0")
    k = 15

    async def scenario() -> tuple[dict[str, list[ProbeResult]], ProbeEngine]:
        engine = ProbeEngine(interval=0.03, timeout=0.02, socket_kind="dgram")
        async with engine:
            results = await probe_counted(engine, [
                ("dgram-v1", "192.0.2.10", "v1", None),
                ("dgram-plain", "198.51.100.2", None, None),
            ], k)
        return results, engine

    results, engine = run_in_netns(topo.a, lambda: asyncio.run(scenario()))
    assert all(r.ok and r.rtt_ms is not None and r.rtt_ms < 50 for rs in results.values()
               for r in rs)
    assert engine.stats.replies == 2 * k
    assert topo.lab.nft_counters(topo.b1)["seen"] == 2 * k
    assert topo.lab.nft_counters(topo.b2)["seen"] == 0


def test_missing_device_is_reported_then_recovers(topo: Topo) -> None:
    async def scenario() -> list[ProbeResult]:
        results: list[ProbeResult] = []
        async with ProbeEngine(interval=0.03, timeout=0.02) as engine:
            engine.add_target("late", IPv4Address("10.99.0.2"), results.append,
                              bind_device="late0")
            await until(lambda: len(results) >= 3, 2.0, "3 failed probes")
            assert engine.stats.sockets == 0
            await asyncio.to_thread(topo.lab.veth, topo.a, "late0", "10.99.0.1/30",
                                    topo.b1, "late1", "10.99.0.2/30")
            await until(lambda: sum(r.ok for r in results) >= 5, 5.0, "5 replies via late0")
            assert engine.stats.sockets == 1
        return results

    results = run_in_netns(topo.a, lambda: asyncio.run(scenario()))
    errors = Counter(r.error for r in results if not r.ok)
    assert errors["cannot open probe socket (device late0): No such device"] >= 3
    first_ok = next(i for i, r in enumerate(results) if r.ok)
    assert all(r.ok for r in results[first_ok:][-5:])
