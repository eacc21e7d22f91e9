"""The websocket device session with a flexiManage-compatible controller.

One `LinkSession` per agent. `run()` keeps a connection up forever:

- connect to ``wss://<server>/<machineId>?token=...`` with ``User-Agent:
  fwagent/<controller.fwagent_version>``, TLS verified (system CAs +
  ``controller.ca_file``), ws:// only when ``allow_insecure`` (enforced by the
  configuration);
- an ``Origin: https://<controller host>`` header (flexiManage builds the request
  URL from it; without one its handshake never answers);
- retry timing as flexiagent's: HTTP 403 (not approved yet) and local errors
  (DNS, TCP, TLS, timeout) are retried after ``controller.retry_quick_min..max``
  seconds (5-15), every other handshake status after ``retry_slow_min..max``
  (50-70); a connection that was up and closed is reopened after the short
  capped backoff (``backoff_min``/``backoff_max``, full jitter);
- a connection with no inbound byte (data, ping or pong) for
  ``controller.silence_timeout`` is dead and is aborted; the agent pings every
  ``controller.ping_interval`` so a live controller always produces pongs;
- jobs (every message except get-device-info/get-device-stats and the direct
  messages) run one at a time in arrival order on a worker that outlives
  connections; the two queries are answered concurrently, also while a job runs;
  direct messages (`jobid: ""`, `handler.DIRECT_MESSAGES`) likewise, in slots of
  their own so a slow command never delays the stats;
- flexiManage never re-sends a job it delivered: a job whose connection died
  still runs, and its reply goes out on the next connection (flexiManage
  matches replies by seq, not socket, while the job's 180 s timer runs; after
  that it lists the job id in `get-device-info` and the journal entry answers
  ``state: complete|failed``). A job's outcome is recorded in the `Journal`
  (fsync'd) once its reply is out (hashing a large job's content is not on the
  reply's path), and until then the job counts as running; a job id already
  recorded with the same content is answered from the journal without running
  it again.

Nothing received is trusted: malformed frames get an ``ok: 0`` reply when they
carry a seq, are logged otherwise, and never reach the handler. A frame larger
than ``controller.max_frame_size`` makes websockets close the connection with
1009 (RFC 6455 leaves no other option); the session reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Origin

from agent.config import ControllerConfig
from agent.link.backoff import Backoff
from agent.link.envelope import Rejected, Request, encode_reply, info_job_ids, parse_frame
from agent.link.handler import (
    DIRECT_MESSAGES,
    GET_DEVICE_STATS,
    DirectHandler,
    JobHandler,
    Outcome,
    reply_entity,
)
from agent.link.ident import (
    read_token,
    redact,
    redacted_websocket_url,
    resolve_machine_id,
    ssl_context,
    user_agent,
    websocket_url,
)
from agent.link.journal import Journal, received_at_text
from agent.secret import Secret

log = structlog.get_logger(__name__)

# Handshake statuses, worded for the operator (flexiManage: 400 bad URL/version,
# 402 subscription, 403 not approved, 404 unknown device, 500 duplicate device).
REFUSALS: dict[int, str] = {
    400: "bad request (URL or agent version refused)",
    401: "device token rejected",
    402: "subscription or device quota exhausted",
    403: "not approved (approve the device in the controller)",
    404: "unknown device (machine id not registered)",
    500: "controller error (e.g. more than one device with this machine id)",
}
QUICK_RETRY_STATUSES = frozenset({403})  # approval is expected soon
MAX_QUEUED_JOBS = 256
MAX_HELD_REPLIES = 256
HELD_REPLY_TTL = 180.0  # flexiManage's job timer: a later reply is useless
# issue 15: the queue is bounded in bytes (30 queued 6.9 MB frames took 1 GB); a job
# is always admitted into an empty queue, so one frame of max_frame_size always fits
MAX_QUEUED_BYTES = 16 * 1024 * 1024
MAX_CONCURRENT_QUERIES = 4
MAX_CONCURRENT_DIRECT = 4  # direct messages running at once (own slots: stats never wait)
MAX_DIRECT_IN_FLIGHT = 16  # running + waiting for a slot; more are refused at once


class _RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """websockets' own logger, with the token removed (it logs request paths at debug)."""

    def __init__(self, logger: logging.Logger, token: Secret) -> None:
        super().__init__(logger, {})
        self._token = token

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.pop("exc_info", None)  # tracebacks could carry the URL
            self.logger.log(level, redact(text, self._token), **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class _WatchedConnection(ClientConnection):
    """Stamps every inbound byte so the silence watchdog sees pings and pongs too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_rx = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        super().data_received(data)


@dataclass
class LinkCounters:
    """What the session did, for the admin socket, metrics and tests."""

    attempts: int = 0
    connections: int = 0
    refusals: int = 0
    silence_drops: int = 0
    rejected_frames: int = 0
    jobs_run: int = 0
    jobs_replayed: int = 0
    replies_held: int = 0  # job replies sent on a later connection
    last_refusal: int | None = None


@dataclass(frozen=True)
class _QueuedJob:
    ws: ClientConnection
    request: Request
    size: int = 0  # bytes of its frame


class LinkSession:
    """The device side of the controller websocket. Create once, `await run()`."""

    def __init__(
        self,
        cfg: ControllerConfig,
        handler: JobHandler,
        journal: Journal,
        *,
        rng: random.Random | None = None,
        direct: DirectHandler | None = None,
        job_scope: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        """`job_scope`: entered while each job runs, is answered and journaled (the
        daemon pauses the cyclic garbage collector there and holds the monitor's
        follow-up of the job's changes)."""
        self._cfg = cfg
        self._job_scope = job_scope
        self._direct = direct
        self._direct_slots = asyncio.Semaphore(MAX_CONCURRENT_DIRECT)
        self._direct_in_flight = 0
        self._handler = handler
        self._journal = journal
        self._rng = rng or random.Random()
        self._machine_id = resolve_machine_id(cfg)
        self._ssl = ssl_context(cfg)
        self._jobs: asyncio.Queue[_QueuedJob] = asyncio.Queue(MAX_QUEUED_JOBS)
        self._pending: dict[str, int] = {}  # job ids queued or running -> count
        self._pending_names: dict[str, str] = {}  # job id -> message, while pending
        self._queued_bytes = 0
        self._query_slots = asyncio.Semaphore(MAX_CONCURRENT_QUERIES)
        self._connected = asyncio.Event()
        self._live: ClientConnection | None = None
        self._held: list[tuple[float, str, Outcome, str]] = []  # replies waiting for a connection
        self.counters = LinkCounters()
        self.url = redacted_websocket_url(cfg, self._machine_id)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def run(self) -> None:
        """Run until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._job_worker(), name="link-job-worker")
            await self._connect_loop()

    # --- connection management -------------------------------------------------

    async def _connect_loop(self) -> None:
        backoff = Backoff(self._cfg.backoff_min, self._cfg.backoff_max, self._rng)
        while True:
            delay = await self._attempt(backoff)
            await asyncio.sleep(delay)

    def _quick_retry(self) -> float:
        return self._rng.uniform(self._cfg.retry_quick_min, self._cfg.retry_quick_max)

    def _slow_retry(self) -> float:
        return self._rng.uniform(self._cfg.retry_slow_min, self._cfg.retry_slow_max)

    def _origin(self) -> str:
        if self._cfg.origin:
            return self._cfg.origin
        scheme, _, rest = self._cfg.url.partition("://")
        host = rest.split("/", 1)[0]
        return f"{'https' if scheme in ('wss', 'https') else 'http'}://{host}"

    async def _attempt(self, backoff: Backoff) -> float:
        """One connection attempt (and its whole life); returns the delay before the next."""
        cfg = self._cfg
        token = read_token(cfg)
        if token is None:
            log.error(
                "no device token: register the device first (peering-agent register)",
                token_file=str(cfg.token_file),
            )
            return self._quick_retry()
        self.counters.attempts += 1
        log.info("connecting to controller", url=self.url)
        try:
            ws = await connect(
                websocket_url(cfg, self._machine_id, token),
                user_agent_header=user_agent(cfg),
                origin=Origin(self._origin()),
                ssl=self._ssl,
                proxy=None,
                open_timeout=cfg.connect_timeout,
                ping_interval=cfg.ping_interval,
                ping_timeout=None,  # the silence watchdog decides
                close_timeout=cfg.close_timeout,
                max_size=cfg.max_frame_size,
                create_connection=_WatchedConnection,
                logger=_RedactingLogger(logging.getLogger("agent.link.websockets"), token),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.counters.refusals += 1
            self.counters.last_refusal = status
            delay = self._quick_retry() if status in QUICK_RETRY_STATUSES else self._slow_retry()
            reason = REFUSALS.get(status, "handshake refused")
            log.error(
                f"controller refused the device: {status} {reason}; "
                f"next attempt in {delay:.0f} s",
                status=status,
                url=self.url,
            )
            backoff.reset()
            return delay
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            delay = self._quick_retry()
            log.warning(
                "cannot connect to controller",
                url=self.url,
                error=redact(f"{type(exc).__name__}: {exc}", token),
                retry_in=round(delay, 2),
            )
            return delay
        assert isinstance(ws, _WatchedConnection)
        started = asyncio.get_running_loop().time()
        self.counters.connections += 1
        self._live = ws
        self._connected.set()
        log.info("connected to controller", url=self.url)
        await self._flush_held(ws)
        try:
            await self._serve(ws)
        finally:
            self._connected.clear()
            self._live = None
            if ws.state is not State.CLOSED:
                await ws.close()  # bounded by close_timeout; aborts the TCP connection after it
        # A connection that stayed up for a while proves the path works again.
        if asyncio.get_running_loop().time() - started >= cfg.backoff_max:
            backoff.reset()
        delay = backoff.next_delay()
        log.info("reconnecting to controller", retry_in=round(delay, 2))
        return delay

    async def _serve(self, ws: _WatchedConnection) -> None:
        queries: set[asyncio.Task[None]] = set()
        watchdog = asyncio.create_task(self._watchdog(ws), name="link-watchdog")
        try:
            await self._read(ws, queries)
        finally:
            watchdog.cancel()
            for task in queries:
                task.cancel()
            await asyncio.gather(watchdog, *queries, return_exceptions=True)

    async def _watchdog(self, ws: _WatchedConnection) -> None:
        limit = self._cfg.silence_timeout
        while True:
            idle = ws.loop.time() - ws.last_rx
            if idle >= limit:
                self.counters.silence_drops += 1
                log.warning(
                    f"controller silent for {idle:.1f} s (limit {limit:g} s): "
                    "treating the connection as dead"
                )
                ws.transport.abort()
                return
            await asyncio.sleep(limit - idle)

    async def _read(self, ws: _WatchedConnection, queries: set[asyncio.Task[None]]) -> None:
        try:
            async for frame in ws:
                await self._on_frame(ws, frame, queries)
                del frame  # a job frame can be megabytes: do not keep it until the next one
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                log.error(
                    "controller sent a message larger than controller.max_frame_size: "
                    "connection closed (1009)",
                    max_frame_size=self._cfg.max_frame_size,
                )
            else:
                log.warning("controller connection lost", reason=str(exc))
            return
        log.info("controller closed the connection", code=ws.close_code)

    async def _on_frame(
        self, ws: _WatchedConnection, frame: str | bytes, queries: set[asyncio.Task[None]]
    ) -> None:
        parsed = parse_frame(frame)
        if isinstance(parsed, Rejected):
            self.counters.rejected_frames += 1
            log.warning(
                "rejected a frame from the controller",
                reason=parsed.reason,
                seq=parsed.seq,
                size=len(frame),
            )
            if parsed.seq is not None:
                await self._send(ws, parsed.seq, Outcome(False, parsed.reason))
            return
        if parsed.is_job:
            size = len(frame)
            try:
                if self._jobs.qsize() and self._queued_bytes + size > MAX_QUEUED_BYTES:
                    raise asyncio.QueueFull
                self._jobs.put_nowait(_QueuedJob(ws, parsed, size))
            except asyncio.QueueFull:
                log.error("job queue full, refusing job", jobid=parsed.jobid,
                          queued=self._jobs.qsize(), queued_bytes=self._queued_bytes)
                await self._send(ws, parsed.seq, Outcome(False, "device job queue is full"))
                return
            self._queued_bytes += size
            self._pending[parsed.jobid] = self._pending.get(parsed.jobid, 0) + 1
            self._pending_names[parsed.jobid] = parsed.message
            return
        if parsed.is_direct:
            await self._start_direct(ws, parsed, queries)
            return
        if self._query_slots.locked():
            # issue 15: never stop reading (the controller's pings and replies would
            # starve behind us): a query beyond the slots is answered at once
            await self._send(ws, parsed.seq, Outcome(
                False, f"device busy: {MAX_CONCURRENT_QUERIES} queries in progress; retry"))
            return
        await self._query_slots.acquire()
        task = asyncio.create_task(self._answer_query(ws, parsed))
        queries.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            queries.discard(t)
            self._query_slots.release()

        task.add_done_callback(_done)

    # --- replies ---------------------------------------------------------------

    def _cfg_hash(self) -> str:
        try:
            return str(self._handler.cfg_hash())
        except Exception:
            log.exception("handler.cfg_hash failed")
            return ""

    async def _send(self, ws: ClientConnection, seq: str, outcome: Outcome,
                    entity: str = "agentReply") -> bool:
        cfg_hash = self._cfg_hash()
        try:
            text = encode_reply(seq, outcome.ok, outcome.message, cfg_hash, entity)
        except (TypeError, ValueError):
            log.error("reply is not JSON-serialisable", seq=seq)
            text = encode_reply(
                seq, False, "internal error: the reply could not be encoded", cfg_hash
            )
        try:
            await ws.send(text)
        except ConnectionClosed:
            log.warning("reply not delivered: connection closed", seq=seq)
            return False
        return True

    # --- queries ---------------------------------------------------------------

    async def _answer_query(self, ws: ClientConnection, req: Request) -> None:
        timeout = self._cfg.query_timeout
        try:
            async with asyncio.timeout(timeout):
                if req.message == GET_DEVICE_STATS:
                    body: Any = await self._handler.device_stats()
                else:
                    params = req.params if isinstance(req.params, dict) else {}
                    body = dict(await self._handler.device_info(params))
                    body["jobs"] = await self._job_states(info_job_ids(req.params) or [])
            outcome = Outcome(True, body)
        except TimeoutError:
            log.error("query timed out", message=req.message, timeout=timeout)
            outcome = Outcome(False, f"{req.message} did not complete within {timeout:g} s")
        except Exception as exc:
            log.exception("query handler failed", message=req.message)
            outcome = Outcome(
                False, f"internal error while answering {req.message} ({type(exc).__name__})"
            )
        await self._send(ws, req.seq, outcome)

    # --- direct messages (issue 17) ----------------------------------------------

    async def _start_direct(
        self, ws: ClientConnection, req: Request, queries: set[asyncio.Task[None]]
    ) -> None:
        """Answer a direct message in a task of its own; never blocks the reader."""
        if self._direct_in_flight >= MAX_DIRECT_IN_FLIGHT:
            await self._send(ws, req.seq, Outcome(
                False, f"device busy: {MAX_DIRECT_IN_FLIGHT} diagnostics requests in progress"),
                reply_entity(req.message))
            return
        self._direct_in_flight += 1
        task = asyncio.create_task(self._answer_direct(ws, req))
        queries.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            queries.discard(t)
            self._direct_in_flight -= 1

        task.add_done_callback(_done)

    async def _direct_outcome(self, req: Request) -> Outcome:
        if self._direct is None:
            return Outcome(False, f"{req.message} is not supported by this device")
        async with asyncio.timeout(self._cfg.job_timeout):  # a safety net: handlers bound
            return await self._direct.answer(req.message, req.params)  # themselves

    async def _answer_direct(self, ws: ClientConnection, req: Request) -> None:
        async with self._direct_slots:
            try:
                outcome = await self._direct_outcome(req)
            except Exception as exc:
                log.exception("direct message failed", message=req.message)
                outcome = Outcome(False, f"internal error while answering {req.message} "
                                         f"({type(exc).__name__})")
        await self._send(ws, req.seq, outcome, reply_entity(req.message))

    # --- end of direct messages ------------------------------------------------

    async def _job_states(self, ids: list[int | str]) -> list[dict[str, Any]]:
        """flexiagent's job records for the ids flexiManage asks about (jobs that
        failed there with Send Timeout): ``{job_id, request, received_at, errors,
        state}`` with state ``running`` (queued or running now), ``complete`` or
        ``failed``. Ids this device never received are left out."""
        keys = [str(i) for i in ids]
        entries = await asyncio.to_thread(lambda: [self._journal.lookup(k) for k in keys])
        states: list[dict[str, Any]] = []
        for key, entry in zip(keys, entries, strict=True):
            if key in self._pending:
                states.append({"job_id": key, "request": self._pending_names.get(key, ""),
                               "received_at": received_at_text(None), "errors": [],
                               "state": "running"})
            elif entry is not None:
                ok = entry.outcome.ok
                error = entry.outcome.message
                states.append({
                    "job_id": key,
                    "request": entry.message,
                    "received_at": received_at_text(entry.recorded_at),
                    "errors": [] if ok else [error if isinstance(error, str) else str(error)],
                    "state": "complete" if ok else "failed",
                })
        return states

    # --- jobs ------------------------------------------------------------------

    async def _job_worker(self) -> None:
        while True:
            item = await self._jobs.get()
            self._queued_bytes -= item.size
            req = item.request
            try:
                # A job whose connection died still runs: flexiManage never re-sends it.
                with self._job_scope():
                    outcome, replayed, fingerprint = await self._execute(req)
                    await self._reply_anywhere(item.ws, req.seq, outcome,
                                               reply_entity(req.message))
                    if not replayed:
                        # after the reply: hashing a 1000-peer job takes tens of ms, and
                        # a re-send can only come after this (jobs run one at a time)
                        await self._record(req, outcome, fingerprint)
            finally:
                left = self._pending.get(req.jobid, 1) - 1
                if left:
                    self._pending[req.jobid] = left
                else:
                    self._pending.pop(req.jobid, None)
                    self._pending_names.pop(req.jobid, None)
            del item, req  # the parsed job (all its params) is garbage from here on

    async def _reply_anywhere(self, ws: ClientConnection, seq: str, outcome: Outcome,
                              entity: str) -> None:
        """Send on the job's connection, or on the current one, or hold the reply for
        the next connection (flexiManage matches replies by seq, not by socket)."""
        for target in (ws, self._live):
            if target is not None and target.state is State.OPEN \
                    and await self._send(target, seq, outcome, entity):
                return
        loop = asyncio.get_running_loop()
        self._held = [h for h in self._held if loop.time() - h[0] < HELD_REPLY_TTL]
        self._held = [*self._held, (loop.time(), seq, outcome, entity)][-MAX_HELD_REPLIES:]
        self.counters.replies_held += 1
        log.warning("job reply held until the controller connection is back", seq=seq)

    async def _flush_held(self, ws: ClientConnection) -> None:
        held, self._held = self._held, []
        now = asyncio.get_running_loop().time()
        for at, seq, outcome, entity in held:
            if now - at < HELD_REPLY_TTL:
                await self._send(ws, seq, outcome, entity)

    async def _execute(self, req: Request) -> tuple[Outcome, bool, str | None]:
        """The job's outcome, whether it is a recorded one replayed, and the job's
        fingerprint when it had to be computed here (its id was recorded before)."""
        journal = self._journal
        entry = await asyncio.to_thread(journal.lookup, req.jobid)
        if entry is not None:
            fingerprint = await asyncio.to_thread(journal.fingerprint, req.message, req.params)
            if entry.fingerprint == fingerprint:
                self.counters.jobs_replayed += 1
                log.info(
                    "job already done: replaying its recorded outcome",
                    jobid=req.jobid,
                    job=req.message,
                    ok=entry.outcome.ok,
                )
                return entry.outcome, True, fingerprint
            log.warning(
                "controller reused a job id with different content: running it as new",
                jobid=req.jobid,
                job=req.message,
                previous=entry.message,
            )
            return await self._run_handler(req), False, fingerprint
        return await self._run_handler(req), False, None

    async def _record(self, req: Request, outcome: Outcome, fingerprint: str | None) -> None:
        """Journal the outcome under the job's fingerprint (computed now if not given)."""
        journal = self._journal
        try:
            await asyncio.to_thread(lambda: journal.record(
                req.jobid, req.message,
                fingerprint or journal.fingerprint(req.message, req.params), outcome))
        except Exception:
            log.exception(
                "cannot journal the job outcome: get-device-info cannot report it", jobid=req.jobid
            )

    async def _run_handler(self, req: Request) -> Outcome:
        self.counters.jobs_run += 1
        timeout = self._cfg.job_timeout
        log.info("running job", jobid=req.jobid, job=req.message)
        try:
            async with asyncio.timeout(timeout) as scope:
                if req.message in DIRECT_MESSAGES and self._direct is not None:
                    outcome = await self._direct.answer(req.message, req.params)  # issue 17
                else:
                    outcome = await self._handler.run_job(req.message, req.params, req.jobid,
                                                          req.msg)
        except TimeoutError:
            if not scope.expired():
                log.exception("job handler raised TimeoutError", jobid=req.jobid)
                return Outcome(False, f"{req.message} failed: an operation timed out")
            log.error("job timed out and was cancelled", jobid=req.jobid, timeout=timeout)
            return Outcome(
                False, f"{req.message} did not finish within {timeout:g} s and was cancelled"
            )
        except Exception as exc:
            log.exception("job handler failed", jobid=req.jobid, job=req.message)
            return Outcome(
                False,
                f"internal error while running {req.message} "
                f"({type(exc).__name__}); see the device log",
            )
        if not isinstance(outcome, Outcome):
            log.error("job handler returned no Outcome", jobid=req.jobid)
            return Outcome(False, f"internal error while running {req.message}")
        try:
            json.dumps(outcome.message, allow_nan=False)
        except (TypeError, ValueError):
            log.error("job outcome message is not JSON-serialisable", jobid=req.jobid)
            return Outcome(outcome.ok, "success" if outcome.ok else f"{req.message} failed")
        log.info("job done", jobid=req.jobid, job=req.message, ok=outcome.ok)
        return outcome
