"""The websocket device session with a flexiManage-compatible controller.

One `LinkSession` per agent. `run()` keeps a connection up forever:

- connect to ``wss://<server>/<machineId>?token=...`` with ``User-Agent:
  fwagent/<controller.fwagent_version>``, TLS verified (system CAs +
  ``controller.ca_file``), ws:// only when ``allow_insecure`` (enforced by the
  configuration);
- reconnect with capped exponential backoff and full jitter; an HTTP 400/401/
  402/403/404 handshake answer needs an operator, so the next attempt waits
  ``controller.refused_backoff`` instead;
- a connection with no inbound byte (data, ping or pong) for
  ``controller.silence_timeout`` is dead and is aborted; the agent pings every
  ``controller.ping_interval`` so a live controller always produces pongs;
- jobs (every message except get-device-info/get-device-stats) run one at a time
  in arrival order on a worker that outlives connections; the two queries are
  answered concurrently, also while a job runs;
- exactly-once: a job's outcome is recorded in the `Journal` (fsync'd) before
  its reply is sent; a job id already recorded with the same content is
  answered from the journal without running it again. A job queued but not
  started when its connection dies is dropped: the controller lists it as
  unanswered on reconnect and re-sends it.

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
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from agent.config import ControllerConfig
from agent.link.backoff import Backoff
from agent.link.envelope import Rejected, Request, encode_reply, info_job_ids, parse_frame
from agent.link.handler import GET_DEVICE_STATS, JobHandler, Outcome
from agent.link.ident import (
    read_token,
    redact,
    redacted_websocket_url,
    resolve_machine_id,
    ssl_context,
    user_agent,
    websocket_url,
)
from agent.link.journal import Journal
from agent.secret import Secret

log = structlog.get_logger(__name__)

# Handshake statuses an operator must act on (flexiManage: 400 bad URL/version,
# 402 subscription, 403 not approved, 404 unknown device; 401 bad credentials).
REFUSALS: dict[int, str] = {
    400: "bad request (URL or agent version refused)",
    401: "device token rejected",
    402: "subscription or device quota exhausted",
    403: "not approved (approve the device in the controller)",
    404: "unknown device (machine id not registered)",
}
MAX_QUEUED_JOBS = 256
# issue 15: the queue is bounded in bytes (30 queued 6.9 MB frames took 1 GB); a job
# is always admitted into an empty queue, so one frame of max_frame_size always fits
MAX_QUEUED_BYTES = 16 * 1024 * 1024
MAX_CONCURRENT_QUERIES = 4


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
    jobs_dropped: int = 0
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
    ) -> None:
        self._cfg = cfg
        self._handler = handler
        self._journal = journal
        self._rng = rng or random.Random()
        self._machine_id = resolve_machine_id(cfg)
        self._ssl = ssl_context(cfg)
        self._jobs: asyncio.Queue[_QueuedJob] = asyncio.Queue(MAX_QUEUED_JOBS)
        self._pending: dict[str, int] = {}  # job ids queued or running -> count
        self._queued_bytes = 0
        self._query_slots = asyncio.Semaphore(MAX_CONCURRENT_QUERIES)
        self._connected = asyncio.Event()
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

    async def _attempt(self, backoff: Backoff) -> float:
        """One connection attempt (and its whole life); returns the delay before the next."""
        cfg = self._cfg
        token = read_token(cfg)
        if token is None:
            log.error(
                "no device token: register the device first (peering-agent register)",
                token_file=str(cfg.token_file),
            )
            return cfg.backoff_max
        self.counters.attempts += 1
        log.info("connecting to controller", url=self.url)
        try:
            ws = await connect(
                websocket_url(cfg, self._machine_id, token),
                user_agent_header=user_agent(cfg),
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
            if status in REFUSALS:
                self.counters.refusals += 1
                self.counters.last_refusal = status
                delay = cfg.refused_backoff * (1 + self._rng.uniform(0, 0.1))
                log.error(
                    f"controller refused the device: {status} {REFUSALS[status]}; "
                    f"next attempt in {delay:.0f} s",
                    status=status,
                    url=self.url,
                )
                backoff.reset()
                return delay
            delay = backoff.next_delay()
            log.warning(
                "controller rejected the connection", status=status, retry_in=round(delay, 2)
            )
            return delay
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            delay = backoff.next_delay()
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
        self._connected.set()
        log.info("connected to controller", url=self.url)
        try:
            await self._serve(ws)
        finally:
            self._connected.clear()
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

    async def _send(self, ws: ClientConnection, seq: str, outcome: Outcome) -> bool:
        cfg_hash = self._cfg_hash()
        try:
            text = encode_reply(seq, outcome.ok, outcome.message, cfg_hash)
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

    async def _job_states(self, ids: list[int | str]) -> list[dict[str, Any]]:
        """Outcome of each listed job id.

        ``{"id", "state": "done", "ok": 1|0, "message"}`` for a recorded outcome;
        ``state`` ``running`` (queued or running now) or ``unknown`` (never
        received, or dropped before it ran) carry ``ok: 0`` and an explanation,
        so a controller testing ``ok == 1`` never mistakes them for success.
        """
        keys = [str(i) for i in ids]
        entries = await asyncio.to_thread(lambda: [self._journal.lookup(k) for k in keys])
        states: list[dict[str, Any]] = []
        for jid, key, entry in zip(ids, keys, entries, strict=True):
            if key in self._pending:
                states.append(
                    {"id": jid, "state": "running", "ok": 0, "message": "job is still running"}
                )
            elif entry is not None:
                states.append(
                    {
                        "id": jid,
                        "state": "done",
                        "ok": int(entry.outcome.ok),
                        "message": entry.outcome.message,
                    }
                )
            else:
                states.append(
                    {
                        "id": jid,
                        "state": "unknown",
                        "ok": 0,
                        "message": "job was never received or never ran on this device",
                    }
                )
        return states

    # --- jobs ------------------------------------------------------------------

    async def _job_worker(self) -> None:
        while True:
            item = await self._jobs.get()
            self._queued_bytes -= item.size
            req = item.request
            try:
                if item.ws.state is not State.OPEN:
                    self.counters.jobs_dropped += 1
                    log.warning(
                        "dropping a job whose connection closed before it started; "
                        "the controller will re-send it",
                        jobid=req.jobid,
                        job=req.message,
                    )
                    continue
                outcome = await self._execute(req)
            finally:
                left = self._pending.get(req.jobid, 1) - 1
                if left:
                    self._pending[req.jobid] = left
                else:
                    self._pending.pop(req.jobid, None)
            if not await self._send(item.ws, req.seq, outcome):
                log.warning("job outcome is journaled but the reply was lost", jobid=req.jobid)
            del item, req  # the parsed job (all its params) is garbage from here on

    async def _execute(self, req: Request) -> Outcome:
        journal = self._journal
        fingerprint = journal.fingerprint(req.message, req.params)
        entry = await asyncio.to_thread(journal.lookup, req.jobid)
        if entry is not None and entry.fingerprint == fingerprint:
            self.counters.jobs_replayed += 1
            log.info(
                "job already done: replaying its recorded outcome",
                jobid=req.jobid,
                job=req.message,
                ok=entry.outcome.ok,
            )
            return entry.outcome
        if entry is not None:
            log.warning(
                "controller reused a job id with different content: running it as new",
                jobid=req.jobid,
                job=req.message,
                previous=entry.message,
            )
        outcome = await self._run_handler(req)
        try:
            await asyncio.to_thread(journal.record, req.jobid, req.message, fingerprint, outcome)
        except Exception:
            log.exception(
                "cannot journal the job outcome: a re-sent job would run again", jobid=req.jobid
            )
        return outcome

    async def _run_handler(self, req: Request) -> Outcome:
        self.counters.jobs_run += 1
        timeout = self._cfg.job_timeout
        log.info("running job", jobid=req.jobid, job=req.message)
        try:
            async with asyncio.timeout(timeout) as scope:
                outcome = await self._handler.run_job(req.message, req.params, req.jobid)
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
