"""Health maths: exact outputs for synthetic probe streams."""

from __future__ import annotations

import pytest

from agent.monitor.health import (
    DROP_EVENT,
    RTT_EVENT,
    AlertConfig,
    AlertEvaluator,
    HealthConfig,
    HealthSnapshot,
    Severity,
    Status,
    TunnelHealth,
    alerts_hash,
)

L = None  # a lost probe


def feed(h: TunnelHealth, stream: list[float | None], t0: float = 0.0, target: str = "a") -> float:
    """Feed one sample per second starting at t0 + 1; return the last timestamp."""
    t = t0
    for rtt in stream:
        t += 1.0
        h.record(target, rtt, t)
    return t


def statuses(h: TunnelHealth, stream: list[float | None]) -> str:
    out = []
    for i, rtt in enumerate(stream, 1):
        h.record("a", rtt, float(i))
        out.append("U" if h.status is Status.UP else "d")
    return "".join(out)


def test_starts_down_until_proven_up() -> None:
    h = TunnelHealth(now=5.0, sa_up=True, targets=["a"])
    s = h.snapshot()
    assert (s.status, s.since, s.samples, s.rtt_ms, s.drop_rate, s.ewma_ms) == (
        Status.DOWN, 5.0, 0, 0.0, 0.0, None)
    assert s.reason == "waiting for 3 consecutive probe replies (0 so far)"
    h.record("a", 10.0, 6.0)
    h.record("a", 10.0, 7.0)
    assert h.status is Status.DOWN
    assert h.snapshot().reason == "waiting for 3 consecutive probe replies (2 so far)"
    h.record("a", 10.0, 8.0)
    s = h.snapshot()
    assert (s.status, s.since, s.reason, s.consecutive_ok) == (Status.UP, 8.0, "", 3)


def test_none_lost_exact_stats() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    feed(h, [10.0, 12.0, 11.0, 15.0])
    s = h.snapshot()
    assert s.status is Status.UP
    assert s.rtt_ms == pytest.approx(12.0)
    assert s.drop_rate == 0.0
    assert s.samples == 4
    # EWMA alpha 1/8: 10 -> 10.25 -> 10.34375 -> 10.92578125
    assert s.ewma_ms == pytest.approx(10.92578125)
    # jitter: D = 2, 1, 4 -> 0.125, 0.1796875, 0.418457...
    j = 0.0
    for d in (2.0, 1.0, 4.0):
        j += (d - j) / 16
    assert s.jitter_ms == pytest.approx(j)
    assert s.jitter_ms == pytest.approx(0.41845703125)


def test_all_lost_stays_down_with_reason() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    feed(h, [L] * 10)
    s = h.snapshot()
    assert (s.status, s.drop_rate, s.rtt_ms, s.samples, s.consecutive_lost, s.since) == (
        Status.DOWN, 100.0, 0.0, 10, 10, 0.0)
    assert s.reason == "10 consecutive probes lost"
    assert s.ewma_ms is None


def test_loss_burst_takes_down_after_three_and_recovers_after_three() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    assert statuses(h, [5.0] * 3 + [L, L, L, L] + [5.0, 5.0, 5.0, 5.0]) == "ddUUUddddUU"
    s = h.snapshot()
    assert s.since == 10.0  # back up at the third reply after the burst
    assert s.drop_rate == pytest.approx(100.0 * 4 / 11)


def test_two_losses_never_flap() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    assert statuses(h, [1.0, 1.0, 1.0, L, L, 1.0, L, L, 1.0, L, L, 1.0]) == "ddUUUUUUUUUU"
    assert h.snapshot().drop_rate == pytest.approx(50.0)


def test_flapping_around_up_threshold_stays_down() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    # never three replies in a row after going down: it must not come back
    out = statuses(h, [1.0] * 3 + [L] * 3 + [1.0, 1.0, L] * 4)
    assert out == "ddUUUd" + "ddd" * 4
    assert h.snapshot().since == 6.0


def test_window_slides_and_evicts_exactly() -> None:
    h = TunnelHealth(now=0.0, config=HealthConfig(window=4), sa_up=True, targets=["a"])
    feed(h, [L, 10.0, 20.0, 30.0])
    s = h.snapshot()
    assert (s.samples, s.drop_rate, s.rtt_ms) == (4, 25.0, 20.0)
    feed(h, [40.0], t0=4.0)  # evicts the loss
    s = h.snapshot()
    assert (s.samples, s.drop_rate, s.rtt_ms) == (4, 0.0, 25.0)
    feed(h, [L, L], t0=5.0)  # evicts 10 and 20
    s = h.snapshot()
    assert (s.samples, s.drop_rate, s.rtt_ms) == (4, 50.0, 35.0)
    feed(h, [L, L], t0=7.0)
    s = h.snapshot()
    assert (s.samples, s.drop_rate, s.rtt_ms) == (4, 100.0, 0.0)


def test_sa_down_wins_immediately_and_up_needs_fresh_proof() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    feed(h, [1.0] * 5)
    assert h.status is Status.UP
    h.set_sa(False, 6.0, reason="child SA expired")
    s = h.snapshot()
    assert (s.status, s.since, s.reason, s.sa_up) == (Status.DOWN, 6.0, "child SA expired", False)
    feed(h, [1.0] * 5, t0=6.0)  # replies while the SA is down cannot bring it up
    assert h.status is Status.DOWN
    assert h.snapshot().reason == "child SA expired"
    h.set_sa(True, 12.0)
    assert h.status is Status.DOWN
    assert h.snapshot().reason == "waiting for 3 consecutive probe replies (0 so far)"
    feed(h, [1.0, 1.0], t0=12.0)
    assert h.status is Status.DOWN
    feed(h, [1.0], t0=14.0)
    assert (h.status, h.snapshot().since) == (Status.UP, 15.0)


def test_no_targets_follows_sa() -> None:
    h = TunnelHealth(now=0.0)
    s = h.snapshot()
    assert (s.status, s.reason, s.rtt_ms, s.drop_rate) == (
        Status.DOWN, "IKE SA not established", 0.0, 0.0)
    h.set_sa(True, 1.0)
    assert (h.status, h.snapshot().since, h.snapshot().reason) == (Status.UP, 1.0, "")
    h.set_sa(False, 2.0, reason="")
    assert (h.status, h.snapshot().reason) == (Status.DOWN, "IKE SA down")


def test_target_changes() -> None:
    h = TunnelHealth(now=0.0, sa_up=True)
    assert h.status is Status.UP
    h.add_target("a")  # keeps up until probes say otherwise
    assert h.status is Status.UP
    feed(h, [L, L])
    assert h.status is Status.UP
    feed(h, [L], t0=2.0)
    assert (h.status, h.snapshot().since) == (Status.DOWN, 3.0)
    h.remove_target("a", 4.0)  # last target gone: SA (up) decides, window reset
    s = h.snapshot()
    assert (s.status, s.since, s.samples, s.targets) == (Status.UP, 4.0, 0, 0)


def test_multiple_targets_are_rounds_and_jitter_is_per_target() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a", "b"])
    t = 0.0
    # a answers at 10 ms, b at 50 ms, interleaved: no jitter within a target
    for _ in range(3):
        t += 1
        h.record("a", 10.0, t)
        h.record("b", 50.0, t)
    s = h.snapshot()
    assert (s.samples, s.rtt_ms, s.jitter_ms, s.status) == (3, 30.0, 0.0, Status.UP)
    # b dies: a still answers every round, so no round is lost and the tunnel stays up
    for _ in range(10):
        t += 1
        h.record("a", 10.0, t)
        h.record("b", None, t)
    s = h.snapshot()
    assert (s.status, s.samples, s.drop_rate, s.consecutive_lost) == (Status.UP, 13, 0.0, 0)
    assert s.rtt_ms == pytest.approx((13 * 10.0 + 3 * 50.0) / 16)


def test_a_silent_target_does_not_keep_the_tunnel_down() -> None:
    """flexiAgent counts a round as a success when any of the peer's hosts answered: a
    monitor IP that never answers must not hold a working tunnel down."""
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a", "b"])
    for t in (1.0, 2.0):
        h.record("a", 10.0, t)
        h.record("b", None, t)
    assert h.status is Status.DOWN
    assert h.snapshot().reason == "waiting for 3 consecutive probe replies (2 so far)"
    h.record("b", None, 3.0)  # b's result of round 3 arrives first
    h.record("a", 10.0, 3.0)
    s = h.snapshot()
    assert (s.status, s.since, s.drop_rate, s.settled) == (Status.UP, 3.0, 0.0, True)


def test_three_silent_targets_of_four_do_not_take_it_down() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a", "b", "c", "d"])
    for t in range(1, 11):
        for target in ("b", "c", "d"):
            h.record(target, None, float(t))
        h.record("a", 20.0, float(t))
        assert h.status is Status.UP or t < 3
    assert h.snapshot().drop_rate == 0.0


def test_down_when_every_target_lost_its_last_probes() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a", "b"])
    for t in (1.0, 2.0, 3.0):
        h.record("a", 10.0, t)
        h.record("b", None, t)
    assert h.status is Status.UP
    for t in (4.0, 5.0):
        h.record("a", None, t)
        h.record("b", None, t)
    assert h.status is Status.UP  # a lost only two in a row
    h.record("b", 12.0, 6.0)  # b answers once: a path still works
    h.record("a", None, 6.0)
    assert h.status is Status.UP
    for t in (7.0, 8.0):
        h.record("a", None, t)
        h.record("b", None, t)
    assert h.status is Status.UP  # b's run is two
    h.record("a", None, 9.0)
    h.record("b", None, 9.0)
    s = h.snapshot()
    assert (s.status, s.since, s.consecutive_lost) == (Status.DOWN, 9.0, 3)
    assert s.reason == "3 consecutive probes lost by every target"
    # rounds 4, 5, 7, 8, 9 lost (in round 6 b answered): 5 of 9
    assert s.drop_rate == pytest.approx(100.0 * 5 / 9)


def test_removing_a_target_takes_its_window_with_it() -> None:
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a", "b"])
    for t in (1.0, 2.0, 3.0):
        h.record("a", 10.0, t)
        h.record("b", 30.0, t)
    h.remove_target("b", 4.0)
    s = h.snapshot()
    assert (s.status, s.rtt_ms, s.samples, s.targets) == (Status.UP, 10.0, 3, 1)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="window"):
        HealthConfig(window=0)
    with pytest.raises(ValueError, match="ewma_alpha"):
        HealthConfig(ewma_alpha=0.0)
    h = TunnelHealth(now=0.0)
    with pytest.raises(ValueError, match="rtt_ms"):
        h.record("a", -1.0, 1.0)


# -- alerts -------------------------------------------------------------------


def snap(rtt: float, drop: float, status: Status = Status.UP, targets: int = 1) -> HealthSnapshot:
    return HealthSnapshot(status=status, rtt_ms=rtt, jitter_ms=0.0, drop_rate=drop, ewma_ms=rtt,
                          samples=30, consecutive_ok=0, consecutive_lost=0, since=0.0, reason="",
                          sa_up=True, targets=targets)


def test_alert_needs_six_of_ten_and_clears_after_six_good() -> None:
    ev = AlertEvaluator()
    for _ in range(5):
        assert ev.evaluate({7: snap(350.0, 0.0)}) == {}
    out = ev.evaluate({7: snap(350.0, 0.0)})
    assert out == {RTT_EVENT: {"7": {"value": 350.0, "threshold": 300.0, "severity": "warning",
                                     "unit": "ms", "type": "tunnel"}}}
    for _ in range(5):
        assert ev.evaluate({7: snap(10.0, 0.0)}) != {}  # 5 good periods are not enough
    assert ev.evaluate({7: snap(10.0, 0.0)}) == {}


def test_alert_escalates_to_critical_and_steps_down() -> None:
    ev = AlertEvaluator()
    for _ in range(6):
        out = ev.evaluate({3: snap(1.0, 10.0)})
    assert out[DROP_EVENT]["3"]["severity"] == "warning"  # type: ignore[index]
    for _ in range(6):
        out = ev.evaluate({3: snap(1.0, 25.0)})
    assert out[DROP_EVENT]["3"] == {"value": 25.0, "threshold": 20.0, "severity": "critical",
                                    "unit": "%", "type": "tunnel"}
    # exactly at the warning threshold counts as warning (>=); critical clears to warning
    for _ in range(6):
        out = ev.evaluate({3: snap(1.0, 5.0)})
    assert out[DROP_EVENT]["3"]["severity"] == "warning"  # type: ignore[index]
    assert [a.severity for a in ev.active()] == [Severity.WARNING]


def test_alerts_skip_down_and_targetless_tunnels_and_forget_removed() -> None:
    ev = AlertEvaluator(AlertConfig(samples=2, raise_after=1, clear_after=1))
    assert ev.evaluate({1: snap(700.0, 100.0, status=Status.DOWN)}) == {}
    assert ev.evaluate({2: snap(700.0, 0.0, targets=0)}) == {}
    out = ev.evaluate({1: snap(700.0, 0.0)})
    assert out[RTT_EVENT]["1"]["severity"] == "critical"  # type: ignore[index]
    assert ev.evaluate({1: snap(700.0, 0.0, status=Status.DOWN)}) == out  # kept while down
    assert ev.evaluate({}) == {}  # tunnel removed


def test_alerts_hash_ignores_values() -> None:
    a = {RTT_EVENT: {"1": {"value": 350.0, "threshold": 300.0, "severity": "warning",
                           "unit": "ms", "type": "tunnel"}}}
    b = {RTT_EVENT: {"1": {"value": 399.0, "threshold": 300.0, "severity": "warning",
                           "unit": "ms", "type": "tunnel"}}}
    c = {RTT_EVENT: {"1": {"value": 399.0, "threshold": 600.0, "severity": "critical",
                           "unit": "ms", "type": "tunnel"}}}
    assert alerts_hash({}) == ""
    assert alerts_hash(a) == alerts_hash(b)
    assert alerts_hash(a) != alerts_hash(c)
    assert len(alerts_hash(a)) == 32


def test_alert_config_validation() -> None:
    with pytest.raises(ValueError, match="raise_after"):
        AlertConfig(raise_after=11)
    with pytest.raises(ValueError, match="warning thresholds"):
        AlertConfig(rtt_warning=700.0)


def test_down_is_a_verdict_only_once_proven_up_or_down_after_losses() -> None:
    """A restarted agent's first probes: "down" then means "not known yet" (settled
    False) until the tunnel was once up or lost down_after probes in a row."""
    h = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    assert not h.snapshot().settled
    feed(h, [10.0, 10.0, L, L])  # replies and losses, neither run long enough
    assert (h.status, h.snapshot().settled) == (Status.DOWN, False)
    feed(h, [L], t0=4.0)  # the third loss in a row
    assert (h.status, h.snapshot().settled) == (Status.DOWN, True)
    up = TunnelHealth(now=0.0, sa_up=True, targets=["a"])
    feed(up, [10.0, 10.0, 10.0, L, L])
    assert (up.status, up.snapshot().settled) == (Status.UP, True)
    feed(up, [L, 10.0], t0=5.0)  # down, then one reply: still a verdict
    assert (up.status, up.snapshot().settled) == (Status.DOWN, True)
    # without targets the SA is the verdict
    assert TunnelHealth(now=0.0, sa_up=False).snapshot().settled
