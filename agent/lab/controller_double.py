"""A controller double that holds flexiManage 6.3's rules (never imported by product code).

Written from the protocol reference (sections 2-11), not from flexiManage's code.
A real websockets server that behaves like flexiManage towards one device:

* handshake (3.1-3.2): ``/<machineId>?token=...``, ``User-Agent: fwagent/X.Y[.Z]``
  with major 5-6 (else 400), an ``Origin`` header (flexiManage never answers
  without one; the double refuses with 400 and records a violation), 403 while
  the device is not approved, 404 for an unknown device or token;
* ``get-device-info`` right after connecting, with ``{"tunnels": [], "jobs":
  [ids of up to 16 jobs that failed with Send Timeout]}``. A reply that is not
  ``ok: 1`` or fails the Joi/mongoose rules disconnects the device (3.3); only
  a valid reply makes it *ready*, and jobs are delivered only to a ready device;
  ``jobs`` entries with ``state: complete`` flip such a job to complete;
* one job at a time; a job unanswered after ``job_timeout`` fails with "Send
  Timeout" and is **never re-sent**, a late reply is only recorded;
* the configuration hash chain (5.1): advanced when a job is queued (every job
  but sync-device), reset to '' when a sync-device succeeds; compared on every
  stats reply with entries, and after every successful job;
* the sync state machine (5.2): synced / syncing / not-synced, with at most two
  automatic sync-device jobs carrying the double's full model of the device
  configuration (6.1 order) before auto-sync turns off;
* every ``get-device-info`` / ``get-device-stats`` reply is validated with the
  rules of `agent.lab.flexi_rules`; every problem is kept in `violations`.

Scripting from tests::

    async with ControllerDouble(machine_id="ab01", device_token="t") as ctl:
        await ctl.wait_ready(5)
        reply = await ctl.send_job("add-tunnel", {...})
        stats = await ctl.poll_stats()

Every frame in both directions is kept in `frames`; replies in `replies`.
Run ``python -m agent.lab.controller_double --help`` for a standalone server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
import secrets
import ssl
import string
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.lab.flexi_rules import (
    validate_bgp,
    validate_device_info,
    validate_registration,
    validate_reply,
    validate_stats,
)

_UA_RE = re.compile(r"^fwagent/([0-9]{1,3})\.([0-9]{1,3})(\.[0-9]{1,3})?$")
_SEQ_ALPHABET = string.ascii_letters + string.digits
_MAX_RECORDED = 64 * 1024
MAX_SYNC_TRIALS = 2  # flexiManage: automatic sync-device jobs before auto-sync turns off
MAX_INFO_JOBS = 16

# flexiManage's sync-device order (6.1) of the kinds of item the double models.
SYNC_ORDER = ("vxlan-config", "switch", "interface", "lte", "ospf", "routing-general",
              "routing-filter", "routing-bgp", "route", "dhcp-config", "tunnel",
              "multilink-policy", "firewall-policy", "lan-nat-policy", "qos-policy",
              "qos-traffic-map", "application", "app-install", "app-config",
              "notifications-config", "vrrp-group")
_ITEM_KEYS: dict[str, tuple[str, ...]] = {
    "interface": ("dev_id",), "lte": ("dev_id",), "route": ("addr", "via", "dev_id"),
    "tunnel": ("tunnel-id",), "dhcp-config": ("interface",), "switch": ("addr",),
    "routing-filter": ("name",), "vrrp-group": ("virtualRouterId",),
}


def stable_stringify(value: Any) -> str:
    """json-stable-stringify: sorted keys, no whitespace, non-ASCII unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def next_hash(previous: str, task: Mapping[str, Any]) -> str:
    """flexiManage's deviceLogic/sync.js: SHA1(previous + stable(task))."""
    return hashlib.sha1((previous + stable_stringify(task)).encode()).hexdigest()


def envelope_text(seq: str, host_id: str, message: str, params_text: str | None,
                  jobid: int | str) -> str:
    """json.dumps of {seq, hostId, msg: {entity, message[, params]}, jobid}, with the
    params already in text."""
    params = "" if params_text is None else ', "params": ' + params_text
    return (f'{{"seq": {json.dumps(seq)}, "hostId": {json.dumps(host_id)}, '
            f'"msg": {{"entity": "agent", "message": {json.dumps(message)}{params}}}, '
            f'"jobid": {json.dumps(jobid)}}}')


def peer_addr(tunnel_id: int, base: str = "10.100") -> str:
    """flexiManage's /31 for a tunnel number (tunnelUtils.js): h = (n mod 127 + 1) * 2."""
    return f"{base}.{tunnel_id // 127}.{(tunnel_id % 127 + 1) * 2}/31"


def peer_tunnel_job(params: Mapping[str, Any],
                    routes: list[Mapping[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """The job flexiManage sends to (re)create a peer tunnel (section 7): a bare
    add-tunnel, or aggregated [add-route..., add-tunnel] when static routes use one of
    the tunnel's /31 addresses. Removal mirrors it: [remove-route..., remove-tunnel]."""
    if not routes:
        return "add-tunnel", dict(params)
    requests = [{"entity": "agent", "message": "add-route", "params": dict(r)} for r in routes]
    requests.append({"entity": "agent", "message": "add-tunnel", "params": dict(params)})
    return "aggregated", {"requests": requests}

# flexiManage's timeouts for the direct messages of its device tabs, seconds
# (DevicesService.js: directMessageTimeout 15 s; Command tab 100 s; routes 60 s).
DIRECT_MESSAGE_TIMEOUT = 15.0
DIRECT_TIMEOUTS = {"exec_timeout": 100.0, "get-device-logs": 15.0, "get-device-config": 15.0,
                   "get-device-os-routes": 60.0, "get-bgp-status": 180.0}


@dataclass
class Handshake:
    """One connection attempt as the server saw it (the token itself is not kept)."""

    id: int
    machine_id: str
    user_agent: str
    token_ok: bool
    status: int  # 101 when accepted
    at: float
    origin: str = ""
    closed_at: float | None = None
    extensions: str = ""  # the Sec-WebSocket-Extensions the server answered with


@dataclass(frozen=True)
class Frame:
    direction: str  # "in" (from the device) or "out"
    conn: int
    data: str | bytes  # frames over 64 KiB are recorded as a size marker
    at: float


@dataclass
class Job:
    """One job of the device's queue, as flexiManage's job record."""

    id: int | str
    message: str
    params: Any
    state: str = "queued"  # queued | active | complete | failed
    error: str = ""
    reply: dict[str, Any] | None = None
    late_reply: dict[str, Any] | None = None
    sends: int = 0
    # params as JSON text, made once when queued (flexiManage keeps its queued jobs as
    # JSON): a benchmark's clock then measures the device, not this serialisation
    params_text: str | None = None


@dataclass
class _Conn:
    record: Handshake
    ws: ServerConnection
    ready: bool = False
    reconfig: str = ""  # the last reconfig seen on this connection
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class DeviceModel:
    """flexiManage's copy of the device configuration, as the jobs it queued left it."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    @staticmethod
    def _key(item: str, params: Any) -> tuple[str, str]:
        fields = _ITEM_KEYS.get(item, ())
        p = params if isinstance(params, Mapping) else {}
        return item, ":".join(str(p.get(f, "")) for f in fields)

    def record(self, task: Mapping[str, Any]) -> None:
        message = str(task.get("message", ""))
        params = task.get("params")
        if message in ("aggregated", "sync-device"):
            for sub in (params or {}).get("requests", []):
                self.record(sub)
            return
        if message == "start-router":
            for itf in (params or {}).get("interfaces", []):
                self.items[self._key("interface", itf)] = dict(itf)
            return
        verb, _, item = message.partition("-")
        if item not in SYNC_ORDER:
            return
        key = self._key(item, params)
        if verb == "add":
            self.items[key] = dict(params or {})
        elif verb == "remove":
            self.items.pop(key, None)
        elif verb == "modify" and key in self.items and isinstance(params, Mapping):
            stored = self.items[key]
            for k, v in params.items():
                if isinstance(stored.get(k), dict) and isinstance(v, dict):
                    stored[k] = {**stored[k], **v}
                else:
                    stored[k] = v

    def sync_requests(self) -> list[dict[str, Any]]:
        """The `requests` of a sync-device: the complete configuration in 6.1's order."""
        rank = {item: i for i, item in enumerate(SYNC_ORDER)}
        ordered = sorted(self.items.items(), key=lambda kv: (rank[kv[0][0]], kv[0][1]))
        return [{"entity": "agent", "message": f"add-{item}", "params": params}
                for (item, _), params in ordered]


class ControllerDouble:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        machine_id: str | None = None,
        device_token: str | None = None,
        host_id: str = "controller-double",
        ping_interval: float | None = 20.0,
        ping_misses: int = 4,
        job_timeout: float = 180.0,
        stats_interval: float | None = 30.0,
        info_on_connect: bool = True,
        tunnels: list[dict[str, Any]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_size: int = 64 * 1024 * 1024,
        auto_sync: bool = True,
        approved: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.machine_id = machine_id  # None: accept any
        self.device_token = device_token  # None: accept any
        self.host_id = host_id
        self.ping_interval = ping_interval
        self.ping_misses = ping_misses
        self.job_timeout = job_timeout
        self.stats_interval = stats_interval
        self.info_on_connect = info_on_connect
        self.tunnels = tunnels or []
        self.refuse_status: int | None = None  # e.g. 503: refuse every handshake
        self.approved = approved  # False: 403 like an unapproved device
        self.auto_sync = auto_sync
        self._ssl = ssl_context
        self._max_size = max_size
        self._server: Server | None = None
        self._conns: dict[ServerConnection, _Conn] = {}
        self._accepted: dict[ServerConnection, Handshake] = {}
        self._current: _Conn | None = None
        self._seq = itertools.count(1)
        self._jobids = itertools.count(1)
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[_Conn, asyncio.Future[dict[str, Any]]]] = {}
        self._late: dict[str, Job] = {}  # seq of a timed-out job -> its job
        self._active: str | None = None  # seq of the job being sent, while it waits
        self._job_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._sync_task: asyncio.Task[Any] | None = None
        self._http: ThreadingHTTPServer | None = None
        self.handshakes: list[Handshake] = []
        self.connections: list[Handshake] = []  # accepted ones
        self.frames: list[Frame] = []
        self.replies: list[dict[str, Any]] = []
        self.info_replies: list[dict[str, Any]] = []
        self.stats_replies: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.jobs: dict[int | str, Job] = {}
        self.model = DeviceModel()
        # the configuration hash chain and sync state of 5.1-5.2
        self.cfg_hash = ""
        self.sync_state = "synced"
        self.auto_sync_on = True
        self.trials = 0
        self.sync_jobs: list[Job] = []
        self.device_versions: dict[str, str] = {}
        self.tunnel_status: dict[str, dict[str, Any]] = {}
        self.reinfo_requests = 0

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'wss' if self._ssl else 'ws'}://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._current is not None

    @property
    def ready(self) -> bool:
        return self._current is not None and self._current.ready

    @property
    def unanswered_jobs(self) -> list[int | str]:
        """Jobs that failed with Send Timeout, newest last (listed in get-device-info)."""
        return [j.id for j in self.jobs.values()
                if j.state == "failed" and j.error == "Send Timeout"]

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,  # flexiManage-like pings are ours, see _pinger
            ssl=self._ssl,
            max_size=self._max_size,
            # flexiManage's `new WebSocket.Server({server, verifyClient})` (ws 6) leaves
            # permessage-deflate off, ws's server default since websockets/ws#1107: a
            # device's offer of it is declined and every frame travels uncompressed
            compression=None,
            server_header="controller-double",
            logger=logging.getLogger(__name__),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self, *, abort: bool = False) -> None:
        """Stop listening and drop every device (abort: no closing handshake, like a crash)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._server is None:
            return
        if abort:
            for conn in list(self._conns.values()):
                conn.ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> ControllerDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(abort=True)

    # --- waiting -----------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` holds (re-checked at every event); TimeoutError."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_connected(self, timeout: float, count: int = 1) -> None:
        """Wait for a live connection and at least `count` accepted connections in total."""
        await self.wait_for(lambda: self.connected and len(self.connections) >= count, timeout)

    async def wait_ready(self, timeout: float, count: int = 1) -> None:
        """Wait until the device answered get-device-info validly on connection `count`."""
        await self.wait_for(lambda: self.ready and len(self.connections) >= count, timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _violation(self, text: str) -> None:
        self.violations.append(text)
        logging.getLogger(__name__).warning("device reply violates flexiManage's rules: %s",
                                            text)

    # --- registration (routes/connect.js) ----------------------------------------

    def register(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a registration POST like flexiManage: (status, JSON body)."""
        status, error = validate_registration(form)
        if status == 200 and self.machine_id is not None and \
                form.get("machine_id", "").lower() != self.machine_id.lower():
            status, error = 407, f"Device {form.get('machine_id')} already exists"
        if status != 200:
            self._violation(f"registration {status}: {error}")
            return status, {"error": error}
        token = self.device_token or secrets.token_urlsafe(24)
        self.device_token = token
        self.machine_id = form["machine_id"]
        self.device_versions["agent"] = form.get("fwagent_version", "")
        return 200, {"deviceToken": token, "server": f"{self.host}:{self.port}"}

    def start_registration_server(self) -> int:
        """Serve ``POST /api/connect/register`` on another loopback port (websockets
        serves only GET); returns the port. Stopped by `stop()`."""
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                status, body = double.register(form) if self.path == "/api/connect/register" \
                    else (404, {"error": "not found"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self._http = server
        return int(server.server_address[1])

    # --- handshake ---------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        machine_id = parts.path.lstrip("/")
        query = parse_qs(parts.query)
        tokens = query.get("token", [])
        token_ok = self.device_token is None or tokens == [self.device_token]
        agent = request.headers.get("User-Agent", "")
        origin = request.headers.get("Origin", "")
        record = Handshake(
            id=next(self._ids),
            machine_id=machine_id,
            user_agent=agent,
            token_ok=token_ok,
            status=101,
            at=asyncio.get_running_loop().time(),
            origin=origin,
        )
        self.handshakes.append(record)
        m = _UA_RE.match(agent.split(" ")[0]) if agent.count("/") == 1 else None
        if self.refuse_status is not None:
            status, text = self.refuse_status, "refused by test"
        elif not origin.startswith(("http://", "https://")):
            # flexiManage: new URL(undefined + path) throws; the upgrade is never answered
            self._violation("handshake without an absolute Origin header")
            status, text = 400, "no Origin"
        elif any(len(v) > 1 for v in query.values()) or not tokens:
            status, text = 400, "bad query"
        elif not m or not 5 <= int(m.group(1)) <= 6:
            status, text = 400, "bad agent version"
        elif not machine_id or (self.machine_id is not None and machine_id != self.machine_id):
            status, text = 404, "unknown device"
        elif not token_ok:
            status, text = 404, "unknown device or token"
        elif not self.approved:
            status, text = 403, "not approved"
        else:
            self._accepted[connection] = record
            return None
        record.status = status
        record.closed_at = record.at
        asyncio.get_running_loop().create_task(self._notify())
        return connection.respond(status, text + "\n")

    # --- connection --------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._accepted.pop(ws)
        assert ws.response is not None
        record.extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        conn = _Conn(record=record, ws=ws)
        old = self._current
        if old is not None:  # a new connection replaces the old one (3.3)
            old.ws.transport.abort()
        self._conns[ws] = conn
        self._current = conn
        self.connections.append(record)
        self.tunnel_status.clear()  # status memory is dropped on reconnect (10.4)
        if self.ping_interval:
            conn.tasks.append(asyncio.create_task(self._pinger(conn, self.ping_interval)))
        if self.stats_interval:
            conn.tasks.append(asyncio.create_task(self._stats_poller(conn, self.stats_interval)))
        if self.info_on_connect:
            conn.tasks.append(asyncio.create_task(self._initial_info(conn)))
        else:
            conn.ready = True
        await self._notify()
        try:
            async for data in ws:
                self._record("in", conn, data)
                self._on_reply(data)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            for task in conn.tasks:
                task.cancel()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
            record.closed_at = asyncio.get_running_loop().time()
            self._conns.pop(ws, None)
            if self._current is conn:
                self._current = None
            # replies are matched by seq, not by socket: pending requests keep waiting
            # for their timeout (a reply on the next connection still counts)
            await self._notify()

    def _record(self, direction: str, conn: _Conn, data: str | bytes) -> None:
        kept: str | bytes = data if len(data) <= _MAX_RECORDED else f"<{len(data)} bytes>"
        loop = asyncio.get_running_loop()
        self.frames.append(Frame(direction, conn.record.id, kept, loop.time()))

    def _on_reply(self, data: str | bytes) -> None:
        try:
            doc = json.loads(data)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        self.replies.append(doc)
        seq = doc.get("seq")
        if isinstance(seq, str) and seq in self._pending:
            _, fut = self._pending.pop(seq)
            if not fut.done():
                fut.set_result(doc)
        elif isinstance(seq, str) and seq in self._late:
            job = self._late.pop(seq)
            job.late_reply = doc  # recorded; flexiManage never re-sends the job

    async def _pinger(self, conn: _Conn, interval: float) -> None:
        misses = 0
        while True:
            await asyncio.sleep(interval)
            try:
                pong = await conn.ws.ping()
                await asyncio.wait_for(pong, interval)
                misses = 0
            except TimeoutError:
                misses += 1
                if misses >= self.ping_misses:
                    conn.ws.transport.abort()  # flexiManage drops the device
                    return
            except ConnectionClosed:
                return

    async def _stats_poller(self, conn: _Conn, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await self._poll_on(conn, interval)

    async def _initial_info(self, conn: _Conn) -> None:
        params = {"tunnels": self.tunnels, "jobs": self.unanswered_jobs[-MAX_INFO_JOBS:]}
        with contextlib.suppress(TimeoutError, ConnectionError):
            reply = await self._request_on(conn, "get-device-info", params, "", self.job_timeout)
            self.info_replies.append(reply)
            if self._accept_info(reply):
                conn.ready = True
            else:
                conn.ws.transport.abort()  # flexiManage disconnects the device (3.3)
            await self._notify()

    def _accept_info(self, reply: dict[str, Any]) -> bool:
        """flexiManage's processing of a get-device-info reply; False = disconnect."""
        problems = validate_reply(reply)
        msg = reply.get("msg") or {}
        if msg.get("ok") != 1:
            problems.append("get-device-info answered ok != 1")
        else:
            problems += validate_device_info(msg.get("message"))
        if problems:
            for p in problems:
                self._violation(f"get-device-info: {p}")
            return False
        body = msg["message"]
        if self._current is not None and body.get("reconfig"):
            self._current.reconfig = body["reconfig"]
        self.device_versions = {k: v["version"] for k, v in body["components"].items()}
        self.device_versions["device"] = body["device"]
        for entry in body.get("jobs", []):
            job = self.jobs.get(entry["job_id"]) or self.jobs.get(_as_int(entry["job_id"]))
            if job is not None and job.state == "failed" and entry["state"] == "complete":
                job.state, job.error = "complete", ""
        return True

    # --- stats and the sync state machine ---------------------------------------

    async def poll_stats(self, timeout: float | None = None) -> dict[str, Any]:
        """One stats poll, processed like flexiManage's (state, tunnels, sync check)."""
        return await self._poll_on(self._live(), timeout or self.job_timeout)

    async def _poll_on(self, conn: _Conn, timeout: float) -> dict[str, Any]:
        reply = await self._request_on(conn, "get-device-stats", None, "", timeout)
        self.stats_replies.append(reply)
        self._process_stats(reply)
        return reply

    def _process_stats(self, reply: dict[str, Any]) -> None:
        problems = validate_reply(reply)
        msg = reply.get("msg") or {}
        if msg.get("ok") != 1:
            return  # device state becomes pending
        problems += validate_stats(msg.get("message"))
        for p in problems:
            self._violation(f"get-device-stats: {p}")
        entries = msg.get("message")
        if problems or not entries:
            return  # the whole reply is discarded / an empty array skips the checks
        for tid, status in (entries[-1].get("tunnel_stats") or {}).items():
            self.tunnel_status[str(tid)] = dict(status)
        self._check_sync(str(msg.get("router-cfg-hash", "")), may_queue=True)
        reconfig = entries[-1].get("reconfig")
        conn = self._current
        if reconfig and conn is not None and reconfig != conn.reconfig:
            # changed interface facts: flexiManage asks for get-device-info again (9.1)
            conn.reconfig = reconfig
            self.reinfo_requests += 1
            conn.tasks.append(asyncio.get_running_loop().create_task(self._reinfo(conn)))

    async def _reinfo(self, conn: _Conn) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            reply = await self._request_on(conn, "get-device-info",
                                           {"tunnels": [], "jobs": []}, "", self.job_timeout)
            self.info_replies.append(reply)
            if not self._accept_info(reply):
                conn.ws.transport.abort()
            await self._notify()

    def _check_sync(self, device_hash: str, *, may_queue: bool) -> None:
        if device_hash == self.cfg_hash:
            self.sync_state, self.trials = "synced", 0
            return
        if not self.auto_sync_on:
            self.sync_state = "not-synced"
            return
        if self.trials >= MAX_SYNC_TRIALS:
            self.auto_sync_on = False
            self.sync_state = "not-synced"
            return
        self.sync_state = "syncing"
        busy = self._job_lock.locked() or (self._sync_task is not None
                                           and not self._sync_task.done())
        if may_queue and self.auto_sync and not busy:
            self.trials += 1
            self._sync_task = asyncio.get_running_loop().create_task(self._auto_sync())

    def sync_device_params(self) -> dict[str, Any]:
        """The params of a sync-device as flexiManage builds it (6.1): the device's whole
        configuration, always with an add-ospf, with add-vxlan-config for agents >= 6.2."""
        requests = self.model.sync_requests()
        messages = {r["message"] for r in requests}
        agent = tuple(int(p) for p in self.device_versions.get("agent", "6.3").split(".")[:2])
        defaults = []
        if agent >= (6, 2) and "add-vxlan-config" not in messages:
            defaults.append({"entity": "agent", "message": "add-vxlan-config",
                             "params": {"port": "4789"}})
        if "add-ospf" not in messages:
            defaults.append({"entity": "agent", "message": "add-ospf",
                             "params": {"custom": [], "redistributeBgp": False}})
        return {"requests": defaults + requests}

    async def _auto_sync(self) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            await self.send_job("sync-device", self.sync_device_params())

    def press_sync(self) -> None:
        """The admin's Sync button: trials and auto-sync reset."""
        self.trials, self.auto_sync_on = 0, True

    # --- sending -----------------------------------------------------------------

    def new_seq(self) -> str:
        return f"{next(self._seq)}:{''.join(secrets.choice(_SEQ_ALPHABET) for _ in range(8))}"

    def _live(self) -> _Conn:
        if self._current is None:
            raise ConnectionError("device not connected")
        return self._current

    async def _send(self, conn: _Conn, data: str | bytes) -> None:
        self._record("out", conn, data)
        await conn.ws.send(data)

    async def _request_on(
        self, conn: _Conn, message: str, params: Any, jobid: int | str, timeout: float,
        job: Job | None = None,
    ) -> dict[str, Any]:
        seq = self.new_seq()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = (conn, fut)
        params_text = job.params_text if job is not None else None
        if params_text is None and params is not None:
            params_text = json.dumps(params)
        if job is not None:
            self._active = seq
        try:
            await self._send(conn, envelope_text(seq, self.host_id, message, params_text, jobid))
            async with asyncio.timeout(timeout):
                return await fut
        except ConnectionClosed:
            raise ConnectionError("device disconnected") from None
        except TimeoutError:
            if job is not None:
                self._late[seq] = job
            raise
        finally:
            self._pending.pop(seq, None)
            if self._active == seq:
                self._active = None

    def queue(self, message: str, params: Any = None, jobid: int | str | None = None) -> Job:
        """Queue a job like flexiManage's addJob: the hash chain advances now (5.1)."""
        jid = next(self._jobids) if jobid is None else jobid
        job = Job(jid, message, params, params_text=None if params is None else json.dumps(params))
        self.jobs[jid] = job
        if message != "sync-device":
            task: dict[str, Any] = {"entity": "agent", "message": message}
            if params is not None:
                task["params"] = params
            self.cfg_hash = next_hash(self.cfg_hash, task)
            self.model.record(task)
            self.auto_sync_on, self.trials = True, 0
            if self.sync_state != "not-synced":
                self.sync_state = "syncing"
        else:
            self.sync_jobs.append(job)
        return job

    async def send_job(
        self, message: str, params: Any = None, jobid: int | str | None = None
    ) -> dict[str, Any]:
        """Queue one job and deliver it (one at a time, only to a ready device); return
        the device's reply. Raises TimeoutError after `job_timeout` ("Send Timeout"; the
        job is never re-sent) and ConnectionError if the device is not connected."""
        return await self.deliver(self.queue(message, params, jobid))

    async def deliver(self, job: Job) -> dict[str, Any]:
        """Deliver a job `queue` made (the controller's own bookkeeping, e.g. its hash
        chain, is then done before the clock of a benchmark starts); as `send_job`."""
        message, params = job.message, job.params
        async with self._job_lock:
            conn = self._live()
            if not conn.ready:
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda: self.ready, self.job_timeout)
                conn = self._live()
            job.state, job.sends = "active", job.sends + 1
            try:
                reply = await self._request_on(conn, message, params, job.id,
                                               self.job_timeout, job)
            except TimeoutError:
                job.state, job.error = "failed", "Send Timeout"
                raise
            except ConnectionError:
                job.state, job.error = "failed", "Socket Connection Error"
                raise
            job.reply = reply
            problems = validate_reply(reply)
            for p in problems:
                self._violation(f"{message} reply: {p}")
            msg = reply.get("msg") or {}
            if msg.get("ok") == 1:
                job.state = "complete"
                if message == "sync-device":
                    self.cfg_hash = ""
                self._check_sync(str(msg.get("router-cfg-hash", "")), may_queue=False)
            else:
                job.state, job.error = "failed", json.dumps(msg.get("message"))
            await self._notify()
            return reply

    def expire_active_job(self) -> bool:
        """The job being sent fails now with Send Timeout, as if its timer had run out
        (a fault matrix stands for a 180 s outage without waiting for it); False if no
        job is waiting for its reply. Its reply, if it comes later, is only recorded."""
        entry = self._pending.get(self._active) if self._active is not None else None
        if entry is None or entry[1].done():
            return False
        entry[1].set_exception(TimeoutError())
        return True

    async def request(
        self, message: str, params: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A direct message (`jobid: ""`), answered even while a job runs. Replies to
        get-device-info / get-device-stats are validated like flexiManage's."""
        reply = await self._request_on(
            self._live(), message, params, "", timeout or self.job_timeout
        )
        msg = reply.get("msg") or {}
        if message == "get-device-info" and msg.get("ok") == 1:
            for p in validate_device_info(msg.get("message")):
                self._violation(f"get-device-info: {p}")
        elif message == "get-device-stats":
            self.stats_replies.append(reply)
            self._process_stats(reply)
        elif message == "get-bgp-status" and msg.get("ok") == 1:
            for p in validate_bgp(msg.get("message")):
                self._violation(f"get-bgp-status: {p}")
        return reply

    async def direct(self, message: str, params: Any = None) -> dict[str, Any]:
        """A device-tab request as flexiManage sends it (`jobid: ""`) with its timeout
        (DevicesService.js); returns the reply's `msg`. flexiManage counts only the
        integer `ok: 1` as success; anything else is a failure, as here."""
        timeout = DIRECT_TIMEOUTS.get(message, DIRECT_MESSAGE_TIMEOUT)
        if message == "get-device-packet-traces":
            # `timeout + directMessageTimeout`: seconds added to milliseconds
            window = (params or {}).get("timeout") or 5
            timeout = (window + DIRECT_MESSAGE_TIMEOUT * 1000) / 1000
        reply = await self.request(message, params, timeout)
        msg = reply.get("msg")
        if not isinstance(msg, dict) or msg.get("ok") not in (0, 1) or isinstance(
                msg.get("ok"), bool):
            raise ValueError(f"{message}: reply without an integer ok: {reply!r:.200}")
        return msg

    async def send_raw(self, data: str | bytes) -> None:
        """Send any frame as is (hostile-input tests)."""
        await self._send(self._live(), data)

    async def go_silent(self) -> None:
        """Stop talking on the live connection without closing it: no pings, no
        stats, and incoming bytes are no longer read (so pings go unanswered)."""
        conn = self._live()
        for task in conn.tasks:
            task.cancel()
        conn.ws.transport.pause_reading()

    async def drop(self) -> None:
        """Abort the live connection (TCP reset-like, no closing handshake)."""
        self._live().ws.transport.abort()


def _as_int(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="flexiManage-like controller double")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--machine-id", default=None)
    parser.add_argument("--token", default=None, help="expected device token (default: any)")
    parser.add_argument("--stats-interval", type=float, default=30.0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument(
        "--job",
        action="append",
        default=[],
        help="JSON file {message, params} sent as a job after connecting",
    )
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> None:
    ctl = ControllerDouble(
        host=args.host,
        port=args.port,
        machine_id=args.machine_id,
        device_token=args.token,
        stats_interval=args.stats_interval,
        ping_interval=args.ping_interval,
    )
    async with ctl:
        print(f"controller double listening on {ctl.url}", flush=True)
        await ctl.wait_for(lambda: ctl.ready, 365 * 86400)
        for job in jobs:
            reply = await ctl.send_job(job["message"], job.get("params"))
            print(f"job reply: {json.dumps(reply)}", flush=True)
        seen = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await ctl.wait_for(lambda n=seen: len(ctl.frames) > n, 3600)  # type: ignore[misc]
            for frame in ctl.frames[seen:]:
                print(f"{frame.direction} [{frame.conn}] {frame.data!s:.2000}", flush=True)
            seen = len(ctl.frames)


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        args = _parse_args(sys.argv[1:] if argv is None else argv)
        jobs = [json.loads(Path(path).read_text()) for path in args.job]
        asyncio.run(_main(args, jobs))


if __name__ == "__main__":
    main()
