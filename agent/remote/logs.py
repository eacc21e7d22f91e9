"""The Logs tab's `get-device-logs`, decided without I/O: which source, how many lines.

flexiagent maps each filter to a log file and answers `tail -<lines> <file>` as a
list of lines, `[]` when the file is missing; `all` maps to no file, so `[]`
(flexiagent fwagent_api.py `_get_device_logs`). This device keeps flexiagent's
files where they exist and otherwise reads the systemd journal, because a Debian
box without rsyslog, or a VPP run by systemd, logs only there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_LINES = 100
MAX_LINES = 10_000


@dataclass(frozen=True)
class LogSource:
    """A log: the file when it exists, else the journal (of `unit`, or all of it when "")."""

    file: Path | None
    unit: str | None  # None: no journal fallback


# flexiagent's files (fwglobals.py) and the units that log the same when the file is absent.
def default_sources(agent_log: str = "") -> dict[str, LogSource]:
    return {
        "fwagent": LogSource(Path(agent_log) if agent_log else None, "peering-agent"),
        "syslog": LogSource(Path("/var/log/syslog"), ""),
        "vpp": LogSource(Path("/var/log/vpp/vpp.log"), "vpp"),
        "ospf": LogSource(Path("/var/log/frr/ospfd.log"), "frr"),
    }


# flexiagent's filters for parts this device does not run: no file there, so `[]`.
ABSENT_FILTERS = frozenset({"all", "dhcp", "hostapd", "agentui", "application_ids",
                            "application"})
_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class LogsRefused(Exception):
    """The request is malformed; the message is safe to send back."""


@dataclass(frozen=True)
class LogsRequest:
    filter: str
    lines: int
    source: LogSource | None  # None: answer []


def parse_logs_request(params: Any, sources: Mapping[str, LogSource]) -> LogsRequest:
    """`{lines, filter}` (lines a number or its text, as flexiManage sends "100")."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise LogsRefused("get-device-logs: params must be an object {lines, filter}")
    raw_lines = params.get("lines", DEFAULT_LINES)
    if isinstance(raw_lines, str) and raw_lines.strip().isdigit():
        raw_lines = int(raw_lines.strip())
    if isinstance(raw_lines, bool) or not isinstance(raw_lines, int) or raw_lines < 1:
        raise LogsRefused(f"get-device-logs: lines must be a whole number from 1 to {MAX_LINES}")
    lines = min(raw_lines, MAX_LINES)
    flt = params.get("filter", "all")
    if not isinstance(flt, str):
        raise LogsRefused("get-device-logs: filter must be a string")
    if flt in sources:
        return LogsRequest(flt, lines, sources[flt])
    if flt in ABSENT_FILTERS:
        return LogsRequest(flt, lines, None)
    shown = f"'{flt}'" if _WORD.match(flt) else "given"
    raise LogsRefused(
        f"get-device-logs: unknown filter {shown}; this device has {', '.join(sorted(sources))} "
        f"(and answers [] for {', '.join(sorted(ABSENT_FILTERS))})")


def tail_lines(data: bytes, n: int) -> list[str]:
    """The last `n` lines of `data` (a file's tail), decoded leniently."""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    return lines[-n:] if n > 0 else []


def journal_argv(unit: str, lines: int, program: str = "journalctl") -> list[str]:
    """journalctl for the last `lines` entries of `unit` ("" for the whole journal)."""
    argv = [program, "--no-pager", "-q", "-o", "short-iso", "-n", str(lines)]
    return argv + (["-u", unit] if unit else [])
