"""`peerctl show policies`: each multilink rule, its classification, the link it
uses now and why (pure; from PolicyManager.status())."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.admin.render import NONE, fmt_duration, render_table

POLICY_HEADERS = ("PRIO", "RULE", "CLASSIFICATION", "GROUPS", "FALLBACK", "NOW", "SINCE", "WHY")


def _groups(rule: Mapping[str, Any]) -> str:
    sep = " > " if rule.get("group_order") == "priority" else " + "
    return sep.join(f"{','.join(g['labels'])} ({g['order']})" for g in rule.get("groups", []))


def render_policies(status: Mapping[str, Any], now: float) -> str:
    if status.get("policy_id") is None:
        return "no multilink policy installed\n"
    rules = status.get("rules") or []
    lan = ", ".join(status.get("lan_interfaces") or []) or "none (rules attach nowhere)"
    head = (f"policy {status['policy_id']}: {len(rules)} rules; LAN {lan}; "
            f"re-programmed {status.get('reprogrammings', 0)} times"
            f" ({status.get('reprogram_failures', 0)} failed)\n")
    if status.get("last_error"):
        head += f"last error: {status['last_error']}\n"
    rows = []
    for r in rules:
        flags = " +wan-rx" if r.get("apply_on_wan_rx") else ""
        since = r.get("since")
        rows.append([str(r["priority"]), str(r["rule"]), str(r["classification"]) + flags,
                     _groups(r), str(r["fallback"]), str(r["chosen"]),
                     fmt_duration(now - since) if since is not None else NONE,
                     str(r.get("why") or NONE)])
    return head + render_table(POLICY_HEADERS, rows)
