"""vppsim's socket server: VPP's binary API over a Unix stream socket.

One `Connection` per client. Requests are handled synchronously in arrival
order, so pipelined requests are answered in order; all replies produced by
one read are written with one call. Events (sw_interface_event) are queued and
sent after the reply of the request that caused them, as VPP's process nodes do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from agent.lab.vppsim.api import HEADER, ApiCatalog, MessageDef, frame
from agent.lab.vppsim.handlers import WRITES, Handlers, VppCrash
from agent.lab.vppsim.ike import IkeBackend, InProcessIke
from agent.lab.vppsim.state import INVALID_REGISTRATION, UNSPECIFIED, ApiError, SimState

log = structlog.get_logger(__name__)

T = TypeVar("T")
_FIRST_CLIENT_INDEX = 0x01000000


@dataclass
class _Injection:
    message: str | None
    retval: int
    after: int


class Connection(asyncio.Protocol):
    def __init__(self, sim: VppSim) -> None:
        self.sim = sim
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.index: int | None = None
        self.name = ""
        self.events_pid: int | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sim.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos = 0
        size = len(buf)
        while size - pos >= 16 and not self.closing and not self.sim.hung:
            length = HEADER.unpack_from(buf, pos)[1]
            end = pos + 16 + length
            if end > size:
                break
            self.sim.handle(self, bytes(buf[pos + 16 : end]), out)
            pos = end
            if self.sim.abort_pending:  # inject_disconnect: drop everyone, reply to nobody
                self.sim.abort_pending = False
                self.sim.kill_connections()
                return
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        if self.sim.hung and self.transport is not None:
            self.transport.pause_reading()  # what follows waits in the socket, unread
        if self.closing and self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class VppSim:
    """A VPP 26.06 binary-API emulator on `socket_path`.

    interfaces: WAN interfaces `(name, "address/len")`, sw_if_index 1.. in order.
    ike: the IKE backend (default: an `InProcessIke` model, reachable as `sim.ike`).
    """

    def __init__(
        self,
        socket_path: str | Path,
        interfaces: list[tuple[str, str]] | None = None,
        ike: IkeBackend | None = None,
        omit_messages: tuple[str, ...] | list[str] = (),
        omit_plugins: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.socket_path = Path(socket_path)
        self.wan = list(interfaces or [])
        self.ike: Any = ike if ike is not None else InProcessIke()
        self.catalog = ApiCatalog(
            omit_messages=frozenset(omit_messages), omit_plugins=frozenset(omit_plugins)
        )
        self.message_counts: collections.Counter[str] = collections.Counter()
        self.write_count = 0
        self.connections: set[Connection] = set()
        self.state = SimState(self.wan)
        self.handlers = Handlers(self.state, self.ike)
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_client = _FIRST_CLIENT_INDEX
        self._injections: list[_Injection] = []
        self._disconnect_after: int | None = None
        self._hang_after: int | None = None
        self.hung = False
        self.abort_pending = False
        self._pending_events: list[tuple[int, int, bool]] = []
        self._ids = {name: md.msg_id for name, md in self.catalog.by_name.items()}

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Listen; state starts empty (plus the configured interfaces)."""
        self._loop = asyncio.get_running_loop()
        self.state = SimState(self.wan)
        self.state.listeners.append(self._on_interface_change)
        self.handlers = Handlers(self.state, self.ike)
        self.ike.attach(self.state, self._loop)
        backend_start = getattr(self.ike, "start", None)
        if backend_start is not None:  # a backend with a process of its own (strongSwan)
            await backend_start()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await self._loop.create_unix_server(
            lambda: Connection(self), path=str(self.socket_path)
        )
        log.info("vppsim listening", socket=str(self.socket_path), messages=len(self.catalog.by_id))

    async def stop(self) -> None:
        """Stop listening, drop clients, forget all state."""
        if self._server is not None:
            self._server.close()
            self.kill_connections()
            await self._server.wait_closed()
            self._server = None
        self.ike.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def crash(self) -> None:
        """A VPP crash and restart by its supervisor: clients dropped, state empty."""
        self.kill_connections()
        self.state = SimState(self.wan)
        self.state.listeners.append(self._on_interface_change)
        self.handlers = Handlers(self.state, self.ike)
        if self._loop is not None:
            self.ike.attach(self.state, self._loop)

    def kill_connections(self) -> None:
        """Drop every client socket abruptly."""
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.connections.clear()

    # -- test controls -------------------------------------------------------
    def inject_failure(self, message: str | None = None, retval: int = -1, after: int = 0) -> None:
        """Fail the (after+1)-th matching state-changing request with `retval`."""
        if message is not None and message not in WRITES:
            raise ValueError(f"{message} is not a state-changing request vppsim serves")
        self._injections.append(_Injection(message, retval, after))

    def inject_disconnect(self, after: int = 0) -> None:
        """Apply the (after+1)-th state-changing request, then reset every API connection
        before its reply is sent: VPP keeps its state, the client loses the socket (an
        API socket reset, a stalled VPP that recovers)."""
        self._disconnect_after = after

    def hang_after(self, writes: int) -> None:
        """Apply `writes` more state-changing requests, answer them, then stop reading
        every API socket (a hung VPP) until `resume()`: a test can kill a client at an
        exact point of its job, however fast the job runs."""
        if writes < 1:
            raise ValueError("hang_after needs at least one write")
        self._hang_after = writes

    def resume(self) -> None:
        """End a hang: requests still waiting in live sockets are served in order."""
        self.hung = False
        for conn in list(self.connections):
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
                conn.data_received(b"")

    def snapshot(self) -> dict[str, Any]:
        return self.state.snapshot()

    # -- request path -------------------------------------------------------
    def handle(self, conn: Connection, body: bytes, out: list[bytes]) -> None:
        msg_id = int.from_bytes(body[:2], "big")
        md = self.catalog.by_id.get(msg_id)
        if md is None:
            log.warning("unknown message id dropped", msg_id=msg_id, client=conn.name)
            return
        try:
            msg, _ = md.codec.unpack(body)
        except Exception as e:  # a malformed request: VPP drops it too
            log.warning("undecodable message dropped", message=md.name, error=str(e))
            return
        name = md.name
        if name == "sockclnt_create":
            self.message_counts[name] += 1
            self._sockclnt_create(conn, msg, out)
            return
        if conn.index is None:
            log.warning("request before sockclnt_create dropped", message=name)
            return
        if getattr(msg, "client_index", conn.index) != conn.index:
            # VPP 26.06 executes such a request; only its reply goes nowhere
            log.warning(
                "request with wrong client_index executed, reply dropped",
                message=name,
                client_index=getattr(msg, "client_index", None),
                expected=conn.index,
            )
            out = []
        self.message_counts[name] += 1
        if name == "sockclnt_delete":
            out.append(self._pack("sockclnt_delete_reply", {"context": msg.context, "response": 0}))
            conn.closing = True
            return
        if name == "get_api_json":
            reply = {"context": msg.context, "retval": 0, "json": self.catalog.api_json_text}
            out.append(self._pack("get_api_json_reply", reply))
            return
        if name == "want_interface_events":
            # as VPP's pub_sub_handler: enabling twice or disabling while not registered
            # is VNET_API_ERROR_INVALID_REGISTRATION and changes nothing
            if bool(msg.enable_disable) == (conn.events_pid is not None):
                retval = INVALID_REGISTRATION
            else:
                retval = 0
                conn.events_pid = msg.pid if msg.enable_disable else None
            out.append(self._pack("want_interface_events_reply",
                                  {"context": msg.context, "retval": retval}))
            return
        if name == "api_versions":
            out.append(self._api_versions(msg.context))
            return
        if name == "get_first_msg_id":
            out.append(self._first_msg_id(msg))
            return
        handler = self.handlers.table.get(name)
        if handler is None:
            log.warning("message not implemented by vppsim, dropped", message=name)
            return
        reply_name = self.catalog.services.get(name, {}).get("reply", "")
        if name in WRITES:
            injected = self._take_injection(name)
            if injected is not None:
                out.append(self._pack(reply_name, {"context": msg.context, "retval": injected}))
                return
        try:
            try:
                replies = handler(msg)
                packed = [self._pack(rname, {**fields, "context": msg.context})
                          for rname, fields in replies]
            except VppCrash as crash:
                log.error("vppsim crashes as VPP 26.06 would", message=name, why=str(crash))
                self.crash()
                out.clear()
                return
            except ApiError:
                raise
            except Exception as bug:  # VPP answers every request; so must its emulator
                log.exception("vppsim failed on a request; answering UNSPECIFIED", message=name)
                raise ApiError(UNSPECIFIED, f"emulator error: {bug!r}") from bug
        except ApiError as e:
            log.info("request failed", message=name, retval=e.retval, why=str(e))
            if (
                reply_name
                and reply_name in self._ids
                and "stream" not in self.catalog.services[name]
            ):
                out.append(
                    self._pack(reply_name, {"context": msg.context, "retval": e.retval, **e.reply})
                )
            return
        if name in WRITES:
            self.write_count += 1
            changed = getattr(self.ike, "state_changed", None)
            if changed is not None:  # a backend that mirrors VPP state to Linux
                changed()
            if self._disconnect_after is not None:
                if self._disconnect_after == 0:  # applied, but the reply never leaves
                    self._disconnect_after = None
                    self.abort_pending = True
                    return
                self._disconnect_after -= 1
            if self._hang_after is not None:
                self._hang_after -= 1
                if self._hang_after == 0:
                    self._hang_after = None
                    self.hung = True
        out.extend(packed)

    def _pack(self, name: str, fields: dict[str, Any]) -> bytes:
        md: MessageDef = self.catalog.by_name[name]
        fields["_vl_msg_id"] = md.msg_id
        return frame(md.codec.pack(fields))

    def _take_injection(self, name: str) -> int | None:
        for inj in self._injections:
            if inj.message is None or inj.message == name:
                if inj.after > 0:
                    inj.after -= 1
                    return None
                self._injections.remove(inj)
                log.info("injected failure", message=name, retval=inj.retval)
                return inj.retval
        return None

    def _sockclnt_create(self, conn: Connection, msg: Any, out: list[bytes]) -> None:
        conn.index = self._next_client
        conn.name = msg.name
        self._next_client += 1
        table = self.catalog.table()
        reply = {
            "client_index": 0,
            "context": msg.context,
            "response": 0,
            "index": conn.index,
            "count": len(table),
            "message_table": table,
        }
        out.append(self._pack("sockclnt_create_reply", reply))
        log.info("client connected", client=conn.name, index=conn.index)

    def _api_versions(self, context: int) -> bytes:
        versions = []
        for module, api in self.catalog.modules.items():
            major, minor, patch = (int(x) for x in api["options"]["version"].split("."))
            versions.append({"major": major, "minor": minor, "patch": patch, "name": module})
        fields = {"context": context, "retval": 0, "count": len(versions), "api_versions": versions}
        return self._pack("api_versions_reply", fields)

    def _first_msg_id(self, msg: Any) -> bytes:
        # name is "<module>_<crc>"; the module's first message id is its block base
        best: tuple[int, int] | None = None
        for md in self.catalog.by_id.values():  # ascending ids: first hit is the base
            matches = msg.name == md.module or msg.name.startswith(md.module + "_")
            if matches and (best is None or len(md.module) > best[0]):
                best = (len(md.module), md.msg_id)
        fields = {
            "context": msg.context,
            "retval": 0 if best else -1,
            "first_msg_id": best[1] if best else 0xFFFF,
        }
        return self._pack("get_first_msg_id_reply", fields)

    # -- events ---------------------------------------------------------------
    def _on_interface_change(self, sw_if_index: int, flags: int, deleted: bool) -> None:
        changed = getattr(self.ike, "state_changed", None)
        if changed is not None:  # an SA's tunnel going up or down moves backup routes
            changed()
        if not self._pending_events and self._loop is not None:
            self._loop.call_soon(self._flush_events)
        self._pending_events.append((sw_if_index, flags, deleted))

    def _flush_events(self) -> None:
        events, self._pending_events = self._pending_events, []
        if "sw_interface_event" not in self._ids:
            return
        for conn in list(self.connections):
            if conn.events_pid is None:
                continue
            data = b"".join(
                self._pack(
                    "sw_interface_event",
                    {
                        "client_index": conn.index,
                        "pid": conn.events_pid,
                        "sw_if_index": idx,
                        "flags": flags,
                        "deleted": deleted,
                    },
                )
                for idx, flags, deleted in events
            )
            conn.send(data)


class ThreadedSim:
    """A VppSim running on its own event loop in a background thread."""

    def __init__(self, sim: VppSim, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.loop = loop

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the simulator's loop and return its result."""
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)


@contextlib.contextmanager
def running_in_thread(socket_path: str | Path, **kwargs: Any) -> Iterator[ThreadedSim]:
    """Run a VppSim in a background thread (for the blocking sync papi client)."""
    loop = asyncio.new_event_loop()
    sim = VppSim(socket_path, **kwargs)
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as e:
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(sim.stop())
        loop.close()

    thread = threading.Thread(target=main, name="vppsim", daemon=True)
    thread.start()
    started.wait(10)
    if failure:
        raise failure[0]
    try:
        yield ThreadedSim(sim, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
