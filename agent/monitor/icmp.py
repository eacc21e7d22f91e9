"""Native asyncio ICMP echo engine: many targets, few sockets, no thread or process per probe.

Design:

* One socket per *binding* (bound device and/or source address), shared by all
  targets behind it, registered with the event loop through ``add_reader``.
  Raw ``SOCK_RAW/IPPROTO_ICMP`` sockets are preferred (root / CAP_NET_RAW); when
  the kernel refuses them the engine falls back to unprivileged ICMP "ping"
  sockets (``SOCK_DGRAM``, allowed by ``net.ipv4.ping_group_range``).
* A raw socket sees every ICMP packet of its namespace (or of its device when
  bound), including replies to other processes' pings. A reply is accepted only
  when identifier, a sequence number we have outstanding, the source address
  and an 8-byte per-engine cookie in the payload all match, and (raw only) its
  checksum is valid.
* Scheduling is callback-driven from one loop timer: every target has a due
  time; first due times are spread over the interval with a golden-ratio
  sequence, so targets added one by one still end up evenly spaced; sends due
  within a small slot (interval/200, at most 5 ms) share one wake-up. Timeouts
  are constant, so outstanding probes expire in send order from a FIFO: O(1)
  per probe, no timer per probe.
* RTT: the send is stamped with ``time.monotonic_ns``; the reply with the
  kernel's receive timestamp (``SO_TIMESTAMPNS``) when it is consistent with
  the monotonic measurement, which removes event-loop latency from the RTT
  under load. Otherwise the monotonic time at processing is used.
* A probe that cannot be sent (no route, socket cannot be bound to a device
  that does not exist yet) is reported lost at once with the reason; sockets
  that fail to open are retried every interval, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import socket
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Literal

import structlog

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux SO_TIMESTAMPNS_OLD
_TIMESPEC = struct.Struct("@qq")
_ICMP_HDR = struct.Struct("!BBHHH")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_GOLDEN = 0.6180339887498949  # low-discrepancy phase sequence
# Sends due within this share of the interval (at most 20 ms) leave in one timer
# callback: at 1000 targets/s loop wake-ups dominate the cost (send, then read the
# replies), and 50 batches of ~20 echo requests a second are still no burst. RTT
# is measured from each packet's own send, so sending a little early costs nothing.
_COALESCE_SHARE = 1 / 50
_COALESCE_MAX = 0.02
_RECV_BUDGET = 512  # datagrams drained per readable callback before yielding
_SOCKBUF = 1 << 20

_UNREACH_CODES = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    13: "communication administratively prohibited",
}

SocketKind = Literal["auto", "raw", "dgram"]
ResultCallback = Callable[["ProbeResult"], None]


# -- pure packet helpers --------------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum of data, as an int ready for '!H'."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(array("H", data))  # native order: RFC 1071 is byte-order independent
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    native = ~total & 0xFFFF
    # the sum was taken in host order; convert back so callers can pack it as '!H'
    return socket.ntohs(native) if socket.htons(1) != 1 else native


def build_echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = _ICMP_HDR.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = internet_checksum(header + payload)
    return _ICMP_HDR.pack(ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


def next_sequence(current: int, in_use: Callable[[int], bool]) -> int:
    """The sequence after current, wrapping at 16 bits and skipping ones still outstanding."""
    seq = current
    for _ in range(0x10000):
        seq = (seq + 1) & 0xFFFF
        if not in_use(seq):
            return seq
    raise RuntimeError("all 65536 ICMP sequence numbers are outstanding on one socket")


@dataclass(frozen=True, slots=True)
class ParsedIcmp:
    type: int
    code: int
    ident: int
    seq: int
    source: bytes  # packed IPv4 of the sender
    payload: bytes  # echo payload, or for errors the quoted original datagram
    checksum_ok: bool


def parse_icmp(data: bytes, *, has_ip_header: bool, source: bytes = b"") -> ParsedIcmp | None:
    """Parse a received datagram; None when it is too short or not IPv4/ICMP."""
    if has_ip_header:
        if len(data) < 20 or data[0] >> 4 != 4 or data[9] != socket.IPPROTO_ICMP:
            return None
        ihl = (data[0] & 0x0F) * 4
        source = data[12:16]
        icmp = data[ihl:]
        checksum_ok = internet_checksum(icmp) == 0
    else:
        icmp = data
        checksum_ok = True  # ping sockets: the kernel verified it
    if len(icmp) < _ICMP_HDR.size:
        return None
    typ, code, _csum, ident, seq = _ICMP_HDR.unpack_from(icmp)
    return ParsedIcmp(typ, code, ident, seq, source, icmp[8:], checksum_ok)


def quoted_echo(error_payload: bytes) -> tuple[bytes, int, int] | None:
    """From an ICMP error's quoted datagram: (destination, ident, seq) of our echo request."""
    if len(error_payload) < 28 or error_payload[0] >> 4 != 4:
        return None
    ihl = (error_payload[0] & 0x0F) * 4
    if error_payload[9] != socket.IPPROTO_ICMP or len(error_payload) < ihl + 8:
        return None
    typ, _code, _csum, ident, seq = _ICMP_HDR.unpack_from(error_payload, ihl)
    if typ != ICMP_ECHO_REQUEST:
        return None
    return error_payload[16:20], ident, seq


# -- engine -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeResult:
    key: Hashable
    address: IPv4Address
    seq: int
    sent_at: float  # time.monotonic() seconds at send
    rtt_ms: float | None  # None when lost
    error: str | None = None  # why it was lost; None for a reply

    @property
    def ok(self) -> bool:
        return self.rtt_ms is not None


@dataclass
class EngineStats:
    sent: int = 0
    replies: int = 0
    timeouts: int = 0
    send_errors: int = 0
    icmp_errors: int = 0  # unreachable / time exceeded answers to our probes
    late: int = 0  # replies to probes that had already timed out
    ignored: int = 0  # other hosts' / processes' ICMP seen by raw sockets
    sockets: int = 0


@dataclass(eq=False, slots=True)
class _Target:
    key: Hashable
    address: IPv4Address
    sockaddr: tuple[str, int]
    packed: bytes
    binding: _Binding
    on_result: ResultCallback
    due: float = 0.0
    active: bool = True


@dataclass(eq=False, slots=True)
class _Pending:
    target: _Target
    seq: int
    sent_mono_ns: int
    sent_real_ns: int
    deadline: float


@dataclass(eq=False)
class _Binding:
    device: str | None
    source: IPv4Address | None
    ident: int
    sock: socket.socket | None = None
    kind: Literal["raw", "dgram"] = "raw"
    seq: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    targets: int = 0
    error: str | None = None
    retry_at: float = 0.0

    def describe(self) -> str:
        parts = []
        if self.device:
            parts.append(f"device {self.device}")
        if self.source:
            parts.append(f"source {self.source}")
        return " and ".join(parts) or "no binding"


class ProbeEngine:
    """ICMP echo probes to many targets at a fixed interval.

    Use inside a TaskGroup: ``tg.create_task(engine.run())``, or ``async with
    engine:``, or ``start()``/``stop()`` from code already on the loop. Results
    are delivered by calling each target's ``on_result`` on the event loop;
    targets may be added and removed at any time, also from a callback.
    """

    def __init__(
        self,
        interval: float = 1.0,
        timeout: float = 1.0,
        *,
        payload_size: int = 56,
        socket_kind: SocketKind = "auto",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        if not 8 <= payload_size <= 1472:
            raise ValueError(f"payload_size must be 8..1472 bytes, got {payload_size}")
        self.interval = interval
        self.timeout = timeout
        self.stats = EngineStats()
        self._kind: SocketKind = socket_kind
        self._coalesce = min(_COALESCE_MAX, interval * _COALESCE_SHARE)
        self._cookie = os.urandom(8)
        self._payload = self._cookie + bytes(range(payload_size - 8))[: payload_size - 8]
        self._targets: dict[Hashable, _Target] = {}
        self._bindings: dict[tuple[str | None, IPv4Address | None], _Binding] = {}
        # identifier -> bindings using it: a free one is found without a scan of all
        self._ident_users: dict[int, int] = {}
        self._heap: list[tuple[float, int, _Target]] = []
        self._expiry: deque[_Pending] = deque()
        self._counter = 0  # heap tie-breaker
        self._phase_index = 0  # consecutive adds walk the golden-ratio sequence
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped: asyncio.Event | None = None
        self._log = structlog.get_logger(__name__)

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Probe until cancelled or `stop()` is called; always releases sockets."""
        self.start()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            self.stop()

    async def __aenter__(self) -> ProbeEngine:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        now = self._loop.time()
        for target in self._targets.values():
            self._schedule_first(target, now)
        self._arm()

    def stop(self) -> None:
        """Stop probing and close every socket; outstanding probes get no result."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        for binding in self._bindings.values():
            self._close(binding)
            binding.pending.clear()
        self._heap.clear()
        self._expiry.clear()
        if self._stopped is not None:
            self._stopped.set()
        self._loop = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    # -- targets ----------------------------------------------------------------

    def add_target(
        self,
        key: Hashable,
        address: IPv4Address,
        on_result: ResultCallback,
        *,
        bind_device: str | None = None,
        source: IPv4Address | None = None,
    ) -> None:
        """Probe address every interval, from the socket of (bind_device, source)."""
        if key in self._targets:
            raise ValueError(f"probe target {key!r} already exists; remove it first")
        # IPv4Address(an IPv4Address) formats and parses it again: only convert other types
        if type(address) is not IPv4Address:
            address = IPv4Address(address)
        if source is not None and type(source) is not IPv4Address:
            source = IPv4Address(source)
        bkey = (bind_device or None, source)
        binding = self._bindings.get(bkey)
        if binding is None:
            binding = _Binding(bkey[0], bkey[1], ident=self._free_ident())
            self._claim_ident(binding.ident)
            self._bindings[bkey] = binding
        binding.targets += 1
        target = _Target(key, address, (str(address), 0), address.packed, binding, on_result)
        self._targets[key] = target
        if self._loop is not None:  # its socket opens at its first probe (see _send):
            # the first probes are spread over an interval, and so is the cost of
            # opening a thousand sockets when a job adds a thousand tunnels
            self._schedule_first(target, self._loop.time())
            self._arm()

    def remove_target(self, key: Hashable) -> None:
        """Stop probing key; its outstanding probes are dropped without a result."""
        target = self._targets.pop(key, None)
        if target is None:
            return
        target.active = False  # its heap entry is skipped lazily
        binding = target.binding
        for seq in [s for s, p in binding.pending.items() if p.target is target]:
            del binding.pending[seq]
        binding.targets -= 1
        if binding.targets == 0:
            self._close(binding)
            self._release_ident(binding.ident)
            del self._bindings[(binding.device, binding.source)]

    def targets(self) -> list[Hashable]:
        return list(self._targets)

    # -- scheduling -------------------------------------------------------------

    def _schedule_first(self, target: _Target, now: float) -> None:
        self._counter += 1
        self._phase_index += 1
        phase = (self._phase_index * _GOLDEN) % 1.0
        target.due = now + phase * self.interval
        heapq.heappush(self._heap, (target.due, self._counter, target))

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        candidates = []
        if self._heap:
            candidates.append(self._heap[0][0])
        if self._expiry:
            candidates.append(self._expiry[0].deadline)
        if not candidates:
            return
        when = min(candidates)
        if self._timer_at is not None and self._timer_at <= when:
            return  # the armed timer fires first and re-arms
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._tick)
        self._timer_at = when

    def _tick(self) -> None:
        self._timer = self._timer_at = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        # expire first: a target's previous probe is settled before its next is sent
        self._expire(now)
        horizon = now + self._coalesce
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            due, _, target = heapq.heappop(heap)
            if not target.active:
                continue
            self._send(target, now)
            if not target.active or self._loop is None:
                continue  # removed or stopped from inside its result callback
            due += self.interval
            if due < now:  # the loop stalled: skip missed rounds instead of bursting
                due = now + self.interval
            target.due = due
            self._counter += 1
            heapq.heappush(heap, (due, self._counter, target))
        self._arm()

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0].deadline <= now:
            pending = expiry.popleft()
            binding = pending.target.binding
            if binding.pending.get(pending.seq) is not pending:
                continue  # answered or target removed
            del binding.pending[pending.seq]
            self.stats.timeouts += 1
            self._deliver(pending, None, f"no reply within {self.timeout:g} s")

    # -- sending ----------------------------------------------------------------

    def _send(self, target: _Target, now: float) -> None:
        binding = target.binding
        if binding.sock is None and now >= binding.retry_at:
            self._open(binding)
        sock = binding.sock
        binding.seq = next_sequence(binding.seq, binding.pending.__contains__)
        seq = binding.seq
        packet = build_echo_request(binding.ident, seq, self._payload)
        pending = _Pending(target, seq, time.monotonic_ns(), time.time_ns(), now + self.timeout)
        if sock is None:
            self.stats.send_errors += 1
            self._deliver(pending, None, binding.error or "probe socket unavailable")
            return
        try:
            sock.sendto(packet, target.sockaddr)
        except OSError as exc:
            self.stats.send_errors += 1
            self._deliver(pending, None, f"send failed: {exc.strerror or exc}")
            return
        self.stats.sent += 1
        binding.pending[seq] = pending
        self._expiry.append(pending)

    # -- receiving --------------------------------------------------------------

    def _on_readable(self, binding: _Binding) -> None:
        sock = binding.sock
        if sock is None:
            return
        raw = binding.kind == "raw"
        for _ in range(_RECV_BUDGET):
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # e.g. a queued ICMP error on a ping socket; nothing to match it to
                self._log.debug("probe socket receive error", binding=binding.describe(),
                                error=str(exc))
                return
            mono_ns = time.monotonic_ns()
            source = b"" if raw else socket.inet_aton(addr[0])
            parsed = parse_icmp(data, has_ip_header=raw, source=source)
            if parsed is None or not parsed.checksum_ok:
                self.stats.ignored += 1
                continue
            if parsed.type == ICMP_ECHO_REPLY:
                self._on_reply(binding, parsed, ancdata, mono_ns)
            elif parsed.type in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) and raw:
                self._on_error(binding, parsed)
            else:
                self.stats.ignored += 1

    def _on_reply(
        self,
        binding: _Binding,
        parsed: ParsedIcmp,
        ancdata: list[tuple[int, int, bytes]],
        mono_ns: int,
    ) -> None:
        # ping sockets rewrite the identifier to their port and demux themselves
        if binding.kind == "raw" and parsed.ident != binding.ident:
            self.stats.ignored += 1
            return
        pending = binding.pending.get(parsed.seq)
        if (
            pending is None
            or pending.target.packed != parsed.source
            or parsed.payload[:8] != self._cookie
        ):
            if pending is None and parsed.payload[:8] == self._cookie:
                self.stats.late += 1
            else:
                self.stats.ignored += 1
            return
        del binding.pending[parsed.seq]
        rtt_ns = mono_ns - pending.sent_mono_ns
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                kernel_ns = sec * 1_000_000_000 + nsec - pending.sent_real_ns
                if 0 <= kernel_ns <= rtt_ns + 1_000_000:  # tolerate slewing, reject steps
                    rtt_ns = min(kernel_ns, rtt_ns)
        self.stats.replies += 1
        self._deliver(pending, rtt_ns / 1e6, None)

    def _on_error(self, binding: _Binding, parsed: ParsedIcmp) -> None:
        quoted = quoted_echo(parsed.payload)
        if quoted is None:
            self.stats.ignored += 1
            return
        dst, ident, seq = quoted
        pending = binding.pending.get(seq)
        if ident != binding.ident or pending is None or pending.target.packed != dst:
            self.stats.ignored += 1
            return
        del binding.pending[seq]
        self.stats.icmp_errors += 1
        what = (
            _UNREACH_CODES.get(parsed.code, f"destination unreachable code {parsed.code}")
            if parsed.type == ICMP_DEST_UNREACH
            else "time to live exceeded"
        )
        self._deliver(pending, None, f"{what} from {IPv4Address(parsed.source)}")

    def _deliver(self, pending: _Pending, rtt_ms: float | None, error: str | None) -> None:
        target = pending.target
        result = ProbeResult(
            target.key, target.address, pending.seq, pending.sent_mono_ns / 1e9, rtt_ms, error
        )
        try:
            target.on_result(result)
        except Exception:
            self._log.exception("probe result callback failed", target=repr(target.key))

    # -- sockets ----------------------------------------------------------------

    def _free_ident(self) -> int:
        while True:
            ident = int.from_bytes(os.urandom(2), "big")
            if ident not in self._ident_users:
                return ident

    def _claim_ident(self, ident: int) -> None:
        self._ident_users[ident] = self._ident_users.get(ident, 0) + 1

    def _release_ident(self, ident: int) -> None:
        left = self._ident_users.get(ident, 0) - 1
        if left > 0:
            self._ident_users[ident] = left
        else:
            self._ident_users.pop(ident, None)

    def _open(self, binding: _Binding) -> None:
        if binding.sock is not None or self._loop is None:
            return
        try:
            sock, kind = self._make_socket(binding)
        except OSError as exc:
            error = f"cannot open probe socket ({binding.describe()}): {exc.strerror or exc}"
            if error != binding.error:
                self._log.warning("probe socket unavailable", binding=binding.describe(),
                                  error=exc.strerror or str(exc))
            binding.error = error
            binding.retry_at = self._loop.time() + self.interval
            return
        binding.sock, binding.kind, binding.error = sock, kind, None
        if kind == "dgram":  # the kernel's port is the identifier now
            self._release_ident(binding.ident)
            binding.ident = sock.getsockname()[1]
            self._claim_ident(binding.ident)
        self._loop.add_reader(sock.fileno(), self._on_readable, binding)
        self.stats.sockets += 1

    def _make_socket(self, binding: _Binding) -> tuple[socket.socket, Literal["raw", "dgram"]]:
        kinds: list[Literal["raw", "dgram"]] = (
            ["raw", "dgram"] if self._kind == "auto" else [self._kind]
        )
        last: OSError | None = None
        for kind in kinds:
            stype = socket.SOCK_RAW if kind == "raw" else socket.SOCK_DGRAM
            try:
                sock = socket.socket(socket.AF_INET, stype, socket.IPPROTO_ICMP)
            except PermissionError as exc:
                last = exc
                continue
            try:
                sock.setblocking(False)
                for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKBUF)
                with contextlib.suppress(OSError):  # else user-space receive stamps
                    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                if binding.device:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_BINDTODEVICE, binding.device.encode()
                    )
                if binding.source is not None or kind == "dgram":
                    sock.bind((str(binding.source or "0.0.0.0"), 0))
            except OSError:
                sock.close()
                raise
            if self._kind == "auto":
                self._kind = kind  # remember what this host allows
            return sock, kind
        assert last is not None
        raise last

    def _close(self, binding: _Binding) -> None:
        sock, binding.sock = binding.sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        self.stats.sockets -= 1
