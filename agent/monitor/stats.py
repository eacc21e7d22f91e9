"""get-device-stats entries: the controller's layout, built from health snapshots.

The builders are pure (values in, dict out) so the wire shape is testable to
the byte; `HostHealth` is the one part that reads the host (/proc, the root
file system) and keeps the previous CPU sample so CPU load is measured over the
time between two entries instead of since boot.

rx/tx counters (``rx_bytes``/``tx_pkts`` per tunnel and per ``dev_id``) are left
out on purpose: VPP 26.06 serves interface counters only through its stats
segment; its binary API (the only VPP interface this agent uses) has none for
interfaces, IPsec SAs or ipip tunnels (``ipsec_sa_details`` carries only a
``stat_index`` into that segment). The controller treats missing counters as
absent, and reporting zeros would claim an idle tunnel.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.monitor.alerts import alerts_hash
from agent.monitor.health import HealthSnapshot


def tunnel_stats_entry(snap: HealthSnapshot) -> dict[str, Any]:
    """One ``tunnel_stats`` value: status, rtt (ms), drop_rate (%), jitter (ms)."""
    return {
        "status": snap.status.value,
        "rtt": round(snap.rtt_ms, 3),
        "drop_rate": round(snap.drop_rate, 3),
        "jitter": round(snap.jitter_ms, 3),
    }


def stats_entry(
    *,
    period: float,
    utc: float,
    tunnels: Mapping[int, HealthSnapshot],
    health: Mapping[str, Any],
    alerts: Mapping[str, Any],
) -> dict[str, Any]:
    """One element of the get-device-stats reply list, as the controller reads it."""
    return {
        "ok": 1,
        "running": True,
        "state": "running",
        "stateReason": "",
        "period": period,
        "utc": utc,
        "stats": {},
        "tunnel_stats": {str(tid): tunnel_stats_entry(tunnels[tid]) for tid in sorted(tunnels)},
        "health": dict(health),
        "alerts": {event: dict(per_event) for event, per_event in alerts.items()},
        "alerts_hash": alerts_hash(alerts),
    }


# -- host health ------------------------------------------------------------------


@dataclass(frozen=True)
class CpuTimes:
    busy: int  # jiffies spent doing anything but idle/iowait
    total: int


def parse_proc_stat(text: str) -> list[CpuTimes]:
    """Per-CPU times from /proc/stat (the ``cpuN`` lines, not the ``cpu`` total)."""
    out: list[CpuTimes] = []
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in rest.split()]
        # user nice system idle iowait irq softirq steal [guest guest_nice]:
        # guest time is already counted in user/nice, so only the first 8 add up
        fields = values[:8]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields)
        out.append(CpuTimes(total - idle, total))
    return out


def cpu_percent(previous: Sequence[CpuTimes], current: Sequence[CpuTimes]) -> list[float]:
    """Busy share per CPU between two samples, in percent (0.0 for a CPU with no ticks)."""
    out: list[float] = []
    for i, cur in enumerate(current):
        prev = previous[i] if i < len(previous) else CpuTimes(0, 0)
        total = cur.total - prev.total
        busy = cur.busy - prev.busy
        out.append(round(min(100.0, max(0.0, 100.0 * busy / total)), 1) if total > 0 else 0.0)
    return out


def mem_percent(meminfo: str) -> float:
    """Used memory in percent from /proc/meminfo (MemTotal - MemAvailable)."""
    values: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, sep, rest = line.partition(":")
        if sep and rest.split():
            values[key] = int(rest.split()[0])
    total = values.get("MemTotal", 0)
    if total <= 0 or "MemAvailable" not in values:
        return 0.0
    return round(100.0 * (total - values["MemAvailable"]) / total, 1)


class HostHealth:
    """The ``health`` part of a stats entry: cpu per core, mem and disk in percent."""

    def __init__(self, proc: Path = Path("/proc"), disk: Path = Path("/")) -> None:
        self._proc = proc
        self._disk = disk
        self._cpu: list[CpuTimes] = []

    def sample(self) -> dict[str, Any]:
        """Measure now; CPU is the load since the previous sample (since boot the first time)."""
        try:
            current = parse_proc_stat((self._proc / "stat").read_text())
        except (OSError, ValueError):
            current = []
        cpu = cpu_percent(self._cpu, current)
        self._cpu = current
        try:
            mem = mem_percent((self._proc / "meminfo").read_text())
        except (OSError, ValueError):
            mem = 0.0
        try:
            usage = shutil.disk_usage(self._disk)
            disk = round(100.0 * usage.used / usage.total, 1) if usage.total else 0.0
        except OSError:
            disk = 0.0
        return {"cpu": cpu, "mem": mem, "disk": disk}


def utc_now() -> float:
    return time.time()
