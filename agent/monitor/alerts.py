"""Device-side alerts as flexiagent 6.3 raises them (protocol reference 11.2). Pure.

Thresholds come from the controller: the org rules of `add-notifications-config`
and, for tunnel events, the tunnel's `notificationsSettings` (its thresholds
replace the org rule's, the unit stays the org rule's). Without rules there are
no alerts (``{}``). Per event (and per tunnel) a window of the last 10 samples,
initially all ok, decides:

* raise or upgrade to critical when >= 6 samples are critical;
* raise or change to warning when >= 6 are warning or critical and the critical
  condition does not hold (this also steps a critical down to warning);
* clear, only when the current sample is not critical: a warning at >= 6 ok
  samples, a critical at >= 6 ok-or-warning samples.

Tunnels are skipped while the router is not running, while the tunnel is down,
or while its WAN has no address or link; removed tunnels lose their alerts.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TUNNEL_EVENTS = ("Link/Tunnel round trip time", "Link/Tunnel default drop rate")
MEMORY, DISK, TEMPERATURE = "Device memory usage", "Hard drive usage", "Temperature"
WINDOW = 10
RAISE = CLEAR = 6
OK, WARNING, CRITICAL = "ok", "warning", "critical"


@dataclass
class _Track:
    window: deque[str] = field(default_factory=lambda: deque([OK] * WINDOW, maxlen=WINDOW))
    severity: str | None = None  # None: no alert
    value: float = 0.0
    threshold: float = 0.0


@dataclass(frozen=True)
class TunnelSample:
    status: str  # up | down
    rtt: float
    drop_rate: float
    wan_ok: bool = True  # the tunnel's WAN has an address and link


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _classify(value: float, warning: float | None, critical: float | None) -> str:
    if critical and value >= critical:
        return CRITICAL
    if warning and value >= warning:
        return WARNING
    return OK


class DeviceAlerts:
    """Feed one sample per stats period with `evaluate`; it returns the wire `alerts`."""

    def __init__(self) -> None:
        self._tracks: dict[tuple[str, int | None], _Track] = {}

    def evaluate(
        self,
        rules: Mapping[str, Any],
        tunnel_settings: Mapping[int, Mapping[str, Any]],
        tunnels: Mapping[int, TunnelSample],
        health: Mapping[str, Any],
        *,
        router_running: bool = True,
    ) -> dict[str, Any]:
        if not rules:
            self._tracks.clear()
            return {}
        for key in [k for k in self._tracks if k[1] is not None and k[1] not in tunnels]:
            del self._tracks[key]  # the tunnel is gone: so are its alerts
        for event in TUNNEL_EVENTS:
            rule = rules.get(event)
            if not isinstance(rule, Mapping) or not router_running:
                continue
            for tid, sample in tunnels.items():
                if sample.status != "up" or not sample.wan_ok:
                    continue
                own = tunnel_settings.get(tid, {}).get(event)
                source = own if isinstance(own, Mapping) else rule
                value = sample.rtt if event == TUNNEL_EVENTS[0] else sample.drop_rate
                self._feed((event, tid), value, _number(source.get("warningThreshold")),
                           _number(source.get("criticalThreshold")))
        for device_event, metric in ((MEMORY, "mem"), (DISK, "disk")):
            device_rule = rules.get(device_event)
            measured = _number(health.get(metric))
            if isinstance(device_rule, Mapping) and measured is not None:
                self._feed((device_event, None), measured,
                           _number(device_rule.get("warningThreshold")),
                           _number(device_rule.get("criticalThreshold")))
        temp = health.get("temp")
        if isinstance(rules.get(TEMPERATURE), Mapping) and isinstance(temp, Mapping):
            degrees, high, critical = (_number(temp.get(k))
                                       for k in ("value", "high", "critical"))
            if degrees is not None:
                # the sensor's own limits: high is the warning unless it equals critical
                self._feed((TEMPERATURE, None), degrees, None if high == critical else high,
                           critical)
        return self.wire(rules)

    def _feed(self, key: tuple[str, int | None], value: float, warning: float | None,
              critical: float | None) -> None:
        track = self._tracks.setdefault(key, _Track())
        current = _classify(value, warning, critical)
        track.window.append(current)
        crit = sum(1 for s in track.window if s == CRITICAL)
        warn = sum(1 for s in track.window if s == WARNING)
        ok = WINDOW - crit - warn
        if crit >= RAISE and track.severity != CRITICAL:
            track.severity = CRITICAL
        elif warn + crit >= RAISE and crit < RAISE and track.severity != WARNING:
            track.severity = WARNING
        elif current != CRITICAL and (
                (track.severity == WARNING and ok >= CLEAR)
                or (track.severity == CRITICAL and ok + warn >= CLEAR)):
            track.severity = None
        if track.severity is not None:
            track.value = value
            track.threshold = (critical if track.severity == CRITICAL else warning) or 0.0

    def wire(self, rules: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (event, tid), track in sorted(self._tracks.items(),
                                          key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            if track.severity is None:
                continue
            rule = rules.get(event)
            unit = rule.get("thresholdUnit", "") if isinstance(rule, Mapping) else ""
            entry = {"value": round(track.value, 3), "threshold": track.threshold,
                     "severity": track.severity, "unit": unit,
                     "type": "tunnel" if tid is not None else "device"}
            if tid is None:
                out[event] = entry
            else:
                out.setdefault(event, {})[str(tid)] = entry
        return out


def alerts_hash(alerts: Mapping[str, Any]) -> str:
    """md5 of the alerts without value/threshold, keys sorted; '' without alerts: it
    changes exactly when the set of (event, tunnel, severity) changes."""
    if not alerts:
        return ""

    def strip(entry: Any) -> Any:
        if isinstance(entry, Mapping) and "severity" in entry:
            return {k: v for k, v in entry.items() if k not in ("value", "threshold")}
        if isinstance(entry, Mapping):
            return {k: strip(v) for k, v in entry.items()}
        return entry

    blob = json.dumps(strip(alerts), sort_keys=True).encode()
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()
