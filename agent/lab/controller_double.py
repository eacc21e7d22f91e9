"""A flexiManage-like controller for tests and demos (never imported by product code).

A real websockets server that speaks the device protocol the way flexiManage
does: it authenticates ``/<machineId>?token=...`` (or refuses the handshake
with a configurable HTTP status), pings every ``ping_interval`` and drops the
device after ``ping_misses`` unanswered pings, sends ``get-device-info`` with
``{"tunnels": [...], "jobs": [unanswered job ids]}`` right after connecting,
runs one job at a time with a ``job_timeout`` ("Send Timeout"), polls
``get-device-stats`` every ``stats_interval``, and numbers requests
``"<n>:<random8>"`` with a ``hostId``.

Scripting from tests::

    async with ControllerDouble(machine_id="m1", device_token="t") as ctl:
        await ctl.wait_connected(5)
        reply = await ctl.send_job("add-tunnel", {...})
        stats = await ctl.request("get-device-stats")

Every frame in both directions is kept in `frames`; replies in `replies`.
Run ``python -m agent.lab.controller_double --help`` for a standalone server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import ssl
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

_UA_RE = re.compile(r"^fwagent/(\d+)\.(\d+)\.(\d+)$")
_SEQ_ALPHABET = string.ascii_letters + string.digits
_MAX_RECORDED = 64 * 1024
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
    closed_at: float | None = None


@dataclass(frozen=True)
class Frame:
    direction: str  # "in" (from the device) or "out"
    conn: int
    data: str | bytes  # frames over 64 KiB are recorded as a size marker
    at: float


@dataclass
class _Conn:
    record: Handshake
    ws: ServerConnection
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


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
        self.refuse_status: int | None = None  # e.g. 403: refuse every handshake
        self.min_agent_major = 5
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
        self._job_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self.handshakes: list[Handshake] = []
        self.connections: list[Handshake] = []  # accepted ones
        self.frames: list[Frame] = []
        self.replies: list[dict[str, Any]] = []
        self.info_replies: list[dict[str, Any]] = []
        self.stats_replies: list[dict[str, Any]] = []
        self.unanswered_jobs: list[int | str] = []

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'wss' if self._ssl else 'ws'}://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._current is not None

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,  # flexiManage-like pings are ours, see _pinger
            ssl=self._ssl,
            max_size=self._max_size,
            server_header="controller-double",
            logger=logging.getLogger(__name__),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self, *, abort: bool = False) -> None:
        """Stop listening and drop every device (abort: no closing handshake, like a crash)."""
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

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- handshake ---------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        machine_id = parts.path.lstrip("/")
        tokens = parse_qs(parts.query).get("token", [])
        token_ok = self.device_token is None or tokens == [self.device_token]
        agent = request.headers.get("User-Agent", "")
        record = Handshake(
            id=next(self._ids),
            machine_id=machine_id,
            user_agent=agent,
            token_ok=token_ok,
            status=101,
            at=asyncio.get_running_loop().time(),
        )
        self.handshakes.append(record)
        m = _UA_RE.match(agent)
        if self.refuse_status is not None:
            status, text = self.refuse_status, "refused by test"
        elif not m or int(m.group(1)) < self.min_agent_major:
            status, text = 400, "bad agent version"
        elif not machine_id or (self.machine_id is not None and machine_id != self.machine_id):
            status, text = 404, "unknown device"
        elif not token_ok:
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
        conn = _Conn(record=record, ws=ws)
        self._conns[ws] = conn
        self._current = conn
        self.connections.append(record)
        if self.ping_interval:
            conn.tasks.append(asyncio.create_task(self._pinger(conn, self.ping_interval)))
        if self.stats_interval:
            conn.tasks.append(asyncio.create_task(self._stats_poller(conn, self.stats_interval)))
        if self.info_on_connect:
            conn.tasks.append(asyncio.create_task(self._initial_info(conn)))
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
            for seq, (owner, fut) in list(self._pending.items()):
                if owner is conn and not fut.done():
                    fut.set_exception(ConnectionError("device disconnected"))
                    del self._pending[seq]
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
                reply = await self._request_on(conn, "get-device-stats", None, "", interval)
                self.stats_replies.append(reply)

    async def _initial_info(self, conn: _Conn) -> None:
        params = {"tunnels": self.tunnels, "jobs": list(self.unanswered_jobs)}
        with contextlib.suppress(TimeoutError, ConnectionError):
            reply = await self._request_on(conn, "get-device-info", params, "", self.job_timeout)
            self.info_replies.append(reply)
            msg = reply.get("msg", {})
            for entry in (msg.get("message") or {}).get("jobs", []) if msg.get("ok") == 1 else []:
                if isinstance(entry, dict) and entry.get("state") == "done":
                    with contextlib.suppress(ValueError):
                        self.unanswered_jobs.remove(entry.get("id"))  # type: ignore[arg-type]
            await self._notify()

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
        self, conn: _Conn, message: str, params: Any, jobid: int | str, timeout: float
    ) -> dict[str, Any]:
        seq = self.new_seq()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = (conn, fut)
        msg: dict[str, Any] = {"entity": "agent", "message": message}
        if params is not None:
            msg["params"] = params
        envelope = {"seq": seq, "hostId": self.host_id, "msg": msg, "jobid": jobid}
        try:
            await self._send(conn, json.dumps(envelope))
            async with asyncio.timeout(timeout):
                return await fut
        except ConnectionClosed:
            raise ConnectionError("device disconnected") from None
        finally:
            self._pending.pop(seq, None)

    async def send_job(
        self, message: str, params: Any = None, jobid: int | str | None = None
    ) -> dict[str, Any]:
        """Send one job (one at a time, like flexiManage) and return the device's reply.

        Raises TimeoutError after `job_timeout` ("Send Timeout") and ConnectionError
        if the device is not connected or drops; the job then stays in
        `unanswered_jobs` and is listed in the next connection's get-device-info.
        """
        async with self._job_lock:
            conn = self._live()
            jid = next(self._jobids) if jobid is None else jobid
            if jid not in self.unanswered_jobs:
                self.unanswered_jobs.append(jid)
            reply = await self._request_on(conn, message, params, jid, self.job_timeout)
            with contextlib.suppress(ValueError):
                self.unanswered_jobs.remove(jid)
            return reply

    async def request(
        self, message: str, params: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A non-job request (`jobid: ""`), answered even while a job runs."""
        return await self._request_on(
            self._live(), message, params, "", timeout or self.job_timeout
        )

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
        await ctl.wait_for(lambda: ctl.connected, 365 * 86400)
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
