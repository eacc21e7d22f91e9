"""The admin socket's wire format: one JSON object per line each way.

Request:  {"cmd": "show peers", "args": {...}}
Response: {"ok": true, "data": ...} or {"ok": false, "error": "one clear line"}

Commands (args):
  show peers                                      -> [PeerView as object, ...]
  show jobs     {"limit": int}                    -> [{"jobid", "message", "ok", ...}, ...]
  show vpp                                        -> VppSummary as object
  vpp           {"command": str, "show_secrets": bool}          -> CLI output text
  log level     {"level": str | null}             -> {"level": str}
  peer export   {"tunnel_id": int, "format": "swanctl"|"text", "show_secrets": bool} -> text
  show policies                                   -> PolicyManager.status()
  show routing                                    -> [RoutingManager.peer_status() row, ...]
"""

from __future__ import annotations

import json
from typing import Any

MAX_REQUEST = 64 * 1024  # bytes per request line
MAX_RESPONSE = 64 * 1024 * 1024  # what peerctl accepts (show ikev2 sa details of many SAs)
MAX_CLI_COMMAND = 1024

SHOW_PEERS = "show peers"
SHOW_JOBS = "show jobs"
SHOW_VPP = "show vpp"
VPP = "vpp"
LOG_LEVEL = "log level"
PEER_EXPORT = "peer export"
SHOW_POLICIES = "show policies"
SHOW_ROUTING = "show routing"
COMMANDS = (SHOW_PEERS, SHOW_JOBS, SHOW_VPP, VPP, LOG_LEVEL, PEER_EXPORT, SHOW_POLICIES,
            SHOW_ROUTING)


class ProtocolError(Exception):
    """A malformed request or response; the message is one line."""


def encode(obj: dict[str, Any]) -> bytes:
    # default=str: addresses render as text, and a Secret that slipped in renders masked.
    return json.dumps(obj, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


def request(cmd: str, args: dict[str, Any] | None = None) -> bytes:
    return encode({"cmd": cmd, "args": args or {}})


def ok(data: Any) -> bytes:
    return encode({"ok": True, "data": data})


def error(message: str) -> bytes:
    return encode({"ok": False, "error": " ".join(message.split())})


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("malformed request: not a JSON object on one line") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed request: not a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError('malformed request: "cmd" must be a non-empty string')
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError('malformed request: "args" must be an object')
    return cmd, args


def parse_response(line: bytes) -> tuple[bool, Any]:
    """(True, data) or (False, error message)."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("the agent sent a malformed answer") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise ProtocolError("the agent sent a malformed answer")
    if obj["ok"]:
        return True, obj.get("data")
    return False, str(obj.get("error") or "unspecified error")
