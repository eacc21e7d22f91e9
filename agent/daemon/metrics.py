"""Optional localhost metrics endpoint in Prometheus text exposition format (0.0.4).

The metrics are a `prometheus_client` collector on a `CollectorRegistry` of the
agent's own (never the library's global one): each `GET /metrics` collects from a
`MetricsSource` and writes the text with `generate_latest`, so nothing is cached
and no metric state lives here except the job recorder, which the job dispatcher
feeds.

The HTTP server stays a small asyncio-streams one instead of prometheus_client's
`start_http_server`: that one is a thread per connection with no read timeout and
no cap on clients (idle sockets would each hold a thread, a flood would grow them
without bound), and its scrape would read the agent's dicts from another thread
while the event loop changes them. Here a scrape collects on the event loop and
writes the text from the collected families on a worker thread (`scrape`); one
request per connection, with bounded sizes and time, a cap on concurrent clients
and idle connections evicted for a scrape. It binds only loopback addresses: the
endpoint has no authentication, and tunnel names and peer addresses are not for
the network to read. Remote scraping goes through a local Prometheus agent or an
SSH tunnel.

Units follow Prometheus conventions (seconds, ratios 0..1), so the agent's
millisecond/percent health numbers are converted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from agent.jobs.messages import METRIC_MESSAGES

log = structlog.get_logger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes
PREFIX = "peering_agent_"

# The messages with a label value of their own (the registry marks them); any other
# name is counted as "other" so that a misbehaving controller cannot create unbounded
# label values.
JOB_MESSAGES: tuple[str, ...] = METRIC_MESSAGES
# Jobs run from milliseconds (a query) to the controller's 180 s limit (a sync).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0,
)

# Counters the controller link (`agent.link.session.LinkCounters`) keeps:
# (attribute, metric name without the prefix, help)
LINK_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("attempts", "link_connect_attempts_total",
     "Connection attempts to the controller (with a device token)."),
    ("connections", "link_connections_total", "Controller websocket connections established."),
    ("refusals", "link_refusals_total",
     "Connection attempts the controller refused with an HTTP status."),
    ("silence_drops", "link_silence_drops_total",
     "Connections dropped because the controller sent nothing for too long."),
    ("rejected_frames", "link_rejected_frames_total",
     "Controller frames rejected as malformed, oversized or not a job."),
    ("jobs_run", "link_jobs_run_total", "Controller jobs the link handed to the dispatcher."),
    ("jobs_replayed", "link_jobs_replayed_total",
     "Jobs answered from the journal because the controller re-sent a job already done."),
    ("replies_held", "link_replies_held_total",
     "Job replies kept for a later connection because the link was down."),
)
# Counters of the probe engine (`agent.monitor.icmp.EngineStats`), as above.
PROBE_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("sent", "probe_sent_total", "Probes sent through the tunnels."),
    ("replies", "probe_replies_total", "Probe replies received in time."),
    ("timeouts", "probe_timeouts_total", "Probes that got no reply in time."),
    ("send_errors", "probe_send_errors_total", "Probes the kernel refused to send."),
    ("icmp_errors", "probe_icmp_errors_total",
     "ICMP unreachable / time-exceeded answers to probes."),
    ("late", "probe_late_replies_total", "Replies to probes that had already timed out."),
    ("ignored", "probe_ignored_packets_total",
     "ICMP packets seen by the probe sockets that were not answers to the agent's probes."),
    ("sockets", "probe_sockets_opened_total", "Probe sockets opened."),
)


# --- the data the endpoint reads --------------------------------------------------


@dataclass(frozen=True)
class TunnelMetrics:
    """One peer tunnel, in the agent's own units (ms, percent)."""

    tunnel_id: int
    peer: str  # the peer's public address, for humans reading a dashboard
    up: bool  # probe health says up
    rtt_ms: float
    jitter_ms: float
    drop_percent: float
    sa_up: bool
    sa_uptime_s: float | None  # None: no established IKE SA
    reinitiations: int


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]  # upper bounds, ascending, without +Inf
    counts: tuple[int, ...]  # per bucket (not cumulative), len(bounds) + 1 (the +Inf one)
    total: float  # sum of observations, seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class JobSnapshot:
    outcomes: Mapping[tuple[str, str], int]  # (message, "ok"|"failed") -> jobs
    durations: Mapping[str, HistogramSnapshot]  # message -> job duration histogram


class MetricsSource(Protocol):
    """What `GET /metrics` reads; each call must be cheap and must not block."""

    def tunnels(self) -> Sequence[TunnelMetrics]: ...

    def jobs(self) -> JobSnapshot: ...

    def vpp_connected(self) -> bool: ...

    def vpp_reconnects(self) -> int: ...


class JobMetrics:
    """Counts and durations of controller jobs; the dispatcher calls `observe` per job."""

    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS,
                 messages: Iterable[str] = JOB_MESSAGES) -> None:
        self._bounds = tuple(sorted(set(float(b) for b in buckets)))
        if not self._bounds or not all(math.isfinite(b) for b in self._bounds):
            raise ValueError("buckets: need at least one finite upper bound")
        self._messages = frozenset(messages)
        self._outcomes: dict[tuple[str, str], int] = {}
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, message: str, ok: bool, seconds: float) -> None:
        """Record one finished job (a failed or timed-out job too, with ok=False)."""
        name = message if message in self._messages else "other"
        key = (name, "ok" if ok else "failed")
        self._outcomes[key] = self._outcomes.get(key, 0) + 1
        if not math.isfinite(seconds) or seconds < 0:
            seconds = 0.0  # a clock oddity must not poison _sum
        counts = self._counts.setdefault(name, [0] * (len(self._bounds) + 1))
        idx = next((i for i, b in enumerate(self._bounds) if seconds <= b), len(self._bounds))
        counts[idx] += 1
        self._sums[name] = self._sums.get(name, 0.0) + seconds

    def snapshot(self) -> JobSnapshot:
        return JobSnapshot(
            outcomes=dict(self._outcomes),
            durations={name: HistogramSnapshot(self._bounds, tuple(c), self._sums[name])
                       for name, c in self._counts.items()},
        )


# --- the collector --------------------------------------------------------------------


def _counter_families(counters: object, table: Sequence[tuple[str, str, str]]
                      ) -> Iterator[Metric]:
    for attr, name, help_text in table:
        family = CounterMetricFamily(PREFIX + name, help_text)
        family.add_metric([], int(getattr(counters, attr)))
        yield family


class AgentCollector:
    """A prometheus_client collector that reads a `MetricsSource` on each collect.

    A source may also offer `policy_counters()`, `link_counters()` and
    `probe_counters()` (`AgentMetricsSource` does); their families are exposed
    only when it does, so a minimal source keeps its exact exposition.
    """

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._tunnels()
        yield from self._jobs()
        source = self._source
        connected = GaugeMetricFamily(PREFIX + "vpp_connected",
                                      "1 while the VPP API connection is up.")
        connected.add_metric([], 1 if source.vpp_connected() else 0)
        reconnects = CounterMetricFamily(PREFIX + "vpp_reconnects_total",
                                         "Times the VPP API connection was re-established.")
        reconnects.add_metric([], source.vpp_reconnects())
        yield connected
        yield reconnects
        policy_counters = getattr(source, "policy_counters", None)
        if policy_counters is not None:
            done, failed = policy_counters()
            reprog = CounterMetricFamily(
                PREFIX + "policy_reprogrammings_total",
                "Multilink policy re-programmings after a path choice changed.")
            reprog.add_metric([], done)
            reprog_failed = CounterMetricFamily(
                PREFIX + "policy_reprogram_failures_total",
                "Re-programmings VPP refused (rolled back, retried).")
            reprog_failed.add_metric([], failed)
            yield reprog
            yield reprog_failed
        link_counters = getattr(source, "link_counters", None)
        link = link_counters() if link_counters is not None else None
        if link is not None:
            up = GaugeMetricFamily(PREFIX + "link_connected",
                                   "1 while the controller websocket is connected.")
            up.add_metric([], 1 if link.connected else 0)
            yield up
            yield from _counter_families(link.counters, LINK_COUNTERS)
        probe_counters = getattr(source, "probe_counters", None)
        probes = probe_counters() if probe_counters is not None else None
        if probes is not None:
            yield from _counter_families(probes, PROBE_COUNTERS)

    def _tunnels(self) -> Iterator[Metric]:
        labels = ["tunnel_id", "peer"]

        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, help_text, labels=labels)

        up = gauge("tunnel_up", "Probe health of the tunnel: 1 up, 0 otherwise.")
        rtt = gauge("tunnel_rtt_seconds", "Mean probe round-trip time over the health window.")
        jitter = gauge("tunnel_jitter_seconds", "Probe round-trip jitter.")
        drop = gauge("tunnel_drop_ratio", "Share of probes lost over the health window (0..1).")
        sa_up = gauge("tunnel_sa_up", "1 when the tunnel has an established IKE SA.")
        sa_uptime = gauge("tunnel_sa_uptime_seconds",
                          "Age of the established IKE SA (absent without one).")
        reinit = CounterMetricFamily(PREFIX + "tunnel_reinitiations_total",
                                     "IKE re-initiations the agent started for the tunnel.",
                                     labels=labels)
        for t in sorted(self._source.tunnels(), key=lambda t: t.tunnel_id):
            values = [str(t.tunnel_id), t.peer]
            up.add_metric(values, 1 if t.up else 0)
            rtt.add_metric(values, t.rtt_ms / 1000)
            jitter.add_metric(values, t.jitter_ms / 1000)
            drop.add_metric(values, t.drop_percent / 100)
            sa_up.add_metric(values, 1 if t.sa_up else 0)
            if t.sa_uptime_s is not None:
                sa_uptime.add_metric(values, t.sa_uptime_s)
            reinit.add_metric(values, t.reinitiations)
        yield from (up, rtt, jitter, drop, sa_up, sa_uptime, reinit)

    def _jobs(self) -> Iterator[Metric]:
        jobs = self._source.jobs()
        total = CounterMetricFamily(PREFIX + "jobs_total",
                                    "Controller jobs handled, by message and outcome.",
                                    labels=["message", "outcome"])
        for (message, outcome), n in sorted(jobs.outcomes.items()):
            total.add_metric([message, outcome], n)
        duration = HistogramMetricFamily(
            PREFIX + "job_duration_seconds",
            "Time from receiving a controller job to sending its reply.", labels=["message"])
        for message, h in sorted(jobs.durations.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*map(floatToGoString, h.bounds), "+Inf"), h.counts,
                                strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            duration.add_metric([message], buckets, h.total)
        yield total
        yield duration


def metrics_registry(source: MetricsSource) -> CollectorRegistry:
    """A registry of the agent's own with the collector over `source` (one per agent)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(source))
    return registry


def render_metrics(registry: CollectorRegistry) -> str:
    """The whole exposition text for one scrape."""
    return generate_latest(registry).decode("utf-8")


class _Collected:
    """Metric families already collected, for `generate_latest` to write."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


async def scrape(registry: CollectorRegistry) -> str:
    """`render_metrics` without a long stall of the event loop.

    Collecting reads the agent's live state, so it runs here on the loop (about a
    fifth of the cost); writing the text from the collected, detached families is
    the larger part (about 0.1 s for 1000 tunnels) and runs on a worker thread.
    """
    families = list(registry.collect())
    return (await asyncio.to_thread(generate_latest, _Collected(families))).decode("utf-8")


# --- the data, read from the running agent ------------------------------------------


class _Health(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def rtt_ms(self) -> float: ...
    @property
    def jitter_ms(self) -> float: ...
    @property
    def drop_rate(self) -> float: ...
    @property
    def sa_up(self) -> bool: ...


class _Monitor(Protocol):
    def health(self, tunnel_id: int) -> _Health | None: ...


class _PeerState(Protocol):
    @property
    def sa_uptime(self) -> float | None: ...
    @property
    def reinitiations(self) -> int: ...


class _Spec(Protocol):
    @property
    def dst(self) -> object: ...


class _Manager(Protocol):
    @property
    def desired(self) -> Mapping[int, _Spec]: ...
    @property
    def states(self) -> Mapping[int, _PeerState]: ...


class _Vpp(Protocol):
    @property
    def connected(self) -> bool: ...
    @property
    def generation(self) -> int: ...


class _Policies(Protocol):
    @property
    def reprogrammings(self) -> int: ...
    @property
    def reprogram_failures(self) -> int: ...


class _Link(Protocol):
    """The controller link (`LinkSession`): its counters are named in LINK_COUNTERS."""

    @property
    def connected(self) -> bool: ...
    @property
    def counters(self) -> object: ...


class _Probes(Protocol):
    """The probe engine (`ProbeEngine`): its stats are named in PROBE_COUNTERS."""

    @property
    def stats(self) -> object: ...


class AgentMetricsSource:
    """`MetricsSource` over the agent's parts (PeerManager, MonitorService, VppClient,
    and when given the policy manager, the controller link and the probe engine).

    Typed structurally so this module needs none of them; every tunnel the manager
    wants is listed, with zeros while the monitor has no numbers for it yet.
    """

    def __init__(self, manager: _Manager, monitor: _Monitor, vpp: _Vpp,
                 jobs: JobMetrics, policies: _Policies | None = None, *,
                 link: _Link | None = None, probes: _Probes | None = None) -> None:
        self._manager = manager
        self._monitor = monitor
        self._vpp = vpp
        self._jobs = jobs
        self._policies = policies
        self._link = link
        self._probes = probes

    def policy_counters(self) -> tuple[int, int]:
        p = self._policies
        return (p.reprogrammings, p.reprogram_failures) if p is not None else (0, 0)

    def link_counters(self) -> _Link | None:
        return self._link

    def probe_counters(self) -> object | None:
        return self._probes.stats if self._probes is not None else None

    def tunnels(self) -> list[TunnelMetrics]:
        out = []
        states = self._manager.states
        for tid, spec in sorted(self._manager.desired.items()):
            health = self._monitor.health(tid)
            state = states.get(tid)
            out.append(TunnelMetrics(
                tunnel_id=tid,
                peer=str(spec.dst),
                up=health is not None and str(health.status) == "up",
                rtt_ms=health.rtt_ms if health else 0.0,
                jitter_ms=health.jitter_ms if health else 0.0,
                drop_percent=health.drop_rate if health else 0.0,
                sa_up=bool(health and health.sa_up),
                sa_uptime_s=state.sa_uptime if state else None,
                reinitiations=state.reinitiations if state else 0,
            ))
        return out

    def jobs(self) -> JobSnapshot:
        return self._jobs.snapshot()

    def vpp_connected(self) -> bool:
        return self._vpp.connected

    def vpp_reconnects(self) -> int:
        return max(0, self._vpp.generation - 1)  # generation 1 is the first connection


# --- listen address ------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:9465` / `[::1]:9465` -> (host, port); only loopback addresses.

    Raises ValueError with a message for the operator (config validation calls it).
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{listen!r} must be host:port, e.g. 127.0.0.1:9465 or [::1]:9465")
    if int(port_text) < 1024:
        # the service has no CAP_NET_BIND_SERVICE: the bind would fail at every start
        raise ValueError(f"{listen!r}: the port must be 1024 or above (the service may not "
                         "bind privileged ports), e.g. 127.0.0.1:9465")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"{listen!r}: host must be a loopback IP address (127.0.0.1 or ::1), not a name"
        ) from None
    if not addr.is_loopback:
        raise ValueError(
            f"{listen!r}: the metrics endpoint has no authentication and binds loopback "
            "only (127.0.0.0/8 or ::1)"
        )
    return str(addr), int(port_text)


# --- HTTP ----------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_LINE = 8192
_MAX_HEADERS = 64


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class MetricsServer:
    """HTTP/1.x server for `GET /metrics` on a loopback address."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, *,
                 max_clients: int = 8, read_timeout: float = 5.0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"metrics endpoint binds loopback only, not {host}")
        self._registry = registry
        self._host = host
        self._port = port
        self._max_clients = max_clients
        self._read_timeout = read_timeout
        self._clients = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # connections still waiting for their request line, oldest first: when all
        # slots are taken, the oldest of these makes room (idle sockets must not lock
        # out a scrape, whose request arrives at once)
        self._reading: dict[asyncio.Task[None], None] = {}
        self._server: asyncio.Server | None = None
        self._log = structlog.get_logger(__name__, listen=f"{host}:{port}")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=_MAX_LINE, reuse_address=True)
        self._log = structlog.get_logger(__name__, listen=f"{self._host}:{self.port}")
        self._log.info("metrics endpoint listening")

    async def stop(self) -> None:
        """Stop listening and end the connections in progress."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        """Start, serve until cancelled, stop: a task for the agent's TaskGroup."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._clients >= self._max_clients and not self._evict_idle(task):
                await self._shed(reader, writer)
            else:
                await self._serve(reader, writer)
        except asyncio.CancelledError:
            # only stop() cancels handlers; asyncio would log a handler task that ends
            # cancelled as an "unhandled exception", so end it normally
            pass
        finally:
            self._tasks.discard(task)

    def _evict_idle(self, newcomer: asyncio.Task[None]) -> bool:
        """End the oldest connection that has not sent its request yet; False if none."""
        for victim in self._reading:
            if victim is not newcomer and not victim.done():
                del self._reading[victim]
                victim.cancel()
                self._log.info("idle metrics connection closed to serve a new one")
                return True
        return False

    async def _shed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer 503 without parsing: a flood of scrapers must not cost more than this."""
        try:
            await self._respond(writer, 503, "too many concurrent scrapes\n", head=False)
            await self._linger(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            await self._close(writer)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an error reply: half-close, then discard what the client still sends.

        Closing with unread input makes the kernel reset the connection, which can
        destroy the reply on its way; this is bounded in bytes and time.
        """
        try:
            writer.write_eof()
            async with asyncio.timeout(1.0):
                budget = 64 * 1024
                while budget > 0:
                    chunk = await reader.read(min(budget, 16 * 1024))
                    if not chunk:
                        break
                    budget -= len(chunk)
        except (ConnectionError, OSError, TimeoutError):
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients += 1
        try:
            task = asyncio.current_task()
            assert task is not None
            self._reading[task] = None
            try:
                async with asyncio.timeout(self._read_timeout):
                    method, path = await self._read_request(reader)
            except _BadRequest as e:
                await self._respond(writer, e.status, _REASONS[e.status] + "\n", head=False)
                await self._linger(reader, writer)
                return
            except TimeoutError:
                await self._respond(writer, 408, "request not received in time\n", head=False)
                await self._linger(reader, writer)
                return
            finally:
                self._reading.pop(task, None)
            await self._route(writer, method, path)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            self._log.exception("metrics request failed")
        finally:
            self._clients -= 1
            await self._close(writer)

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        line = await self._read_line(reader, 400)
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
            raise _BadRequest(400)
        for _ in range(_MAX_HEADERS):  # headers are read and ignored
            if not await self._read_line(reader, 431):
                return parts[0], parts[1]
        raise _BadRequest(431)

    @staticmethod
    async def _read_line(reader: asyncio.StreamReader, too_long: int) -> str:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _BadRequest(too_long) from None
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise _BadRequest(400) from None
            raise
        try:
            return raw.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError:
            raise _BadRequest(400) from None

    async def _route(self, writer: asyncio.StreamWriter, method: str, target: str) -> None:
        path = target.split("?", 1)[0]
        if path != "/metrics":
            await self._respond(writer, 404, "not found; metrics are at /metrics\n",
                                head=method == "HEAD")
            return
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, "only GET and HEAD\n", head=False,
                                extra=(("Allow", "GET, HEAD"),))
            return
        try:
            body = await scrape(self._registry)
        except Exception:
            self._log.exception("rendering metrics failed")
            await self._respond(writer, 500, "metrics unavailable; see the agent log\n",
                                head=method == "HEAD")
            return
        await self._respond(writer, 200, body, head=method == "HEAD", content_type=CONTENT_TYPE)

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, body: str, *, head: bool,
                       content_type: str = "text/plain; charset=utf-8",
                       extra: Sequence[tuple[str, str]] = ()) -> None:
        data = body.encode("utf-8")
        headers = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
                   f"Content-Length: {len(data)}", "Connection: close",
                   *(f"{k}: {v}" for k, v in extra)]
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("ascii"))
        if not head:
            writer.write(data)
        await writer.drain()


async def run_metrics_server(registry: CollectorRegistry, listen: str) -> None:
    """Serve `registry` on `listen` (host:port) until cancelled; returns at once if empty."""
    if not listen:
        return
    host, port = parse_listen(listen)
    await MetricsServer(registry, host, port).serve_forever()
