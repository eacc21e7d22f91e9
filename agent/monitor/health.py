"""Per-tunnel health maths: sliding window, RTT/jitter/drop, status with hysteresis.

Pure logic, no I/O and no clock of its own: every input carries the caller's
monotonic timestamp, so tests drive it with synthetic streams and exact results.

Decisions (the controller turns every status change into a user-visible
"Tunnel N state changed" notification, so flapping is the thing to avoid):

* A tunnel starts ``down`` and must prove it is up: with monitoring targets it
  needs ``up_after`` consecutive replies (default 3) from one of them while its SA
  is up; without targets it is up as soon as its SA is up.
* It goes down once every target has lost its last ``down_after`` probes (default
  3, i.e. 3 s at the 1 s default interval, quick enough for failover and immune to
  a single lost packet), or at once when the IKE/child SA goes down (with its
  reason). After an SA outage the success runs start again from zero.
* Several targets per tunnel: the tunnel is a path, and it works when any target
  answers. This is flexiAgent's rule too (`fwtunnel_stats.py`: one fping round over
  all of a peer's hosts, a success when any of them answered). So a monitor IP that
  never answers (a filtered host) neither keeps the tunnel from coming up nor takes
  it down while another target answers.
* The drop rate counts rounds, as flexiAgent does: each target keeps its last
  ``window`` results, the k-th latest result of every target is one round, and a
  round is lost when no target that has a k-th result answered in it. The RTT is the
  mean over every reply in those windows, 0.0 when there is none (what the
  controller expects with no target). Jitter compares each RTT with the previous RTT
  *of the same target*, so the RTT difference between two targets is not mistaken
  for jitter.
* Adding targets to a tunnel that is up keeps it up until the probes say
  otherwise; removing the last target hands the status back to the SA.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field


class Status(enum.StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class HealthConfig:
    window: int = 30  # rounds kept for rtt mean and drop rate
    ewma_alpha: float = 0.125  # RFC 6298 SRTT gain
    down_after: int = 3  # consecutive losses of every target that take the tunnel down
    up_after: int = 3  # consecutive replies of one target that bring it back up

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1 probe, got {self.window}")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError(
                f"down_after and up_after must be >= 1, got {self.down_after}, {self.up_after}"
            )


@dataclass(frozen=True)
class HealthSnapshot:
    """What the stats reply, peerctl and the alert evaluator read."""

    status: Status
    rtt_ms: float  # mean of the successful probes in the window, 0.0 if none
    jitter_ms: float  # RFC 3550 style estimator, per-target differences
    drop_rate: float  # percent of the window's rounds in which no target answered
    ewma_ms: float | None  # smoothed RTT over all replies so far, None before the first
    samples: int  # rounds in the window
    consecutive_ok: int  # the longest current run of replies of one target
    consecutive_lost: int  # probes every target has lost in a row
    since: float  # monotonic time of the last status change (or creation)
    reason: str  # why the status is what it is; "" when up
    sa_up: bool
    targets: int
    # False while a probed tunnel has neither been up nor lost down_after probes in a row
    # since monitoring began (a restarted agent's first seconds): its "down" is no verdict
    settled: bool = True


class _TargetRuns:
    """One target's recent results and current runs."""

    __slots__ = ("last_rtt", "lost_run", "ok_run", "results")

    def __init__(self, window: int) -> None:
        self.results: deque[float | None] = deque(maxlen=window)
        self.ok_run = 0
        self.lost_run = 0
        self.last_rtt: float | None = None


class TunnelHealth:
    """Health of one tunnel, fed with probe results and SA state changes."""

    def __init__(
        self,
        now: float,
        config: HealthConfig | None = None,
        *,
        sa_up: bool = False,
        sa_reason: str = "IKE SA not established",
        targets: Iterable[Hashable] = (),
    ) -> None:
        self.config = config or HealthConfig()
        self._runs: dict[Hashable, _TargetRuns] = {}
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._ewma: float | None = None
        self._jitter = 0.0
        self._targets: set[Hashable] = set(targets)
        self._sa_up = sa_up
        self._sa_reason = "" if sa_up else sa_reason
        self._status = Status.DOWN
        self._since = now
        self._reason = ""
        self._settled = False
        if self._sa_up and not self._targets:
            self._status = Status.UP
        else:
            self._reason = self._down_reason()

    # -- inputs ---------------------------------------------------------------

    def add_target(self, target: Hashable) -> None:
        self._targets.add(target)

    def remove_target(self, target: Hashable, now: float) -> None:
        """Forget a target; the last one gone hands the status back to the SA."""
        self._targets.discard(target)
        runs = self._runs.pop(target, None)
        if runs is not None:
            for rtt in runs.results:
                if rtt is not None:
                    self._rtt_sum -= rtt
                    self._rtt_count -= 1
        if not self._targets:
            self._reset_window()
            self._set_status(Status.UP if self._sa_up else Status.DOWN, now)

    def set_sa(self, up: bool, now: float, reason: str = "") -> None:
        """Record the IKE/child SA state; down wins immediately, up needs proof."""
        if not up or not self._sa_up:
            for runs in self._runs.values():  # replies from before the SA came up prove nothing
                runs.ok_run = 0
        self._sa_up = up
        self._sa_reason = "" if up else (reason or "IKE SA down")
        if not up:
            self._set_status(Status.DOWN, now)
        elif not self._targets:
            self._set_status(Status.UP, now)
        elif self._status is Status.DOWN:
            self._reason = self._down_reason()

    def record(self, target: Hashable, rtt_ms: float | None, now: float) -> None:
        """One probe result of one target: its RTT in ms, or None when lost."""
        if rtt_ms is not None and rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        runs = self._runs.get(target)
        if runs is None:
            runs = self._runs[target] = _TargetRuns(self.config.window)
        if len(runs.results) == runs.results.maxlen:
            evicted = runs.results[0]
            if evicted is not None:
                self._rtt_sum -= evicted
                self._rtt_count -= 1
        runs.results.append(rtt_ms)
        if rtt_ms is None:
            runs.lost_run += 1
            runs.ok_run = 0
        else:
            self._rtt_sum += rtt_ms
            self._rtt_count += 1
            runs.ok_run += 1
            runs.lost_run = 0
            self._ewma = (
                rtt_ms
                if self._ewma is None
                else self._ewma + self.config.ewma_alpha * (rtt_ms - self._ewma)
            )
            if runs.last_rtt is not None:
                self._jitter += (abs(rtt_ms - runs.last_rtt) - self._jitter) / 16.0
            runs.last_rtt = rtt_ms
        lost_run = self._lost_run()
        if lost_run >= self.config.down_after:
            self._settled = True
        if not self._sa_up:
            return  # the SA decides; probes cannot bring a tunnel without SA up
        if self._status is Status.UP and lost_run >= self.config.down_after:
            self._set_status(Status.DOWN, now)
        elif self._status is Status.DOWN and self._ok_run() >= self.config.up_after:
            self._set_status(Status.UP, now)
        elif self._status is Status.DOWN:
            self._reason = self._down_reason()

    # -- outputs --------------------------------------------------------------

    @property
    def status(self) -> Status:
        return self._status

    def snapshot(self) -> HealthSnapshot:
        rounds, lost = self._rounds()
        return HealthSnapshot(
            status=self._status,
            rtt_ms=self._rtt_sum / self._rtt_count if self._rtt_count else 0.0,
            jitter_ms=self._jitter,
            drop_rate=100.0 * lost / rounds if rounds else 0.0,
            ewma_ms=self._ewma,
            samples=rounds,
            consecutive_ok=self._ok_run(),
            consecutive_lost=self._lost_run(),
            since=self._since,
            reason=self._reason,
            sa_up=self._sa_up,
            targets=len(self._targets),
            settled=self._settled or not self._targets,
        )

    # -- internals ------------------------------------------------------------

    def _ok_run(self) -> int:
        return max((r.ok_run for r in self._runs.values()), default=0)

    def _lost_run(self) -> int:
        """Probes lost in a row by every target that has reported (0 before any has)."""
        return min((r.lost_run for r in self._runs.values() if r.results), default=0)

    def _rounds(self) -> tuple[int, int]:
        """(rounds in the window, rounds in which no target answered)."""
        windows = [r.results for r in self._runs.values() if r.results]
        if len(windows) == 1:  # the common case: one target, one result per round
            only = windows[0]
            return len(only), sum(1 for rtt in only if rtt is None)
        rounds = max((len(w) for w in windows), default=0)
        lost = sum(1 for k in range(1, rounds + 1)
                   if all(w[-k] is None for w in windows if len(w) >= k))
        return rounds, lost

    def _reset_window(self) -> None:
        self._runs.clear()
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._jitter = 0.0

    def _down_reason(self) -> str:
        if not self._sa_up:
            return self._sa_reason
        lost_run = self._lost_run()
        if lost_run >= self.config.down_after:
            every = " by every target" if len(self._runs) > 1 else ""
            return f"{lost_run} consecutive probes lost{every}"
        return (
            f"waiting for {self.config.up_after} consecutive probe replies"
            f" ({self._ok_run()} so far)"
        )

    def _set_status(self, status: Status, now: float) -> None:
        if status is Status.UP:
            self._settled = True
        if status is not self._status:
            self._status = status
            self._since = now
        self._reason = "" if status is Status.UP else self._down_reason()


# -- alerts -------------------------------------------------------------------

RTT_EVENT = "Link/Tunnel round trip time"
DROP_EVENT = "Link/Tunnel default drop rate"


class Severity(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True)
class AlertConfig:
    """Thresholds (controller defaults) and the sample counts that debounce alerts.

    An alert is raised when at least ``raise_after`` of the last ``samples``
    evaluations reached its severity and cleared once ``clear_after`` of them
    are below it, so one bad stats period neither raises nor clears an alert.
    """

    drop_warning: float = 5.0  # percent
    drop_critical: float = 20.0
    rtt_warning: float = 300.0  # ms
    rtt_critical: float = 600.0
    samples: int = 10
    raise_after: int = 6
    clear_after: int = 6

    def __post_init__(self) -> None:
        if not 0 < self.raise_after <= self.samples or not 0 < self.clear_after <= self.samples:
            raise ValueError(
                f"raise_after ({self.raise_after}) and clear_after ({self.clear_after}) "
                f"must be between 1 and samples ({self.samples})"
            )
        if self.drop_warning > self.drop_critical or self.rtt_warning > self.rtt_critical:
            raise ValueError("warning thresholds must not exceed critical thresholds")


@dataclass(frozen=True)
class Alert:
    event: str
    tunnel_id: int
    severity: Severity
    value: float
    threshold: float
    unit: str

    def to_wire(self) -> dict[str, object]:
        return {
            "value": round(self.value, 3),
            "threshold": self.threshold,
            "severity": self.severity.name.lower(),
            "unit": self.unit,
            "type": "tunnel",
        }


@dataclass
class _Track:
    marks: deque[Severity] = field(default_factory=deque)
    active: Severity = Severity.OK


class AlertEvaluator:
    """Device-side alert evaluation over successive health snapshots.

    Call `evaluate` once per stats period with every tunnel's snapshot. Tunnels
    that are down are skipped (their down state is the notification; alerts on
    top would be symptoms) and keep their last alert state.
    """

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._alerts: dict[tuple[str, int], Alert] = {}

    def evaluate(self, snapshots: Mapping[int, HealthSnapshot]) -> dict[str, dict[str, object]]:
        """Feed one period; return the active alerts in the controller's layout."""
        for key in [k for k in self._tracks if k[1] not in snapshots]:
            del self._tracks[key]
            self._alerts.pop(key, None)
        c = self.config
        for tunnel_id, snap in snapshots.items():
            if snap.status is not Status.UP or snap.targets == 0:
                continue
            self._feed(RTT_EVENT, tunnel_id, snap.rtt_ms, c.rtt_warning, c.rtt_critical, "ms")
            self._feed(DROP_EVENT, tunnel_id, snap.drop_rate, c.drop_warning, c.drop_critical, "%")
        return self.wire()

    def active(self) -> list[Alert]:
        return sorted(self._alerts.values(), key=lambda a: (a.event, a.tunnel_id))

    def wire(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for alert in self.active():
            out.setdefault(alert.event, {})[str(alert.tunnel_id)] = alert.to_wire()
        return out

    def _feed(
        self, event: str, tunnel_id: int, value: float, warning: float, critical: float, unit: str
    ) -> None:
        mark = (
            Severity.CRITICAL
            if value >= critical
            else Severity.WARNING
            if value >= warning
            else Severity.OK
        )
        track = self._tracks.setdefault((event, tunnel_id), _Track())
        track.marks.append(mark)
        if len(track.marks) > self.config.samples:
            track.marks.popleft()
        at_least = {s: sum(1 for m in track.marks if m >= s) for s in Severity}
        raised = Severity.OK
        for severity in (Severity.CRITICAL, Severity.WARNING):
            if at_least[severity] >= self.config.raise_after:
                raised = severity
                break
        if raised > track.active:
            track.active = raised
        elif track.active is not Severity.OK and mark < track.active:
            # clear (or step down) once enough periods were below the active level
            below = len(track.marks) - at_least[track.active]
            if below >= self.config.clear_after:
                track.active = raised
        key = (event, tunnel_id)
        if track.active is Severity.OK:
            self._alerts.pop(key, None)
        else:
            threshold = critical if track.active is Severity.CRITICAL else warning
            self._alerts[key] = Alert(event, tunnel_id, track.active, value, threshold, unit)


def alerts_hash(alerts: Mapping[str, Mapping[str, object]]) -> str:
    """Hash of the alert set that ignores the changing value/threshold numbers.

    Lets the controller skip unchanged alert sets; "" when there is no alert.
    """
    if not alerts:
        return ""
    stable = {
        event: {
            tid: {k: v for k, v in entry.items() if k not in ("value", "threshold")}
            if isinstance(entry, Mapping)
            else entry
            for tid, entry in per_tunnel.items()
        }
        for event, per_tunnel in alerts.items()
    }
    blob = json.dumps(stable, sort_keys=True).encode()
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()
