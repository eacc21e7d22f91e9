"""The ICMP probe engine against real kernels in network namespaces.

Topology per test: namespace ``a`` runs the engine, namespace ``b`` answers;
one veth between them with 198.51.100.0/24 addresses; nftables in ``b`` injects
loss or rejects and counts what really crossed the wire.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest
from probe_netns import Lab, netns_unavailable_reason, run_in_netns

from agent.monitor.health import HealthConfig, Status, TunnelHealth
from agent.monitor.icmp import ProbeEngine, ProbeResult

pytestmark = pytest.mark.netns

_SKIP = netns_unavailable_reason()


@pytest.fixture
def lab() -> Iterator[tuple[Lab, str, str]]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")
        lab.veth(a, "v0", "198.51.100.1/24", b, "v1", "198.51.100.2/24")
        yield lab, a, b


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def test_drop_rate_matches_injected_loss(lab: tuple[Lab, str, str]) -> None:
    lab_, a, b = lab
    targets = [f"198.51.100.{i}" for i in range(10, 30)]  # 20 targets
    for addr in targets:
        lab_.sh(b, "ip", "addr", "add", f"{addr}/24", "dev", "v1")
    lab_.nft(b, """
        table inet loss {
            counter seen {}
            counter dropped {}
            chain input {
                type filter hook input priority 0;
                icmp type echo-request counter name seen
                icmp type echo-request numgen random mod 100 < 20 counter name dropped drop
            }
        }
    """)
    per_target = 50
    total = per_target * len(targets)

    async def scenario() -> tuple[list[ProbeResult], dict[str, TunnelHealth]]:
        results: list[ProbeResult] = []
        counts: Counter[str] = Counter()
        # one tunnel per target: a tunnel's drop rate counts rounds no target answered
        health = {t: TunnelHealth(0.0, HealthConfig(window=per_target), sa_up=True,
                                  targets=[t]) for t in targets}
        # timeout < interval: a target's probe is settled before its next one leaves,
        # so after its last result nothing of it is in flight
        engine = ProbeEngine(interval=0.05, timeout=0.03)

        def on_result(r: ProbeResult) -> None:
            results.append(r)
            health[str(r.key)].record(r.key, r.rtt_ms, r.sent_at)
            counts[str(r.key)] += 1
            if counts[str(r.key)] == per_target:
                engine.remove_target(r.key)

        async with engine:
            for addr in targets:
                engine.add_target(addr, IPv4Address(addr), on_result)
            await until(lambda: len(results) >= total, 10.0, f"{total} results")
        return results, health

    results, health = run_in_netns(a, lambda: asyncio.run(scenario()))
    assert len(results) == total
    assert Counter(str(r.key) for r in results) == {t: per_target for t in targets}
    lost = [r for r in results if not r.ok]
    counters = lab_.nft_counters(b)
    assert counters["seen"] == total  # every probe left and arrived exactly once
    assert len(lost) == counters["dropped"]  # each loss is one nftables drop, no more
    assert {r.error for r in lost} <= {"no reply within 0.03 s"}
    p = 0.20
    sigma = math.sqrt(p * (1 - p) / total)  # binomial: 1000 probes -> 1.26 %
    rate = len(lost) / total
    assert abs(rate - p) < 4 * sigma, f"drop rate {rate:.3f} vs 0.20 +- {4 * sigma:.3f}"
    for target, h in health.items():
        snap = h.snapshot()
        assert snap.samples == per_target
        lost_here = sum(1 for r in lost if str(r.key) == target)
        assert snap.drop_rate == pytest.approx(100.0 * lost_here / per_target)


def test_rtt_agrees_with_iputils_ping(lab: tuple[Lab, str, str]) -> None:
    lab_, a, _ = lab
    n = 100

    async def scenario() -> list[ProbeResult]:
        results: list[ProbeResult] = []
        async with ProbeEngine(interval=0.01, timeout=0.5) as engine:
            engine.add_target("peer", IPv4Address("198.51.100.2"), results.append)
            await until(lambda: len(results) >= n, 10.0, f"{n} results")
        return results

    results = run_in_netns(a, lambda: asyncio.run(scenario()))
    out = lab_.sh(a, "ping", "-n", "-c", str(n), "-i", "0.01", "198.51.100.2")
    ping_rtts = [float(m) for m in re.findall(r"time=([0-9.]+) ms", out)]
    ours = [r.rtt_ms for r in results if r.rtt_ms is not None]
    assert len(ours) >= n and len(ping_rtts) == n
    ours_median, ping_median = statistics.median(ours), statistics.median(ping_rtts)
    assert 0.0 < ours_median < 5.0
    assert abs(ours_median - ping_median) < 1.0, (ours_median, ping_median)


def test_foreign_echo_replies_are_ignored(lab: tuple[Lab, str, str]) -> None:
    """An unbound raw socket sees every echo reply in its namespace; only its own count.

    The responder drops requests from 198.51.100.1, so engine ``one`` (unbound,
    sourcing from .1) gets no reply at all while its probes stay outstanding;
    engine ``two`` and an iputils ping, both sourcing from .3, get replies with
    the same target address and overlapping sequence numbers. Any reply ``one``
    accepted would be someone else's.
    """
    lab_, a, b = lab
    lab_.sh(a, "ip", "addr", "add", "198.51.100.3/24", "dev", "v0")
    lab_.nft(b, """
        table inet f {
            chain input {
                type filter hook input priority 0;
                ip saddr 198.51.100.1 icmp type echo-request drop
            }
        }
    """)

    async def scenario() -> tuple[list[ProbeResult], list[ProbeResult], int]:
        one: list[ProbeResult] = []
        two: list[ProbeResult] = []
        e1, e2 = ProbeEngine(0.01, 0.3), ProbeEngine(0.01, 0.3)
        async with e1, e2:
            e1.add_target("one", IPv4Address("198.51.100.2"), one.append)
            e2.add_target("two", IPv4Address("198.51.100.2"), two.append,
                          source=IPv4Address("198.51.100.3"))
            ping = await asyncio.create_subprocess_exec(
                "ping", "-n", "-q", "-c", "50", "-i", "0.01", "-I", "198.51.100.3",
                "198.51.100.2", stdout=asyncio.subprocess.DEVNULL)
            await ping.wait()
            await until(lambda: len(two) >= 50 and len(one) >= 30, 5.0, "results of both")
            ignored = e1.stats.ignored
        return one, two, ignored

    one, two, ignored = run_in_netns(a, lambda: asyncio.run(scenario()))
    assert all(r.ok for r in two), [r.error for r in two if not r.ok][:3]
    seqs = [r.seq for r in two]
    assert len(set(seqs)) == len(seqs)
    assert [r for r in one if r.ok] == []
    assert {r.error for r in one} == {"no reply within 0.3 s"}
    assert ignored >= 100  # engine two's and ping's replies, seen and rejected


def test_icmp_errors_are_reported_as_losses_with_reason(lab: tuple[Lab, str, str]) -> None:
    lab_, a, b = lab
    lab_.nft(b, """
        table inet rej {
            chain input {
                type filter hook input priority 0;
                icmp type echo-request reject with icmp type admin-prohibited
            }
        }
    """)

    async def scenario() -> list[ProbeResult]:
        results: list[ProbeResult] = []
        async with ProbeEngine(interval=0.05, timeout=2.0) as engine:
            engine.add_target("peer", IPv4Address("198.51.100.2"), results.append)
            await until(lambda: len(results) >= 4, 1.5, "4 results (well before the 2 s timeout)")
            engine.remove_target("peer")
            assert engine.stats.icmp_errors == len(results)
        return results

    results = run_in_netns(a, lambda: asyncio.run(scenario()))
    assert {(r.rtt_ms, r.error) for r in results} == {
        (None, "communication administratively prohibited from 198.51.100.2")}


def test_health_follows_blackhole_with_hysteresis(lab: tuple[Lab, str, str]) -> None:
    lab_, a, b = lab

    async def scenario() -> list[tuple[str, Status]]:
        health = TunnelHealth(0.0, sa_up=True, targets=["peer"])
        transitions: list[tuple[str, Status]] = []
        phase = ["initial"]

        def on_result(r: ProbeResult) -> None:
            before = health.status
            health.record(r.key, r.rtt_ms, r.sent_at)
            if health.status is not before:
                transitions.append((phase[0], health.status))

        async with ProbeEngine(interval=0.02, timeout=0.015) as engine:
            engine.add_target("peer", IPv4Address("198.51.100.2"), on_result)
            await until(lambda: health.status is Status.UP, 2.0, "tunnel up")
            phase[0] = "blackhole"
            await asyncio.to_thread(lab_.nft, b, """
                table inet bh {
                    chain input {
                        type filter hook input priority 0;
                        icmp type echo-request drop
                    }
                }""")
            await until(lambda: health.status is Status.DOWN, 2.0, "tunnel down")
            snap = health.snapshot()
            assert snap.consecutive_lost == 3 and snap.reason == "3 consecutive probes lost"
            phase[0] = "restored"
            await asyncio.to_thread(lab_.sh, b, "nft", "delete", "table", "inet", "bh")
            await until(lambda: health.status is Status.UP, 2.0, "tunnel up again")
            assert health.snapshot().consecutive_ok == 3
        return transitions

    transitions = run_in_netns(a, lambda: asyncio.run(scenario()))
    assert transitions == [("initial", Status.UP), ("blackhole", Status.DOWN),
                           ("restored", Status.UP)]
