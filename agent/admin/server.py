"""The admin Unix socket served by the daemon for `peerctl`.

Safety properties, because the socket reaches into a live device:
- mode 0600 is set between bind() and listen(), so no one connects before it;
  every connection's SO_PEERCRED uid must be root or the daemon's own uid;
- one JSON request per line with a size limit, a per-request deadline and an
  idle deadline; bad input gets one error line, never an exception upwards;
- VPP CLI output is masked here, so secrets cross the socket only when the
  operator asked for them (`show_secrets`), and that is logged as an audit line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog

from agent.admin import protocol as proto
from agent.admin.backend import AdminBackend, AdminError
from agent.admin.export import FORMATS, ExportError, render_export
from agent.masking import mask_cli_command, mask_cli_output
from agent.vpp.cli_compat import translate_cli
from agent.vpp.errors import VppError

log = structlog.get_logger(__name__)

_UCRED = struct.Struct("3i")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    _pid, uid, _gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return int(uid)


# peerctl's own commands that change only diagnostics, never forwarding or config
_HARMLESS_CLI = re.compile(r"^(ikev2 set logging level [0-5]|event-logger clear)$")


def read_only_cli(command: str) -> bool:
    """A vppctl command that only reads: `show` (or an unambiguous prefix of it)."""
    words = command.split()
    if not words:
        return False
    return words[0] in ("sh", "sho", "show") or bool(_HARMLESS_CLI.match(" ".join(words)))


class AdminServer:
    def __init__(
        self,
        backend: AdminBackend,
        socket_path: str | Path,
        *,
        request_timeout: float = 15.0,
        idle_timeout: float = 60.0,
        max_request: int = proto.MAX_REQUEST,
        max_connections: int = 16,
        allowed_uids: frozenset[int] | None = None,
    ) -> None:
        self.backend = backend
        self.socket_path = Path(socket_path)
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_request = max_request
        self.max_connections = max_connections
        self.allowed_uids = (allowed_uids if allowed_uids is not None
                             else frozenset({0, os.geteuid()}))
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle: dict[asyncio.Task[Any], None] = {}  # waiting for a request, oldest first
        self._evicted: set[asyncio.Task[Any]] = set()
        self._inode: int | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        path = self.socket_path
        if len(os.fsencode(path)) >= 108:
            raise AdminError(f"admin socket path {path} is too long for a Unix socket "
                             "(107 bytes at most)")
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        await self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # before listen(): nobody can have connected yet
            sock.listen(64)
            sock.setblocking(False)
            self._inode = os.stat(path).st_ino
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=self.max_request)
        except BaseException:
            sock.close()
            raise
        log.info("admin socket listening", socket=str(path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if self._inode is not None and os.stat(self.socket_path).st_ino == self._inode:
                self.socket_path.unlink()
        self._inode = None

    @staticmethod
    async def _remove_stale(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise AdminError(f"admin socket path {path} exists and is not a socket; "
                             "remove it or configure [admin] socket")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
        except (OSError, TimeoutError):
            os.unlink(path)  # left behind by a daemon that died
            return
        writer.close()
        raise AdminError(f"admin socket {path} is in use: is another agent running?")

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else -1
            if uid not in self.allowed_uids:
                log.warning("admin connection refused", uid=uid)
                await self._send(writer, proto.error(
                    f"permission denied: the admin socket serves root only (you are uid {uid})"))
                return
            if len(self._tasks) > self.max_connections and not self._evict_idle(task):
                await self._send(writer, proto.error(
                    f"too many admin connections (limit {self.max_connections}); retry later"))
                return
            while True:
                self._idle[task] = None
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        line = await reader.readline()
                except TimeoutError:
                    return
                except ValueError:  # the line exceeded the stream limit
                    await self._send(writer, proto.error(
                        f"request too large (limit {self.max_request} bytes)"))
                    return
                finally:
                    self._idle.pop(task, None)
                if not line.strip():
                    if not line:
                        return
                    continue
                await self._send(writer, await self._handle(line, uid))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if task in self._evicted:  # made room for a newer connection: end quietly
                self._evicted.discard(task)
            else:
                raise
        except Exception as e:  # a connection must never take the daemon down
            log.error("admin connection failed", error=repr(e))
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _evict_idle(self, newcomer: asyncio.Task[Any]) -> bool:
        """Close the longest-idle connection (one waiting for a request, not running
        one) so that idle sockets cannot lock peerctl out; False if none is idle."""
        for victim in self._idle:
            if victim is not newcomer and not victim.done():
                del self._idle[victim]
                self._evicted.add(victim)
                victim.cancel()
                log.info("idle admin connection closed to serve a new one")
                return True
        return False

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def _handle(self, line: bytes, uid: int) -> bytes:
        cmd = "?"
        try:
            cmd, args = proto.parse_request(line)
            async with asyncio.timeout(self.request_timeout):
                return proto.ok(await self._dispatch(cmd, args, uid))
        except (proto.ProtocolError, AdminError, ExportError, VppError) as e:
            return proto.error(str(e))
        except TimeoutError:
            return proto.error(f"'{cmd}' did not finish within {self.request_timeout:g} s")
        except Exception as e:
            log.error("admin request failed", cmd=cmd, error=repr(e))
            return proto.error(f"internal error while running '{cmd}' "
                               f"({type(e).__name__}); see the agent's log")

    async def _dispatch(self, cmd: str, args: dict[str, Any], uid: int) -> Any:
        b = self.backend
        if cmd == proto.SHOW_PEERS:
            return [asdict(p) for p in b.peers()]
        if cmd == proto.SHOW_JOBS:
            return b.recent_jobs(_int(args, "limit", 20, 1, 10000))
        if cmd == proto.SHOW_VPP:
            return asdict(await b.vpp_summary())
        if cmd == proto.SHOW_POLICIES:  # a backend without multilink policies has none
            status = getattr(b, "policy_status", None)
            return status() if status is not None else {"policy_id": None}
        if cmd == proto.SHOW_ROUTING:  # a backend without FRR routes nothing
            routing = getattr(b, "routing_status", None)
            return await routing() if routing is not None else []
        if cmd == proto.VPP:
            command = _str(args, "command")
            if len(command) > proto.MAX_CLI_COMMAND or "\n" in command or "\r" in command:
                raise AdminError(f"VPP command must be one line of at most "
                                 f"{proto.MAX_CLI_COMMAND} characters")
            show = _bool(args, "show_secrets")
            if not read_only_cli(command):
                if not _bool(args, "force"):
                    raise AdminError(
                        "only read-only VPP commands (show ...) pass without --force: a "
                        "change made behind the agent's back is not in its desired state")
                log.warning("admin vpp command that may change VPP", uid=uid,
                            command=mask_cli_command(command))
            command, note = translate_cli(command)
            log.info("admin vpp command", command=mask_cli_command(command), uid=uid,
                     secrets_shown=show)
            out = await b.vpp_cli(command)
            if show:
                log.warning("VPP output with secrets sent to peerctl",
                            command=mask_cli_command(command), uid=uid)
            else:
                out = mask_cli_output(out)
            return f"{note}\n{out}" if note else out
        if cmd == proto.LOG_LEVEL:
            level = args.get("level")
            if level is not None:
                if not isinstance(level, str):
                    raise AdminError('"level" must be a string')
                b.set_log_level(level)
                log.warning("agent log level changed", level=b.log_level(), uid=uid)
            return {"level": b.log_level()}
        if cmd == proto.PEER_EXPORT:
            tid = _int(args, "tunnel_id", None, 0, 2**31 - 1)
            fmt = args.get("format", "swanctl")
            if fmt not in FORMATS:
                raise AdminError(f"format {_short(fmt)}: expected one of {', '.join(FORMATS)}")
            spec = b.spec(tid)
            if spec is None:
                known = ", ".join(str(p.tunnel_id) for p in b.peers()) or "none"
                raise AdminError(f"unknown peer: tunnel {tid} is not configured "
                                 f"(configured tunnels: {known})")
            show = _bool(args, "show_secrets")
            text = render_export(spec, fmt, show_secrets=show)
            if show:
                log.warning("pre-shared key revealed by peer export", tunnel_id=tid, uid=uid)
            return text
        raise AdminError(f"unknown command '{cmd}' (known: {', '.join(proto.COMMANDS)})")


def _int(args: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    value = args.get(key, default)
    if value is None:
        raise AdminError(f'"{key}" is required')
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AdminError(f'"{key}" must be an integer from {lo} to {hi}, got {_short(value)}')
    return value


def _short(value: Any) -> str:
    """A client-supplied value for an error line: bounded, so errors stay one short line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AdminError(f'"{key}" must be a non-empty string')
    return value.strip()


def _bool(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise AdminError(f'"{key}" must be true or false')
    return value
