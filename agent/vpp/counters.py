"""Interface rx/tx counters from VPP's statistics segment.

VPP 26.06's binary API has no interface counter dump (the old
``want_interface_combined_stats`` is gone); counters live only in the stats
segment, a shared-memory table that `vpp_papi.vpp_stats` maps read-only through
``statseg.socket-name``. Reading it costs no API round trip and does not touch
the API socket the agent programs VPP through. ``/if/rx`` and ``/if/tx`` are
combined counters: one row per VPP thread, one (packets, octets) pair per
sw_if_index; a device-wide total is the sum over threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FIELDS = ("rx_bytes", "rx_pkts", "tx_bytes", "tx_pkts")


@dataclass(frozen=True)
class Counters:
    rx_bytes: int
    rx_pkts: int
    tx_bytes: int
    tx_pkts: int

    def wire(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in _FIELDS}

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f) - getattr(other, f) for f in _FIELDS))


def combine(rx: Sequence[Sequence[Sequence[int]]],
            tx: Sequence[Sequence[Sequence[int]]]) -> dict[int, Counters]:
    """Per sw_if_index totals over threads of ``/if/rx`` and ``/if/tx`` (pure)."""
    width = max((len(row) for row in (*rx, *tx)), default=0)
    out = {}
    for sw in range(width):
        rp = sum(row[sw][0] for row in rx if sw < len(row))
        rb = sum(row[sw][1] for row in rx if sw < len(row))
        tp = sum(row[sw][0] for row in tx if sw < len(row))
        tb = sum(row[sw][1] for row in tx if sw < len(row))
        out[sw] = Counters(rb, rp, tb, tp)
    return out


def spread(total: Counters, weights: Sequence[float]) -> list[Counters]:
    """`total` shared out in proportion to `weights` (>= 0, summing to > 0), in whole
    units that add up to `total` exactly; a weight of 0 gets nothing (pure)."""
    whole = sum(weights)
    last = max(i for i, w in enumerate(weights) if w > 0)
    cumulative, out = 0.0, []
    before = Counters(0, 0, 0, 0)
    for i, w in enumerate(weights):
        cumulative += w
        # the last weighted entry takes what float rounding left: the parts add up exactly
        upto = total if i >= last else Counters(
            *(int(getattr(total, f) * cumulative / whole) for f in _FIELDS))
        out.append(upto - before)
        before = upto
    return out


def entry_spans(utcs: Sequence[float | None], since: float, now: float) -> list[float]:
    """How long each of a stats reply's entries covers, in seconds (pure): from the end
    of the one before it (`since` for the first) to its `utc`, the last one to `now`.
    A clock that went backwards gives 0; with no usable times every entry counts 1."""
    ends = [u if isinstance(u, int | float) else now for u in utcs[:-1]] + [now]
    spans, start = [], since
    for end in ends:
        span = end - start
        spans.append(span if span >= 0.001 else 0.0)
        start = max(start, end)
    return spans if sum(spans) > 0 else [1.0] * len(utcs)


def delta(previous: Mapping[Any, Counters], current: Mapping[Any, Counters]) -> dict[Any,
                                                                                    Counters]:
    """What was counted since `previous`; a counter that went backwards (VPP restarted,
    interface re-created) counts from zero."""
    out = {}
    for key, now in current.items():
        before = previous.get(key)
        if before is None or any(getattr(now, f) < getattr(before, f) for f in _FIELDS):
            out[key] = now if before is not None else Counters(0, 0, 0, 0)
            continue
        out[key] = now - before
    return out


class StatsSegment:
    """Blocking reader of the stats segment (call it in a worker thread)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._stats: Any = None

    def read(self) -> dict[int, Counters]:
        """Counters per sw_if_index; raises OSError when the segment is unavailable."""
        from vpp_papi.vpp_stats import VPPStats

        if not self.socket.exists():
            raise OSError(f"no VPP stats segment at {self.socket}")
        try:
            if self._stats is None:
                self._stats = VPPStats(str(self.socket), timeout=2)
                self._stats.connect()
            rx = [[tuple(p) for p in row] for row in self._stats.get_counter("/if/rx")]
            tx = [[tuple(p) for p in row] for row in self._stats.get_counter("/if/tx")]
        except Exception as e:  # a VPP restart unmaps the segment: reconnect next time
            self.close()
            raise OSError(f"VPP stats segment unreadable: {e}") from None
        return combine(rx, tx)

    def close(self) -> None:
        if self._stats is not None:
            with contextlib.suppress(Exception):  # already gone
                self._stats.disconnect()
            self._stats = None
