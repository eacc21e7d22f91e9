"""Aligned text tables for peerctl, from the JSON the admin socket returns (pure)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from agent.vpp.messages import OPTIONAL

NONE = "-"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def fmt_duration(seconds: float | None) -> str:
    """1d02h03m, 2h03m04s, 3m04s, 5s; '-' when unknown."""
    if seconds is None or seconds < 0:
        return NONE
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{s:02d}s"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}ms"


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}%"


PEER_HEADERS = ("ID", "NAME", "REMOTE", "IKE", "CHILD", "SPIS", "UPTIME", "RTT", "JITTER",
                "DROP", "STATUS", "REASON")


def render_peers(peers: Sequence[Mapping[str, Any]]) -> str:
    if not peers:
        return "no peers configured\n"
    rows = [
        [
            str(p["tunnel_id"]),
            str(p["name"]),
            str(p["remote"]),
            str(p.get("ike_state") or NONE),
            str(p.get("child_sas", 0)),
            str(p.get("spis") or NONE),
            fmt_duration(p.get("uptime")),
            _ms(p.get("rtt_ms")),
            _ms(p.get("jitter_ms")),
            _pct(p.get("drop_rate")),
            str(p["status"]),
            str(p.get("reason") or ""),
        ]
        for p in peers
    ]
    return render_table(PEER_HEADERS, rows)


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return NONE
    t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return " ".join(text.split())


def render_jobs(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return "no jobs recorded\n"
    rows = [
        [
            str(j.get("jobid", NONE)),
            str(j.get("message", NONE)),
            "ok" if j.get("ok") else "failed",
            _when(j.get("recorded_at")),
            _one_line(j.get("reply", "")),
        ]
        for j in jobs
    ]
    return render_table(("JOB", "MESSAGE", "RESULT", "WHEN (UTC)", "REPLY"), rows)


def render_vpp(s: Mapping[str, Any]) -> str:
    out = [
        f"VPP version {s['version']} (built {s['build_date']})",
        f"ikev2 plugin {s.get('ikev2_plugin') or 'absent'}; "
        f"profiles {s.get('profiles', 0)}, IKE SAs {s.get('sas', 0)}",
        "",
    ]
    rows = []
    for info, addrs in s.get("interfaces", []):
        rows.append([str(info["sw_if_index"]), str(info["name"]),
                     "up" if info["admin_up"] else "down", str(info["mtu"]),
                     " ".join(addrs) or NONE])
    out.append(render_table(("IDX", "INTERFACE", "STATE", "MTU", "ADDRESSES"), rows).rstrip("\n"))
    missing = s.get("missing") or {}
    if missing:
        out.append("missing capabilities (the agent needs these):")
        out += [f"  {problem}" for problem in missing.values()]
    else:
        out.append("all messages the agent needs are present")
    optional = list(s.get("optional_present") or [])
    absent = [name for name in OPTIONAL if name not in optional]
    out.append(f"optional capabilities found: {', '.join(optional) or 'none'}")
    out.append(f"optional capabilities absent: {', '.join(absent) or 'none'}")
    return "\n".join(out) + "\n"
