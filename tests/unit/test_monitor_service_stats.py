"""Stats entry builders and host health parsing."""

from __future__ import annotations

from pathlib import Path

from agent.monitor.health import HealthSnapshot, Status
from agent.monitor.stats import (
    CpuTimes,
    HostHealth,
    cpu_percent,
    mem_percent,
    parse_proc_stat,
    stats_entry,
    tunnel_stats_entry,
)

PROC_STAT_1 = """cpu  300 0 100 1500 100 0 0 0 0 0
cpu0 100 0 50 800 50 0 0 0 0 0
cpu1 200 0 50 700 50 0 0 0 40 0
intr 1 2 3
"""
PROC_STAT_2 = """cpu  0 0 0 0 0 0 0 0 0 0
cpu0 150 0 50 850 50 0 0 0 0 0
cpu1 290 0 50 710 50 0 0 0 60 0
"""
MEMINFO = """MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    6000000 kB
"""


def snap(status: Status, rtt: float, drop: float, jitter: float) -> HealthSnapshot:
    return HealthSnapshot(status, rtt, jitter, drop, None, 10, 0, 0, 0.0, "", True, 1)


def test_tunnel_stats_are_rounded_and_keyed_by_tunnel_number() -> None:
    entry = stats_entry(
        period=10.0, utc=5.5,
        tunnels={12: snap(Status.DOWN, 0.0, 100.0, 0.0),
                 7: snap(Status.UP, 23.45678, 3.33333, 1.0)},
        health={"cpu": [1.0], "mem": 2.0, "disk": 3.0}, alerts={})
    assert list(entry["tunnel_stats"]) == ["7", "12"]
    assert entry["tunnel_stats"]["7"] == {"status": "up", "rtt": 23.457, "drop_rate": 3.333,
                                          "jitter": 1.0}
    assert tunnel_stats_entry(snap(Status.DOWN, 0.0, 100.0, 0.0))["status"] == "down"
    assert (entry["ok"], entry["running"], entry["state"], entry["period"], entry["utc"]) == (
        1, True, "running", 10.0, 5.5)
    assert entry["alerts"] == {} and entry["alerts_hash"] == ""


def test_proc_stat_per_cpu_busy_share_between_samples() -> None:
    first, second = parse_proc_stat(PROC_STAT_1), parse_proc_stat(PROC_STAT_2)
    # guest (9th column) is already part of user time and is not added again
    assert first == [CpuTimes(150, 1000), CpuTimes(250, 1000)]
    # cpu0: +50 busy of +100; cpu1: +90 busy of +100
    assert cpu_percent(first, second) == [50.0, 90.0]
    assert cpu_percent(second, second) == [0.0, 0.0]  # no ticks in between


def test_meminfo_used_share() -> None:
    assert mem_percent(MEMINFO) == 25.0
    assert mem_percent("MemTotal: 100 kB\n") == 0.0  # no MemAvailable: unknown, not 100 %


def test_host_health_measures_cpu_since_the_previous_sample(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text(PROC_STAT_1)
    (tmp_path / "meminfo").write_text(MEMINFO)
    host = HostHealth(proc=tmp_path, disk=tmp_path)
    assert host.sample()["cpu"] == [15.0, 25.0]  # since boot the first time
    (tmp_path / "stat").write_text(PROC_STAT_2)
    sample = host.sample()
    assert sample["cpu"] == [50.0, 90.0] and sample["mem"] == 25.0
    assert 0.0 < sample["disk"] <= 100.0


def test_host_health_without_proc_reports_zeros(tmp_path: Path) -> None:
    assert HostHealth(proc=tmp_path / "absent", disk=tmp_path).sample()["cpu"] == []
    assert HostHealth(proc=tmp_path / "absent", disk=tmp_path).sample()["mem"] == 0.0
