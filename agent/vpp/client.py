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
  ID field as strict ASCII, which breaks on ip4-addr IDs);
- the messages the agent uses are encoded and decoded by code compiled at
  connect time (`agent.vpp.codec`), byte-for-byte what papi produces but several
  times cheaper; papi serves every other message and every value the compiled
  code refuses;
- writes made in one event-loop iteration are coalesced (one socket write per
  FLUSH_FRAMES requests), and every frame of a read is handled before the loop
  wakes anyone (`IoStats` counts both).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import ipaddress
import json
import math
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from vpp_papi.vpp_papi import VPPApiJSONFiles

from agent.logsetup import debug_enabled
from agent.vpp.codec import CodecStats, PackFn, UnpackFn, papi_unpack, try_compile
from agent.vpp.errors import (
    VppApiError,
    VppError,
    VppMissingMessage,
    VppTimeout,
    VppUnavailable,
)
from agent.vpp.messages import OPTIONAL, REQUIRED, TableCheck, check_table

HEADER = struct.Struct(">QII")
MSG_ID = struct.Struct(">H")
SOCKCLNT_CREATE_ID = 15
SOCKCLNT_CREATE_REPLY_ID = 16
HANDSHAKE_CONTEXT = 124
EAGAIN = -165
RAW_SUFFIX = "_agentraw"
FLUSH_FRAMES = 64  # a burst of requests leaves in writes of this many frames

# Field names whose values are secrets in requests (PSK) or replies (keys).
SECRET_FIELDS = frozenset({"data", "key", "psk", "sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er"})
SECRET_MESSAGES = frozenset({"ikev2_profile_set_auth"})

ConnectListener = Callable[["ConnectInfo"], Awaitable[None]]
EventListener = Callable[[str, Any], None]
# (reply, None) when the reply came, its retval unchecked; (None, error) when none will
ReplyCallback = Callable[[Any, BaseException | None], None]


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
class IoStats:
    """Socket traffic of a client: how many frames each read and write carried."""

    reads: int = 0  # data_received calls: one per wake-up of the loop for this socket
    frames_in: int = 0
    writes: int = 0  # transport writes: per loop iteration, one per FLUSH_FRAMES requests
    frames_out: int = 0


@dataclass
class _MessageEntry:
    name: str
    msg_id: int
    msgdef: Any
    service: dict[str, Any] | None
    pack: PackFn | None = None  # compiled encoder; None: papi packs
    unpack: UnpackFn | None = None  # compiled decoder; None: papi unpacks
    fields: frozenset[str] = frozenset()


# Compiled code per papi message definition, kept across reconnections (papi
# caches its definitions per name and CRC, so a reconnect yields the same objects).
CompiledCache = dict[Any, tuple[PackFn | None, UnpackFn | None]]


def codec_messages(services: dict[str, Any]) -> set[str]:
    """The messages worth compiling: what the agent sends and what VPP answers to it."""
    names = {*REQUIRED, *OPTIONAL, "control_ping_reply", "memclnt_keepalive"}
    for name in list(names):
        service = services.get(name) or {}
        for key in ("reply", "stream_msg"):
            if isinstance(service.get(key), str):
                names.add(service[key])
    return names


class _Completion:
    """A call's outcome delivered to a callback instead of a future, with the three
    methods of a future the connection uses: a reply, a timeout or a lost connection
    wakes no task, which is what a 1000-peer apply spends most of its time on."""

    __slots__ = ("_done", "_log", "_on_reply")

    def __init__(self, on_reply: ReplyCallback, log: Any) -> None:
        self._on_reply = on_reply
        self._log = log
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, reply: Any) -> None:
        self._deliver(reply, None)

    def set_exception(self, error: BaseException) -> None:
        self._deliver(None, error)

    def _deliver(self, reply: Any, error: BaseException | None) -> None:
        self._done = True
        try:
            self._on_reply(reply, error)
        except Exception:  # the other calls of this read, expiry or loss still complete
            self._log.exception("vpp reply callback failed")


class _Pending:
    """One call in flight (a plain slotted class: there are thousands of these)."""

    __slots__ = ("deadline", "end_msg", "future", "items", "limit", "name", "stream_msg")

    def __init__(self, future: asyncio.Future[Any] | _Completion, name: str, deadline: float,
                 limit: float) -> None:
        self.future = future
        self.name = name
        self.deadline = deadline
        self.limit = limit
        self.end_msg: str | None = None  # name that ends a stream; None for a single reply
        self.stream_msg: str | None = None
        self.items: list[Any] = []


class _ApiTable:
    """Message ids and definitions for one connection (ids differ per VPP build)."""

    def __init__(self, table: dict[str, int], modules_json: str, memclnt: dict[str, Any],
                 stats: CodecStats | None = None, compiled: CompiledCache | None = None) -> None:
        self.table = table
        self.stats = stats if stats is not None else CodecStats()
        compiled = compiled if compiled is not None else {}
        messages, services = VPPApiJSONFiles.process_json_array_str(modules_json)
        messages.update(memclnt["messages"])
        services.update(memclnt["services"])
        raw = _raw_identity_twins(json.loads(modules_json))
        twins: dict[str, Any] = {}
        if raw is not None:
            twin_msgs, _ = VPPApiJSONFiles._process_json(raw)
            twins = {n[: -len(RAW_SUFFIX) - 1]: m for n, m in twin_msgs.items()}
        wanted = codec_messages(services)
        self.by_name: dict[str, _MessageEntry] = {}
        self.by_id: dict[int, _MessageEntry] = {}
        for name, msgdef in messages.items():
            msg_id = table.get(f"{name}_{msgdef.crc[2:]}")
            if msg_id is None:
                continue
            decoder = twins.get(name, msgdef)
            pack = unpack = None
            if name in wanted:
                pack = self._compiled(msgdef, compiled)[0]
                unpack = self._compiled(decoder, compiled)[1]
            entry = _MessageEntry(name, msg_id, msgdef, services.get(name), pack,
                                  None, frozenset(msgdef.field_by_name))
            self.by_name[name] = entry
            self.by_id[msg_id] = _MessageEntry(name, msg_id, decoder, None, None, unpack)

    def _compiled(self, msgdef: Any, cache: CompiledCache) -> tuple[PackFn | None,
                                                                     UnpackFn | None]:
        fns = cache.get(msgdef)
        if fns is None:
            fns = cache[msgdef] = try_compile(msgdef, self.stats)
        return fns

    def encode(self, entry: _MessageEntry, fields: dict[str, Any], client_index: int,
               context: int) -> bytes:
        """The request body; papi packs what the compiled code does not (or refuses)."""
        if entry.pack is not None:
            try:
                body = entry.pack(fields, entry.msg_id, client_index, context)
            except Exception:  # papi packs it or raises its own, explicit error
                self.stats.pack_fallbacks += 1
            else:
                self.stats.packed += 1
                return body
        return bytes(entry.msgdef.pack(
            {**fields, "_vl_msg_id": entry.msg_id, "client_index": client_index,
             "context": context}))

    def decode(self, entry: _MessageEntry, frame: bytes) -> Any:
        if entry.unpack is not None:
            try:
                msg = entry.unpack(frame)
            except Exception:  # papi decodes it or raises its own error
                self.stats.unpack_fallbacks += 1
            else:
                self.stats.unpacked += 1
                return msg
        return papi_unpack(entry.msgdef, frame)

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
        self.io = owner.io
        self._out: list[bytes] = []
        # One timer for all deadlines (not one per call): it fires at the earliest
        # deadline it knows of and fails every call that is past its own.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"VPP closed the API socket ({exc})" if exc else "VPP closed the API socket"
        self._out.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # a snapshot: a callback (`submit`) runs at once and may make another call
        lost, self.pending = list(self.pending.values()), {}
        for p in lost:
            if not p.future.done():
                p.future.set_exception(VppUnavailable(f"{reason} during {p.name}"))
        if not self.handshake.done():
            self.handshake.set_exception(VppUnavailable(reason))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        # Every complete frame of this read is handled now: the replies wake
        # their callers in one batch when this returns.
        self.io.reads += 1
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        offset = 0
        n = len(data)
        frames = 0
        unpack_header = HEADER.unpack_from
        while n - offset >= 16:
            _, length, _ = unpack_header(data, offset)
            end = offset + 16 + length
            if end > n:
                break
            frame = data[offset + 16 : end]
            offset = end
            frames += 1
            try:
                self._on_frame(frame)
            except Exception as e:  # a bad frame must never kill the connection
                self._owner._log.warning("vpp frame dropped", error=repr(e))
        self.io.frames_in += frames
        if offset < n:
            buf += data[offset:]

    def send(self, body: bytes) -> None:
        """Queue one message; everything queued in this loop iteration is one write."""
        if self.transport is None or self.transport.is_closing():
            raise VppUnavailable("VPP API socket is closed")
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self._flush)
        out.append(HEADER.pack(0, len(body), 0))
        out.append(body)
        if len(out) >= FLUSH_FRAMES * 2:
            # VPP starts on these while the rest of the burst is being encoded
            self._flush()

    def watch(self, context: int, pending: _Pending) -> None:
        """Track a call until its reply or its deadline."""
        self.pending[context] = pending
        if pending.deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = pending.deadline
            self._timer = asyncio.get_running_loop().call_at(pending.deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest = math.inf
        for context, p in list(self.pending.items()):
            if p.deadline <= now:
                del self.pending[context]
                if not p.future.done():
                    p.future.set_exception(VppTimeout(p.name, p.limit))
            elif p.deadline < earliest:
                earliest = p.deadline
        if earliest < math.inf:
            self._timer_at = earliest
            self._timer = loop.call_at(earliest, self._expire)

    def _flush(self) -> None:
        out = self._out
        if not out or self.transport is None or self.transport.is_closing():
            out.clear()
            return
        self.io.writes += 1
        self.io.frames_out += len(out) // 2
        self.transport.write(b"".join(out))
        out.clear()

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
        msg = self.api.decode(entry, frame)
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
        self.io = IoStats()
        self.codec_stats = CodecStats()
        self._compiled: CompiledCache = {}
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

    def submit(self, name: str, fields: dict[str, Any], on_reply: ReplyCallback, *,
               timeout: float | None = None) -> None:
        """Send one request and return at once: `on_reply(reply, None)` when its reply
        arrives (retval unchecked), `on_reply(None, error)` past the deadline or when the
        connection is lost. What keeps the request from being sent raises here. For the
        executor's many dependent steps: no coroutine, future or task per call."""
        conn = self._live()
        entry, context, body = self._encode(conn, name, fields)
        assert entry.service is not None
        if entry.service.get("stream"):
            raise ValueError(f"{name} is a dump: it has no single reply to hand over")
        loop = asyncio.get_running_loop()
        limit = self.call_timeout if timeout is None else timeout
        conn.watch(context, _Pending(_Completion(on_reply, self._log), name,
                                     loop.time() + limit, limit))
        try:
            conn.send(body)
        except BaseException:
            conn.pending.pop(context, None)
            raise

    def _encode(self, conn: _Connection, name: str,
                fields: dict[str, Any]) -> tuple[_MessageEntry, int, bytes]:
        assert conn.api is not None
        entry = conn.api.request(name, self._table_check.missing)
        if not entry.fields.issuperset(fields):
            unknown = set(fields) - entry.fields
            raise ValueError(f"{name} has no field(s) {sorted(unknown)}")
        context = self._next_context()
        if debug_enabled():  # the lazy logger is not free on this hot path
            self._log.debug("vpp call", message=name, args=redact(name, fields))
        return entry, context, conn.api.encode(entry, fields, conn.client_index, context)

    async def _request(
        self, conn: _Connection, name: str, timeout: float | None, fields: dict[str, Any]
    ) -> Any:
        entry, context, body = self._encode(conn, name, fields)
        assert entry.service is not None and conn.api is not None
        loop = asyncio.get_running_loop()
        limit = self.call_timeout if timeout is None else timeout
        future: asyncio.Future[Any] = loop.create_future()
        pending = _Pending(future, name, loop.time() + limit, limit)
        ping: bytes | None = None
        if entry.service.get("stream"):
            if "stream_msg" in entry.service:
                pending.end_msg = entry.service["reply"]
                pending.stream_msg = entry.service["stream_msg"]
            else:
                pending.end_msg = "control_ping_reply"
                pending.stream_msg = entry.service["reply"]
                ping_entry = conn.api.by_name["control_ping"]
                ping = conn.api.encode(ping_entry, {}, conn.client_index, context)
        conn.watch(context, pending)
        try:
            conn.send(body)
            if ping is not None:
                conn.send(ping)
            return await future  # VppTimeout is set on it past the deadline
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
        conn.api = _ApiTable(table, "[]", self._memclnt, self.codec_stats, self._compiled)
        result = await self._request(conn, "get_api_json", self.connect_timeout, {})
        if result.retval != 0:
            raise VppUnavailable(f"get_api_json failed: retval {result.retval}")
        conn.api = _ApiTable(table, result.json, self._memclnt, self.codec_stats,
                             self._compiled)
        self._table_check = check_table(table, self.skip_modules)

