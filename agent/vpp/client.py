"""The agent's only path to VPP: an asyncio binary-API client that never hangs.

Built on vpp-papi 2.4.2's definition loader and serializer, with our own
transport instead of papi's clients, because both of those fail in ways a
daemon cannot accept (vpp-facts.md): the async client's reader task dies on
the first context-less message and every later call hangs forever, neither has
per-call deadlines, and neither notices that VPP restarted. Here:

- every request has a deadline; a lost socket fails every pending call at once;
- events and unknown messages go to listeners or the log, never kill the reader;
- many calls may be in flight on one socket (pipelining), matched by context;
- the connection is supervised: capped exponential backoff with jitter, and
  listeners learn about each (re)connection so the agent can reconcile;
- at connect the message table is checked against `messages.REQUIRED`;
- IKEv2 identities are decoded from raw bytes (papi decodes the fixed `string`
  ID field as strict ASCII, which breaks on ip4-addr IDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import json
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from vpp_papi.vpp_papi import VPPApiJSONFiles

from agent.logsetup import debug_enabled
from agent.vpp.errors import (
    VppApiError,
    VppError,
    VppMissingMessage,
    VppTimeout,
    VppUnavailable,
)
from agent.vpp.messages import TableCheck, check_table

HEADER = struct.Struct(">QII")
MSG_ID = struct.Struct(">H")
SOCKCLNT_CREATE_ID = 15
SOCKCLNT_CREATE_REPLY_ID = 16
HANDSHAKE_CONTEXT = 124
EAGAIN = -165
RAW_SUFFIX = "_agentraw"

# Field names whose values are secrets in requests (PSK) or replies (keys).
SECRET_FIELDS = frozenset({"data", "key", "psk", "sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er"})
SECRET_MESSAGES = frozenset({"ikev2_profile_set_auth"})

ConnectListener = Callable[["ConnectInfo"], Awaitable[None]]
EventListener = Callable[[str, Any], None]


@dataclass(frozen=True)
class ConnectInfo:
    """Delivered to listeners after each successful (re)connection."""

    generation: int  # 1 for the first connection of this client
    table_check: TableCheck

    @property
    def reconnected(self) -> bool:
        """VPP went away and came back: its state must be assumed lost."""
        return self.generation > 1


@dataclass
class _MessageEntry:
    name: str
    msg_id: int
    msgdef: Any
    service: dict[str, Any] | None


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    name: str
    end_msg: str | None = None  # name that ends a stream; None for a single reply
    stream_msg: str | None = None
    items: list[Any] = field(default_factory=list)


class _ApiTable:
    """Message ids and definitions for one connection (ids differ per VPP build)."""

    def __init__(self, table: dict[str, int], modules_json: str, memclnt: dict[str, Any]) -> None:
        self.table = table
        messages, services = VPPApiJSONFiles.process_json_array_str(modules_json)
        messages.update(memclnt["messages"])
        services.update(memclnt["services"])
        raw = _raw_identity_twins(json.loads(modules_json))
        twins: dict[str, Any] = {}
        if raw is not None:
            twin_msgs, _ = VPPApiJSONFiles._process_json(raw)
            twins = {n[: -len(RAW_SUFFIX) - 1]: m for n, m in twin_msgs.items()}
        self.by_name: dict[str, _MessageEntry] = {}
        self.by_id: dict[int, _MessageEntry] = {}
        for name, msgdef in messages.items():
            msg_id = table.get(f"{name}_{msgdef.crc[2:]}")
            if msg_id is None:
                continue
            entry = _MessageEntry(name, msg_id, msgdef, services.get(name))
            self.by_name[name] = entry
            self.by_id[msg_id] = _MessageEntry(name, msg_id, twins.get(name, msgdef), None)

    def request(self, name: str, missing: dict[str, str]) -> _MessageEntry:
        entry = self.by_name.get(name)
        if entry is None or entry.service is None:
            raise VppMissingMessage(missing.get(name, f"{name} missing from VPP's message table"))
        return entry


def _raw_identity_twins(modules: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Twin definitions that decode `ikev2_id.data` as bytes instead of ASCII.

    Same wire layout (a fixed 64-byte field), distinct type names so papi's
    process-global type registry is not altered for anyone else.
    """
    types: dict[str, list[Any]] = {}
    for module in modules:
        for t in module.get("types", []):
            types[t[0]] = t[1:]
    if "ikev2_id" not in types:
        return None
    tainted = {"ikev2_id"}
    grew = True
    while grew:
        grew = False
        for name, fields in types.items():
            if name not in tainted and any(
                isinstance(f, list) and f[0] in {f"vl_api_{x}_t" for x in tainted} for f in fields
            ):
                tainted.add(name)
                grew = True

    def rewrite(fields: list[Any]) -> list[Any]:
        out: list[Any] = []
        for f in fields:
            if isinstance(f, list):
                ftype = f[0]
                base = ftype[len("vl_api_") : -len("_t")] if ftype.startswith("vl_api_") else ""
                if base in tainted:
                    f = [f"vl_api_{base}{RAW_SUFFIX}_t", *f[1:]]
            out.append(f)
        return out

    twin_types = []
    for name in tainted:
        fields = rewrite(types[name])
        if name == "ikev2_id":
            fields = [
                ["u8", *f[1:]] if isinstance(f, list) and f[1] == "data" else f for f in fields
            ]
        twin_types.append([f"{name}{RAW_SUFFIX}", *fields])
    twin_messages = []
    tainted_refs = {f"vl_api_{x}_t" for x in tainted}
    for module in modules:
        for m in module.get("messages", []):
            if any(isinstance(f, list) and f[0] in tainted_refs for f in m[1:]):
                twin_messages.append([f"{m[0]}_{RAW_SUFFIX}", *rewrite(m[1:])])
    # Dependencies first: papi resolves types in a few passes only.
    twin_types.sort(key=lambda t: 0 if t[0] == f"ikev2_id{RAW_SUFFIX}" else 1)
    return {"types": twin_types, "messages": twin_messages, "services": {}}


def decode_ikev2_id(ident: Any) -> tuple[int, str]:
    """(id_type, text) from a dumped `ikev2_id` decoded by this client."""
    data = bytes(ident.data[: ident.data_len])
    if ident.type == 1 and len(data) == 4:
        return 1, str(ipaddress.IPv4Address(data))
    if ident.type == 5 and len(data) == 16:
        return 5, str(ipaddress.IPv6Address(data))
    return int(ident.type), data.decode("utf-8", errors="replace")


def redact(message: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of `fields` safe to log."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k in SECRET_FIELDS and (message in SECRET_MESSAGES or k != "data"):
            out[k] = "<redacted>"
        else:
            out[k] = v
    return out


class _Connection(asyncio.Protocol):
    """One socket to VPP: framing, context matching, failure of pending calls."""

    def __init__(self, owner: VppClient) -> None:
        self._owner = owner
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, _Pending] = {}
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.api: _ApiTable | None = None
        self.client_index = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"VPP closed the API socket ({exc})" if exc else "VPP closed the API socket"
        for p in self.pending.values():
            if not p.future.done():
                p.future.set_exception(VppUnavailable(f"{reason} during {p.name}"))
        self.pending.clear()
        if not self.handshake.done():
            self.handshake.set_exception(VppUnavailable(reason))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        offset = 0
        n = len(buf)
        while n - offset >= 16:
            _, length, _ = HEADER.unpack_from(buf, offset)
            end = offset + 16 + length
            if end > n:
                break
            frame = bytes(buf[offset + 16 : end])
            offset = end
            try:
                self._on_frame(frame)
            except Exception as e:  # a bad frame must never kill the connection
                self._owner._log.warning("vpp frame dropped", error=repr(e))
        if offset:
            del buf[:offset]

    def send(self, body: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise VppUnavailable("VPP API socket is closed")
        self.transport.write(HEADER.pack(0, len(body), 0) + body)

    def _on_frame(self, frame: bytes) -> None:
        if len(frame) < 2:
            return
        (msg_id,) = MSG_ID.unpack_from(frame)
        if self.api is None:
            if msg_id == SOCKCLNT_CREATE_REPLY_ID and not self.handshake.done():
                self.handshake.set_result(frame)
            return
        entry = self.api.by_id.get(msg_id)
        if entry is None:
            self._owner._log.debug("vpp unknown message id dropped", msg_id=msg_id)
            return
        msg, _ = entry.msgdef.unpack(frame)
        context = getattr(msg, "context", 0)
        pending = self.pending.get(context) if context else None
        if pending is None:
            self._owner._dispatch_event(entry.name, msg, self)
            return
        if pending.end_msg is None:
            del self.pending[context]
            if not pending.future.done():
                pending.future.set_result(msg)
        elif entry.name == pending.end_msg:
            del self.pending[context]
            if not pending.future.done():
                pending.future.set_result((msg, pending.items))
        elif pending.stream_msg is None or entry.name == pending.stream_msg:
            pending.items.append(msg)
        else:
            self._owner._log.warning("vpp unexpected message in stream", got=entry.name)


class VppClient:
    """Supervised connection to VPP's binary API socket."""

    def __init__(
        self,
        socket_path: str,
        *,
        client_name: str = "peering-agent",
        call_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        skip_modules: frozenset[str] = frozenset(),
    ) -> None:
        self.socket_path = socket_path
        self.skip_modules = skip_modules  # plugins the agent was told it does not use
        self.client_name = client_name
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        # a lazy logger (not .bind()): it follows log level changes made at run time
        self._log = structlog.get_logger(__name__, vpp_socket=socket_path)
        self._conn: _Connection | None = None
        self._context = 0
        self._generation = 0
        self._table_check = TableCheck(missing={}, optional_present=frozenset())
        self._connect_listeners: list[ConnectListener] = []
        self._event_listeners: list[EventListener] = []
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._last_error = "not connected yet"
        memclnt_text = (
            importlib.resources.files("vpp_papi.data").joinpath("memclnt.api.json").read_text()
        )
        m, s = VPPApiJSONFiles.process_json_str(memclnt_text)
        self._memclnt: dict[str, Any] = {"messages": m, "services": s}

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervisor; returns at once (use wait_connected to wait)."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="vpp-supervisor")

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        conn = self._conn
        self._conn = None
        self._connected.clear()
        if conn is not None and conn.transport is not None:
            with contextlib.suppress(VppError, Exception):
                if conn.api is not None and "sockclnt_delete" in conn.api.by_name:
                    await self._request(conn, "sockclnt_delete", 0.5, {"index": conn.client_index})
            conn.transport.close()
        for t in list(self._listener_tasks):
            t.cancel()

    async def wait_connected(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            raise VppUnavailable(
                f"VPP API socket {self.socket_path} not connected after {timeout:g} s: "
                f"{self._last_error}"
            ) from None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._connected.is_set()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def table_check(self) -> TableCheck:
        return self._table_check

    @property
    def last_error(self) -> str:
        return self._last_error

    def add_connect_listener(self, listener: ConnectListener) -> None:
        self._connect_listeners.append(listener)

    def add_event_listener(self, listener: EventListener) -> None:
        self._event_listeners.append(listener)

    def has(self, name: str) -> bool:
        conn = self._conn
        return conn is not None and conn.api is not None and name in conn.api.by_name

    # -- calls ---------------------------------------------------------------------

    async def call(
        self, name: str, /, *, _timeout: float | None = None, _check: bool = True, **fields: Any
    ) -> Any:
        """Send one request and return its reply; raise VppApiError on retval < 0.

        Options start with "_" so they cannot clash with VPP field names.
        """
        reply = await self._request(self._live(), name, _timeout, fields)
        retval = getattr(reply, "retval", 0)
        if _check and retval < 0:
            raise VppApiError(name, retval, reply)
        return reply

    async def dump(self, name: str, /, *, _timeout: float | None = None,
                   **fields: Any) -> list[Any]:
        """All details of a dump, old-style (control_ping) or cursor-style."""
        conn = self._live()
        items: list[Any] = []
        while True:
            result = await self._request(conn, name, _timeout, fields)
            reply, details = result
            items.extend(details)
            if getattr(reply, "retval", 0) == EAGAIN and hasattr(reply, "cursor"):
                fields = {**fields, "cursor": reply.cursor}
                continue
            return items

    async def cli(self, command: str, *, timeout: float | None = None) -> str:
        reply = await self.call("cli_inband", cmd=command, _timeout=timeout)
        return str(reply.reply)

    def _live(self) -> _Connection:
        conn = self._conn
        if conn is None or conn.api is None or not self._connected.is_set():
            raise VppUnavailable(f"VPP is not connected ({self.socket_path}): {self._last_error}")
        return conn

    def _next_context(self) -> int:
        self._context = self._context % 0x7FFFFFFF + 1
        return self._context

    async def _request(
        self, conn: _Connection, name: str, timeout: float | None, fields: dict[str, Any]
    ) -> Any:
        assert conn.api is not None
        entry = conn.api.request(name, self._table_check.missing)
        unknown = set(fields) - set(entry.msgdef.field_by_name)
        if unknown:
            raise ValueError(f"{name} has no field(s) {sorted(unknown)}")
        context = self._next_context()
        body = entry.msgdef.pack(
            {**fields, "_vl_msg_id": entry.msg_id, "client_index": conn.client_index,
             "context": context}
        )
        assert entry.service is not None
        pending = _Pending(asyncio.get_running_loop().create_future(), name)
        ping: bytes | None = None
        if entry.service.get("stream"):
            if "stream_msg" in entry.service:
                pending.end_msg = entry.service["reply"]
                pending.stream_msg = entry.service["stream_msg"]
            else:
                pending.end_msg = "control_ping_reply"
                pending.stream_msg = entry.service["reply"]
                ping_entry = conn.api.by_name["control_ping"]
                ping = ping_entry.msgdef.pack(
                    {"_vl_msg_id": ping_entry.msg_id, "client_index": conn.client_index,
                     "context": context}
                )
        if debug_enabled():  # the lazy logger is not free on this hot path
            self._log.debug("vpp call", message=name, args=redact(name, fields))
        conn.pending[context] = pending
        try:
            conn.send(body)
            if ping is not None:
                conn.send(ping)
            limit = self.call_timeout if timeout is None else timeout
            try:
                async with asyncio.timeout(limit):
                    return await pending.future
            except TimeoutError:
                raise VppTimeout(name, limit) from None
        finally:
            conn.pending.pop(context, None)

    # -- events ----------------------------------------------------------------------

    def _dispatch_event(self, name: str, msg: Any, conn: _Connection) -> None:
        if name == "memclnt_keepalive" and conn.api is not None:
            # VPP probes idle socket clients; answering keeps it from reaping us.
            entry = conn.api.by_name.get("memclnt_keepalive_reply")
            if entry is not None:
                with contextlib.suppress(VppError):
                    conn.send(entry.msgdef.pack(
                        {"_vl_msg_id": entry.msg_id, "context": getattr(msg, "context", 0),
                         "retval": 0}
                    ))
            return
        for listener in self._event_listeners:
            try:
                listener(name, msg)
            except Exception as e:
                self._log.warning("vpp event listener failed", event=name, error=repr(e))

    # -- connection supervision ------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.backoff_min
        while True:
            try:
                conn = await self._connect()
            except (OSError, VppError, TimeoutError, ValueError) as e:
                self._last_error = str(e) or repr(e)
                self._log.warning("vpp connect failed", error=self._last_error,
                                  retry_in=round(delay, 2))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_min
            self._generation += 1
            self._conn = conn
            self._connected.set()
            info = ConnectInfo(self._generation, self._table_check)
            self._log.info("vpp connected", generation=self._generation,
                           reconnected=info.reconnected, missing=sorted(self._table_check.missing))
            for problem in self._table_check.missing.values():
                self._log.error("vpp lacks a message the agent needs", problem=problem)
            for listener in self._connect_listeners:
                task = asyncio.create_task(self._run_listener(listener, info))
                self._listener_tasks.add(task)
                task.add_done_callback(self._listener_tasks.discard)
            await conn.closed
            self._connected.clear()
            self._conn = None
            self._last_error = "VPP closed the API socket"
            self._log.warning("vpp connection lost; reconnecting")

    async def _run_listener(self, listener: ConnectListener, info: ConnectInfo) -> None:
        try:
            await listener(info)
        except Exception as e:
            self._log.error("vpp connect listener failed", error=repr(e))

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_unix_connection(
                lambda: _Connection(self), self.socket_path
            )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._handshake(conn)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        return conn

    async def _handshake(self, conn: _Connection) -> None:
        create = self._memclnt["messages"]["sockclnt_create"]
        reply_def = self._memclnt["messages"]["sockclnt_create_reply"]
        conn.send(create.pack(
            {"_vl_msg_id": SOCKCLNT_CREATE_ID, "name": self.client_name,
             "context": HANDSHAKE_CONTEXT}
        ))
        frame = await conn.handshake
        reply, _ = reply_def.unpack(frame)
        if reply.response != 0:
            raise VppUnavailable(f"VPP refused the API client: response {reply.response}")
        table = {m.name: m.index for m in reply.message_table}
        conn.client_index = reply.index
        # Bootstrap with memclnt only, fetch every other module's definitions from VPP.
        conn.api = _ApiTable(table, "[]", self._memclnt)
        result = await self._request(conn, "get_api_json", self.connect_timeout, {})
        if result.retval != 0:
            raise VppUnavailable(f"get_api_json failed: retval {result.retval}")
        conn.api = _ApiTable(table, result.json, self._memclnt)
        self._table_check = check_table(table, self.skip_modules)

