"""Device-side alerts from the controller's notification configuration (reference 11.2)."""

from __future__ import annotations

from typing import Any

from agent.monitor.alerts import DeviceAlerts, TunnelSample, alerts_hash

RTT = "Link/Tunnel round trip time"
DROP = "Link/Tunnel default drop rate"
RULES: dict[str, Any] = {
    RTT: {"warningThreshold": 300, "criticalThreshold": 600, "thresholdUnit": "ms",
          "type": "tunnel"},
    DROP: {"warningThreshold": 5, "criticalThreshold": 20, "thresholdUnit": "%",
           "type": "tunnel"},
    "Device memory usage": {"warningThreshold": 85, "criticalThreshold": 95,
                            "thresholdUnit": "%", "type": "device"},
}


def feed(alerts: DeviceAlerts, rtt: float, n: int, *, rules: dict[str, Any] = RULES,
         settings: dict[int, Any] | None = None, status: str = "up",
         mem: float = 10.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(n):
        out = alerts.evaluate(rules, settings or {}, {7: TunnelSample(status, rtt, 0.0)},
                              {"mem": mem, "cpu": [1.0]})
    return out


def test_no_configuration_no_alerts() -> None:
    a = DeviceAlerts()
    assert feed(a, 900, 20, rules={}) == {}
    assert alerts_hash({}) == ""


def test_raise_takes_six_samples_and_clear_takes_six_ok() -> None:
    a = DeviceAlerts()
    assert feed(a, 400, 5) == {}
    out = feed(a, 400, 1)
    assert out == {RTT: {"7": {"value": 400, "threshold": 300, "severity": "warning",
                               "unit": "ms", "type": "tunnel"}}}
    assert feed(a, 100, 5) != {}  # 5 ok samples are not enough
    assert feed(a, 100, 1) == {}


def test_critical_upgrade_and_step_down() -> None:
    a = DeviceAlerts()
    feed(a, 700, 6)
    assert feed(a, 700, 1)[RTT]["7"]["severity"] == "critical"
    # 6 warnings among the last 10 with fewer than 6 criticals: down to warning
    out = feed(a, 400, 5)
    assert out[RTT]["7"]["severity"] == "warning"


def test_per_tunnel_thresholds_replace_the_org_rule_unit_stays() -> None:
    a = DeviceAlerts()
    own = {7: {RTT: {"warningThreshold": 50, "criticalThreshold": 100, "thresholdUnit": "x"}}}
    out = feed(a, 120, 6, settings=own)
    assert out[RTT]["7"]["severity"] == "critical"
    assert (out[RTT]["7"]["threshold"], out[RTT]["7"]["unit"]) == (100, "ms")


def test_down_tunnels_are_skipped_and_removed_tunnels_forgotten() -> None:
    a = DeviceAlerts()
    assert feed(a, 900, 10, status="down") == {}
    feed(a, 900, 6)
    assert a.evaluate(RULES, {}, {}, {"mem": 1.0}) == {}


def test_device_events_and_hash_tracks_the_alert_set() -> None:
    a = DeviceAlerts()
    out = feed(a, 10, 6, mem=90)
    assert out == {"Device memory usage": {"value": 90, "threshold": 85,
                                           "severity": "warning", "unit": "%",
                                           "type": "device"}}
    h = alerts_hash(out)
    assert h and alerts_hash(feed(a, 10, 1, mem=91)) == h  # value changes: same hash
    assert alerts_hash(feed(a, 10, 6, mem=99)) != h  # severity changes: new hash


def test_tunnels_whose_wan_is_down_are_skipped() -> None:
    a = DeviceAlerts()
    for _ in range(10):
        out = a.evaluate(RULES, {}, {7: TunnelSample("up", 900, 0.0, wan_ok=False)}, {})
    assert out == {}
