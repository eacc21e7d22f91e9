"""The Routes tab's `get-device-os-routes`, from `ip -j -4 route show table all` (pure).

flexiagent answers the IPv4 routes of the tables below 255 (main, default and
numbered ones; not `local`), one entry per next hop:
`{destination: "a.b.c.d/len", gateway: <ip or null>, metric: int, interface, protocol}`
(flexiagent fwroutes.py FwLinuxRoutes, fwagent_api.py `_get_device_os_routes`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

ROUTES_ARGV = ("ip", "-j", "-4", "route", "show", "table", "all")
_TABLES = {"main": 254, "default": 253, "local": 255}


def _table_id(value: Any) -> int:
    if value is None:
        return 254  # ip prints no table for main
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    return _TABLES.get(text, 0)  # a name from rt_tables: an ordinary table


def _destination(dst: Any) -> str | None:
    if dst in (None, "default"):
        return "0.0.0.0/0"
    try:
        return str(ipaddress.IPv4Network(str(dst), strict=False))
    except ValueError:
        return None


def routes_from_ip_json(routes: Any) -> list[dict[str, Any]]:
    """flexiagent's entries from iproute2's JSON list; unknown shapes are skipped."""
    out: list[dict[str, Any]] = []
    if not isinstance(routes, list):
        return out
    for r in routes:
        if not isinstance(r, dict) or _table_id(r.get("table")) >= 255:
            continue
        dest = _destination(r.get("dst"))
        if dest is None:
            continue
        metric = r.get("metric", 0)
        # iproute2 prints no protocol for boot (flexiagent names it) and no dev for a
        # blackhole; flexiManage's schema wants strings
        base = {"destination": dest, "metric": int(metric) if isinstance(metric, int) else 0,
                "protocol": str(r.get("protocol", "boot"))}
        hops = r.get("nexthops") if isinstance(r.get("nexthops"), list) else None
        for hop in hops or [r]:
            if not isinstance(hop, dict):
                continue
            out.append({"destination": base["destination"], "gateway": hop.get("gateway"),
                        "metric": base["metric"],
                        "interface": hop.get("dev", r.get("dev")) or "",
                        "protocol": base["protocol"]})
    return out
