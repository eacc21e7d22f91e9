"""The controller's Command, Logs, Configuration, Routes and Traces tabs: the thin runner.

Decisions (allow-list, log sources, route shapes) are in the pure modules next to
this one; here they meet processes, files and VPP. Every answer is bounded in time
(below flexiManage's timeout for that message), in size, and masked: VPP's key and
PSK layouts (`agent.masking`, as peerctl masks them) and, verbatim, every PSK the
agent holds. Commands and outcomes are logged, their output never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from agent.config import RemoteConfig
from agent.jobs.messages import (
    EXEC_TIMEOUT,
    GET_BGP_STATUS,
    GET_DEVICE_CONFIG,
    GET_DEVICE_LOGS,
    GET_DEVICE_OS_ROUTES,
    GET_DEVICE_PACKET_TRACES,
)
from agent.jobs.outcome import Outcome
from agent.masking import mask_cli_command, mask_cli_output, mask_known, mask_params
from agent.remote.commands import Pattern, Plan, Refused, parse_allow, plan_command
from agent.remote.logs import (
    LogSource,
    LogsRefused,
    default_sources,
    journal_argv,
    parse_logs_request,
    tail_lines,
)
from agent.remote.routes import ROUTES_ARGV, routes_from_ip_json

log = structlog.get_logger(__name__)

# Our bound for each answer, below flexiManage's timeout (15 s for logs, config and
# traces beyond their capture window, 60 s for routes).
LOGS_BOUND = 12.0
CONFIG_BOUND = 12.0
ROUTES_BOUND = 30.0
DEFAULT_EXEC_TIMEOUT = 60.0
TRACE_MAX_PACKETS = 1000
TRACE_MAX_WINDOW = 10.0  # seconds of capture; the controller waits window + 15 s
TRACE_NODES = ("dpdk-input", "af-packet-input", "virtio-input", "vmxnet3-input")
MAX_TAIL_BYTES = 8 * 1024 * 1024
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"}

VppCli = Callable[[str], Awaitable[tuple[int, str]]]  # (retval, reply) of cli_inband
ConfigSource = Callable[[], Sequence[Mapping[str, Any]]]
SecretsSource = Callable[[], Iterable[str]]


@dataclass(frozen=True)
class _Run:
    output: str
    error: str
    returncode: int
    output_bytes: int = -1  # what the command printed; -1: all of it is in `output`
    error_bytes: int = -1


class _Capped:
    """The first `limit` bytes of a stream; counts the rest."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


async def _drain(stream: asyncio.StreamReader | None, into: _Capped) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        into.add(chunk)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _number(value: Any, default: float) -> float | None:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


class RemoteService:
    """Answers the registry's direct messages (and `exec_timeout` sent as a job)."""

    def __init__(
        self,
        cfg: RemoteConfig,
        *,
        vpp_cli: VppCli,
        config: ConfigSource,
        secrets: SecretsSource,
        log_sources: Mapping[str, LogSource] | None = None,
        journalctl: str = "journalctl",
        bgp_status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        """`log_sources` and `journalctl` replace the defaults in tests; `bgp_status`
        answers get-bgp-status (the dispatcher's, from FRR; None: `{}`)."""
        self._cfg = cfg
        self._allow: list[Pattern] = parse_allow(cfg.allow)
        self._vpp_cli = vpp_cli
        self._config = config
        self._secrets = secrets
        self._sources = dict(log_sources) if log_sources is not None \
            else default_sources(cfg.agent_log)
        self._journalctl = journalctl
        self._bgp_status = bgp_status
        self._trace_lock = asyncio.Lock()  # VPP has one trace buffer: one capture at a time

    async def answer(self, message: str, params: Any) -> Outcome:
        started = time.monotonic()
        try:
            outcome = await self._answer(message, params)
        except Exception as e:  # a bug must not kill the link; its text may hold input
            log.exception("remote request crashed", message=message, error_type=type(e).__name__)
            outcome = Outcome(False, f"internal error while answering {message} "
                                     f"({type(e).__name__}); see the agent's log")
        log.info("remote request answered", message=message, ok=outcome.ok,
                 seconds=round(time.monotonic() - started, 3))
        return outcome

    async def _answer(self, message: str, params: Any) -> Outcome:
        if message == EXEC_TIMEOUT:
            return await self.exec_timeout(params)
        if message == GET_DEVICE_LOGS:
            return await self.device_logs(params)
        if message == GET_DEVICE_CONFIG:
            return self.device_config()
        if message == GET_DEVICE_OS_ROUTES:
            return await self.os_routes()
        if message == GET_DEVICE_PACKET_TRACES:
            return await self.packet_traces(params)
        if message == GET_BGP_STATUS:
            # `{}` without FRR or BGP: flexiagent's "not running"
            if self._bgp_status is None:
                return Outcome(True, {})
            try:
                return Outcome(True, await self._bgp_status())
            except Exception as e:  # FRR down or refusing: ok:0, as flexiagent answers
                return Outcome(False, f"failed to get BGP status: {e}")
        return Outcome(False, f"{message} is not a remote diagnostics message")

    def _mask(self, text: str, secrets: Iterable[str] | None = None) -> str:
        return mask_known(mask_cli_output(text), self._secrets() if secrets is None else secrets)

    async def _mask_off_loop(self, text: str) -> str:
        """Masking a megabyte against every PSK takes a while: not on the event loop
        (the PSKs are read here, on the loop, where the peer state is changed)."""
        if len(text) < 65536:
            return self._mask(text)
        return await asyncio.to_thread(self._mask, text, list(self._secrets()))

    def _cut(self, text: str, size: int) -> str:
        """`text` cut to output_max characters; `size` is what the command printed, bytes."""
        limit = self._cfg.output_max
        size = max(size, len(text.encode()))
        if len(text) <= limit and size <= len(text.encode()):
            return text
        return text[:limit] + f"\n[output cut at {limit} characters; the command printed " \
                              f"{size} bytes]"

    # --- exec_timeout ----------------------------------------------------------

    async def exec_timeout(self, params: Any) -> Outcome:
        if not isinstance(params, Mapping) or not isinstance(params.get("cmd"), str):
            return Outcome(False, "exec_timeout: params must be {cmd: <command>, timeout: <s>}")
        timeout = _number(params.get("timeout"), DEFAULT_EXEC_TIMEOUT)
        if timeout is None or timeout <= 0:
            return Outcome(False, "exec_timeout: timeout must be a positive number of seconds")
        timeout = min(timeout, self._cfg.max_timeout)
        cmd: str = params["cmd"]
        try:
            plan = plan_command(cmd, self._allow)
        except Refused as e:
            log.warning("remote command refused", command=mask_cli_command(cmd)[:200],
                        reason=str(e)[:200])
            return Outcome(False, f"exec_timeout refused: {e}")
        log.info("remote command", command=mask_cli_command(" ".join(plan.argv)),
                 allowed_by=plan.allowed_by, timeout=timeout)
        run = await (self._run_vpp(plan, timeout) if plan.vpp_cli is not None
                     else self._run_program(plan.argv, timeout))
        output = self._cut(await self._mask_off_loop(run.output), run.output_bytes)
        if plan.note:
            output = f"{plan.note}\n{output}"
        log.info("remote command done", returncode=run.returncode, bytes=run.output_bytes)
        return Outcome(True, {"output": output,
                              "error": self._cut(self._mask(run.error), run.error_bytes),
                              "returncode": run.returncode})

    async def _run_vpp(self, plan: Plan, timeout: float) -> _Run:
        assert plan.vpp_cli is not None
        try:
            async with asyncio.timeout(timeout):
                retval, text = await self._vpp_cli(plan.vpp_cli)
        except TimeoutError:
            return _Run("", f"VPP did not answer within {timeout:g} s", -9)
        except Exception as e:  # VPP down, API error: say so, the tab shows it
            return _Run("", f"VPP is not reachable: {type(e).__name__}", 1)
        if retval < 0:
            return _Run("", text, 1)
        return _Run(text, "", 0)

    async def _run_program(self, argv: Sequence[str], timeout: float,
                           limit: int | None = None) -> _Run:
        """Run `argv` (no shell) in its own process group; kill the group at `timeout`."""
        cap = (limit or self._cfg.output_max) * 2  # masking needs whole lines; cut later
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, env=_ENV)
        except FileNotFoundError:
            return _Run("", f"{argv[0]}: not installed on this device", 127)
        except OSError as e:
            return _Run("", f"{argv[0]}: cannot run it ({e.strerror})", 126)
        out, err = _Capped(cap), _Capped(cap)
        readers = asyncio.ensure_future(
            asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err)))
        note = ""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(readers)  # a timeout must not lose what was read
                returncode = await proc.wait()
        except TimeoutError:
            _kill_group(proc.pid)
            returncode = await proc.wait()
            note = f"timed out after {timeout:g} s: the command was killed"
            # a process that left the group may hold the pipes: stop reading shortly after
            await asyncio.wait({readers}, timeout=1.0)
        finally:
            if proc.returncode is None:  # cancelled: never leave the command running
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            if not readers.done():
                readers.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await readers
        error = err.data.decode("utf-8", errors="replace")
        if note:
            error = f"{error}\n{note}" if error else note
        return _Run(out.data.decode("utf-8", errors="replace"), error, returncode,
                    out.total, err.total + len(note))

    # --- get-device-logs -------------------------------------------------------

    async def device_logs(self, params: Any) -> Outcome:
        try:
            req = parse_logs_request(params, self._sources)
        except LogsRefused as e:
            return Outcome(False, str(e))
        src = req.source
        lines: list[str] = []
        if src is not None:
            try:
                async with asyncio.timeout(LOGS_BOUND):
                    lines = await self._read_log(src, req.lines)
            except TimeoutError:
                return Outcome(False, f"get-device-logs: the {req.filter} log could not be "
                                      f"read within {LOGS_BOUND:g} s")
        masked = (await self._mask_off_loop("\n".join(lines))).split("\n") if lines else []
        return Outcome(True, masked[-req.lines:])

    async def _read_log(self, src: LogSource, n: int) -> list[str]:
        if src.file is not None:
            data = await asyncio.to_thread(_read_tail, src.file, n)
            if data is not None:
                return tail_lines(data, n)
        if src.unit is None:
            return []
        res = await self._run_program(journal_argv(src.unit, n, self._journalctl), LOGS_BOUND,
                                      limit=min(n * 2048, MAX_TAIL_BYTES))
        if res.returncode != 0:
            return []  # no journal here: flexiagent answers [] for a missing log
        return tail_lines(res.output.encode(), n)

    # --- get-device-config -----------------------------------------------------

    def device_config(self) -> Outcome:
        items = [dict(i) for i in self._config()]
        return Outcome(True, mask_params(items))

    # --- get-device-os-routes --------------------------------------------------

    async def os_routes(self) -> Outcome:
        res = await self._run_program(ROUTES_ARGV, ROUTES_BOUND, limit=MAX_TAIL_BYTES)
        if res.returncode != 0:
            return Outcome(False, f"get-device-os-routes: 'ip route' failed: "
                                  f"{res.error.strip()[:200]}")
        try:
            routes = json.loads(res.output or "[]")
        except ValueError:
            return Outcome(False, "get-device-os-routes: 'ip -j route' printed no JSON")
        return Outcome(True, routes_from_ip_json(routes))

    # --- get-device-packet-traces ----------------------------------------------

    async def packet_traces(self, params: Any) -> Outcome:
        p = params if isinstance(params, Mapping) else {}
        packets = _number(p.get("packets"), 100)
        window = _number(p.get("timeout"), 5)
        if packets is None or packets < 1 or window is None or window < 0:
            return Outcome(False, "get-device-packet-traces: packets must be a positive number "
                                  "and timeout a number of seconds")
        n = int(min(packets, TRACE_MAX_PACKETS))
        window = min(window, TRACE_MAX_WINDOW)
        async with self._trace_lock:
            try:
                async with asyncio.timeout(window + 4.0):
                    return await self._trace(n, window)
            except TimeoutError:
                return Outcome(False, "get-device-packet-traces: VPP did not answer in time")
            except Exception as e:  # VPP down or restarting
                return Outcome(False, f"get-device-packet-traces: VPP is not reachable "
                                      f"({type(e).__name__})")

    async def _trace(self, n: int, window: float) -> Outcome:
        await self._vpp_cli("clear trace")
        added = [node for node in TRACE_NODES
                 if (await self._vpp_cli(f"trace add {node} {n}"))[0] >= 0]
        if not added:
            return Outcome(False, f"get-device-packet-traces: VPP has none of the input nodes "
                                  f"{', '.join(TRACE_NODES)}")
        await asyncio.sleep(window)  # the capture window the operator asked for
        retval, text = await self._vpp_cli(f"show trace max {n}")
        if retval < 0:
            return Outcome(False, "get-device-packet-traces: VPP refused 'show trace'")
        lines = self._mask(text).splitlines()
        return Outcome(True, lines[1:])  # flexiagent drops the header line


def _read_tail(path: Any, n: int) -> bytes | None:
    """The end of `path` holding at least `n` lines (bounded), or None if it is missing."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            want = min(MAX_TAIL_BYTES, max(65536, n * 2048))
            start = max(0, size - want)
            f.seek(start)
            data = f.read(want)
    except OSError:  # missing or unreadable: the journal may have it
        return None
    if start > 0:  # the first line may be cut: drop it
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data
