"""What the admin socket needs from the daemon, and the daemon's implementation of it.

`AdminBackend` is the only dependency of `AdminServer`: tests use a fake or
`ManagerBackend` over a real PeerManager; the daemon wires `ManagerBackend`
with its manager, VPP client, health source (monitor) and job journal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.logsetup import LEVELS, configure_logging
from agent.monitor.health import HealthSnapshot
from agent.peers.manager import PeerManager
from agent.peers.spec import PeerSpec
from agent.vpp.client import VppClient
from agent.vpp.kinds.profile import profile_name
from agent.vpp.readers import VppSummary, cli_crash_refusal, read_summary


class AdminError(Exception):
    """A request cannot be served; the message is one line for the operator."""


@dataclass(frozen=True)
class PeerView:
    """One row of `show peers`."""

    tunnel_id: int
    name: str  # the VPP IKEv2 profile name
    remote: str  # the peer's public address
    remote_id: str
    ike_state: str | None
    reason: str
    child_sas: int
    spis: str  # installed child SAs, "i_spi/r_spi" hex, comma-separated
    uptime: float | None  # seconds since the IKE SA was established
    rtt_ms: float | None
    jitter_ms: float | None
    drop_rate: float | None  # percent
    status: str  # connecting | up | down


class AdminBackend(Protocol):
    def peers(self) -> list[PeerView]: ...

    def spec(self, tunnel_id: int) -> PeerSpec | None: ...

    async def vpp_cli(self, cmd: str) -> str:
        """Run a vppctl command; raise AdminError with VPP's message if it fails."""
        ...

    async def vpp_summary(self) -> VppSummary: ...

    def recent_jobs(self, limit: int) -> list[dict[str, Any]]:
        """Newest first: {"jobid", "message", "ok", "reply", "recorded_at" (epoch s)}."""
        ...

    def log_level(self) -> str: ...

    def set_log_level(self, level: str) -> None:
        """Raise AdminError for an unknown level."""
        ...


HealthSource = Callable[[int], HealthSnapshot | None]
JobsSource = Callable[[int], list[dict[str, Any]]]


class ManagerBackend:
    """AdminBackend over the daemon's PeerManager, VppClient, monitor and journal."""

    def __init__(
        self,
        manager: PeerManager,
        vpp: VppClient,
        *,
        health: HealthSource | None = None,
        jobs: JobsSource | None = None,
        log_level: str = "info",
        apply_log_level: Callable[[str], None] = configure_logging,
        cli_timeout: float | None = None,
        policies: Callable[[], dict[str, Any]] | None = None,
        routing: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self._manager = manager
        self._vpp = vpp
        self._health = health
        self._jobs = jobs
        self._level = log_level
        self._apply_level = apply_log_level
        self._cli_timeout = cli_timeout
        self._policies = policies
        self._routing = routing

    def policy_status(self) -> dict[str, Any]:
        """The multilink policy for `show policies` (agent.policy.manager.status)."""
        return self._policies() if self._policies is not None else {"policy_id": None}

    async def routing_status(self) -> list[dict[str, Any]]:
        """Per peer routing for `show routing` (agent.routing.manager.peer_status)."""
        return await self._routing() if self._routing is not None else []

    def peers(self) -> list[PeerView]:
        rows = []
        for tid, spec in sorted(self._manager.desired.items()):
            st = self._manager.peer_summary(tid)
            snap = self._health(tid) if self._health is not None else None
            status, reason = str(st["status"]), str(st["reason"])
            if snap is not None:
                status = snap.status.value
                reason = snap.reason or reason
            rows.append(PeerView(
                tunnel_id=tid,
                name=profile_name(spec.tunnel_id),
                remote=str(spec.dst),
                remote_id=spec.remote_id.value,
                ike_state=st["ike_state"],
                reason=reason,
                child_sas=int(st["child_sas"]),
                spis=",".join(st.get("spis", [])),
                uptime=st["sa_uptime"],
                rtt_ms=snap.rtt_ms if snap is not None else None,
                jitter_ms=snap.jitter_ms if snap is not None else None,
                drop_rate=snap.drop_rate if snap is not None else None,
                status=status,
            ))
        return rows

    def spec(self, tunnel_id: int) -> PeerSpec | None:
        return self._manager.desired.get(tunnel_id)

    async def vpp_cli(self, cmd: str) -> str:
        if (why := await cli_crash_refusal(self._vpp, cmd)) is not None:
            raise AdminError(why)
        reply = await self._vpp.call("cli_inband", cmd=cmd, _check=False,
                                     _timeout=self._cli_timeout)
        text = str(reply.reply)
        if reply.retval < 0:
            first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
            raise AdminError(f"VPP refused the command: {first or f'retval {reply.retval}'}")
        return text

    async def vpp_summary(self) -> VppSummary:
        return await read_summary(self._vpp)

    def recent_jobs(self, limit: int) -> list[dict[str, Any]]:
        if self._jobs is None:
            return []
        return self._jobs(limit)

    def log_level(self) -> str:
        return self._level

    def set_log_level(self, level: str) -> None:
        level = level.lower()
        if level not in LEVELS:
            raise AdminError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
        self._apply_level(level)
        self._level = level
