"""peerctl: the operator's CLI for the peering agent, vppctl-style.

    peerctl show peers
    peerctl show ikev2 sa [details]          peerctl show ikev2 profile
    peerctl show jobs [N]                    peerctl show vpp
    peerctl show event-logger                peerctl event-logger clear
    peerctl show logging
    peerctl ikev2 set logging level <0-5>    peerctl vpp <vppctl show command>
    peerctl vpp <any vppctl command> --force (changes VPP behind the agent's back)
    peerctl log level [debug|info|warning|error]
    peerctl peer export <tunnel-id> [--format swanctl|text]

Options anywhere: --json (machine-readable), --show-secrets (PSKs and keys in
clear; they are masked by the agent otherwise), --config FILE (the agent's
configuration, for the admin socket path), --socket PATH, --timeout SECONDS.
Errors are one line on stderr and a non-zero exit status (1: the agent failed
or is unreachable, 2: usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.admin import protocol as proto
from agent.admin.client import AdminRequestError, AdminUnavailable, call
from agent.admin.export import FORMATS
from agent.admin.policies import render_policies
from agent.admin.render import render_jobs, render_peers, render_vpp
from agent.config import AdminConfig, ConfigError, load_config
from agent.routing.status import format_table

DEFAULT_CONFIG = Path("/etc/peering-agent/agent.toml")
SOCKET_ENV = "PEERING_AGENT_ADMIN__SOCKET"
LOG_LEVELS = ("debug", "info", "warning", "error")

USAGE_LINES = (
    "show peers",
    "show ikev2 sa [details]",
    "show ikev2 profile",
    "show jobs [N]",
    "show vpp",
    "show policies",
    "show routing",
    "show logging",
    "show event-logger",
    "event-logger clear",
    "ikev2 set logging level <0-5>",
    "vpp <vppctl command>",
    "log level [debug|info|warning|error]",
    "peer export <tunnel-id> [--format swanctl|text]",
)


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any]
    kind: str  # how to render the answer: peers | jobs | vpp | text | level


def build_request(words: Sequence[str], *, fmt: str | None = None,
                  show_secrets: bool = False, force: bool = False) -> Request:
    """Map the command words to one admin request (pure, for tests)."""
    w = list(words)
    if w and w[0] == "sh":
        w[0] = "show"
    if fmt is not None and w[:2] != ["peer", "export"]:
        raise UsageError("--format only applies to 'peer export'")

    def vpp(command: str) -> Request:
        args = {"command": command, "show_secrets": show_secrets}
        return Request(proto.VPP, args | {"force": True} if force else args, "text")

    if w == ["show", "peers"]:
        return Request(proto.SHOW_PEERS, {}, "peers")
    if w[:3] == ["show", "ikev2", "sa"]:
        return vpp(" ".join(w))
    if w == ["show", "ikev2", "profile"]:
        return vpp("show ikev2 profile")
    if w[:2] == ["show", "jobs"] and len(w) <= 3:
        args: dict[str, Any] = {}
        if len(w) == 3:
            if not w[2].isdigit() or int(w[2]) < 1:
                raise UsageError(f"show jobs: {w[2]!r} is not a positive number of jobs")
            args["limit"] = int(w[2])
        return Request(proto.SHOW_JOBS, args, "jobs")
    if w == ["show", "vpp"]:
        return Request(proto.SHOW_VPP, {}, "vpp")
    if w == ["show", "policies"]:
        return Request(proto.SHOW_POLICIES, {}, "policies")
    if w == ["show", "routing"]:
        return Request(proto.SHOW_ROUTING, {}, "routing")
    if w[:2] == ["show", "event-logger"]:
        return vpp(" ".join(w))
    if w == ["event-logger", "clear"]:
        return vpp("event-logger clear")
    if w[:4] == ["ikev2", "set", "logging", "level"]:
        if len(w) != 5 or not w[4].isdigit() or int(w[4]) > 5:
            raise UsageError("ikev2 set logging level: expected a level from 0 to 5")
        return vpp(" ".join(w))  # the daemon translates it for VPP 26.06 and says so
    if w == ["show", "logging"]:
        return vpp("show logging")
    if w[:1] == ["vpp"]:
        if len(w) == 1:
            raise UsageError("vpp: expected a vppctl command, e.g. 'vpp show interface'")
        return vpp(" ".join(w[1:]))
    if w[:2] == ["log", "level"] and len(w) <= 3:
        level = w[2].lower() if len(w) == 3 else None
        if level is not None and level not in LOG_LEVELS:
            raise UsageError(f"log level {w[2]!r}: expected one of {', '.join(LOG_LEVELS)}")
        return Request(proto.LOG_LEVEL, {"level": level}, "level")
    if w[:2] == ["peer", "export"]:
        if len(w) != 3 or not w[2].isdigit():
            raise UsageError("peer export: expected a tunnel id, e.g. 'peer export 7'")
        f = fmt or "swanctl"
        if f not in FORMATS:
            raise UsageError(f"--format {f!r}: expected one of {', '.join(FORMATS)}")
        return Request(proto.PEER_EXPORT, {"tunnel_id": int(w[2]), "format": f,
                                           "show_secrets": show_secrets}, "text")
    shown = " ".join(words) or "(none)"
    raise UsageError(f"unknown command '{shown}'; commands: {'; '.join(USAGE_LINES)}")


def resolve_socket(socket_opt: str | None, config_opt: str | None,
                   env: dict[str, str] | None = None) -> str:
    """The admin socket path: --socket, else the agent's configuration file."""
    if socket_opt:
        return socket_opt
    environ = dict(os.environ) if env is None else env
    path = Path(config_opt) if config_opt else DEFAULT_CONFIG
    if not path.exists():
        if config_opt:
            raise UsageError(f"configuration file {path} does not exist")
        return environ.get(SOCKET_ENV) or str(AdminConfig().socket)
    try:
        return str(load_config(path, environ).admin.socket)
    except ConfigError:
        pass
    # The daemon would refuse this file, but the admin socket may still be named in it
    # (e.g. a controller setting that only matters to the daemon is wrong).
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read the admin socket from {path}: {e}") from None
    admin = data.get("admin")
    value = environ.get(SOCKET_ENV) or (admin.get("socket") if isinstance(admin, dict) else None)
    if value is None:
        return str(AdminConfig().socket)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{path}: admin.socket must be a path")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peerctl", description="Operator CLI for the peering agent.",
        epilog="commands: " + "; ".join(USAGE_LINES))
    p.add_argument("words", nargs="*", help="the command")
    p.add_argument("--config", help=f"agent configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--socket", help="admin socket path (overrides the configuration)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.add_argument("--show-secrets", action="store_true",
                   help="show PSKs and keys instead of masking them")
    p.add_argument("--force", action="store_true",
                   help="let 'vpp <command>' change VPP (read-only 'show' commands otherwise)")
    p.add_argument("--format", choices=FORMATS, help="peer export format (default swanctl)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the agent")
    return p


def render(req: Request, data: Any) -> str:
    if req.kind == "peers":
        return render_peers(data)
    if req.kind == "jobs":
        return render_jobs(data)
    if req.kind == "vpp":
        return render_vpp(data)
    if req.kind == "policies":
        return render_policies(data, time.time())
    if req.kind == "routing":
        return format_table(data)
    if req.kind == "level":
        return f"log level {data['level']}\n"
    text = str(data)
    return text if not text or text.endswith("\n") else text + "\n"


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        args = _parser().parse_intermixed_args(argv)
    except SystemExit as e:  # argparse printed its own message
        return int(e.code or 0)
    try:
        req = build_request(args.words, fmt=args.format, show_secrets=args.show_secrets,
                            force=args.force)
        socket_path = resolve_socket(args.socket, args.config)
    except UsageError as e:
        print(f"peerctl: {e}", file=err)
        return 2
    try:
        data = asyncio.run(call(socket_path, req.cmd, req.args, timeout=args.timeout))
    except (AdminUnavailable, AdminRequestError) as e:
        print(f"peerctl: {e}", file=err)
        return 1
    if args.json:
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(render(req, data))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
