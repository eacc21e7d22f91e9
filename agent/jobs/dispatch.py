"""Controller messages -> validated changes -> the peer manager; outcomes back.

Implements the link's JobHandler. Every failure becomes an `ok: 0` outcome whose
text names what was wrong; nothing reaches VPP for a rejected job, and nothing
secret reaches an outcome (validation masks PSKs; internal errors are reported
by type only, details go to the log).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from agent import __version__
from agent.jobs.outcome import Outcome
from agent.jobs.validation import (
    AddRequest,
    JobRejected,
    ModifyRequest,
    RemoveRequest,
    SubRequest,
    ValidationPolicy,
    normalize_add_tunnel,
    normalize_aggregated,
    normalize_modify_tunnel,
    normalize_remove_tunnel,
    normalize_sync_device,
)
from agent.peers.manager import (
    AddPeer,
    Change,
    JobError,
    JobResult,
    ModifyTargets,
    PeerManager,
    RemovePeer,
)

log = structlog.get_logger(__name__)

SUPPORTED = ("add-tunnel", "remove-tunnel", "modify-tunnel", "aggregated", "sync-device")
StatsProvider = Callable[[], Awaitable[list[dict[str, Any]]]]
JobObserver = Callable[[str, bool, float], None]  # message, ok, seconds (metrics)


def _change(req: SubRequest) -> Change:
    if isinstance(req, AddRequest):
        return AddPeer(req.spec)
    if isinstance(req, RemoveRequest):
        return RemovePeer(req.tunnel_id)
    assert isinstance(req, ModifyRequest)
    return ModifyTargets(req.tunnel_id, req.monitor_ips, req.monitor_urls)


class JobDispatcher:
    """The agent's JobHandler for the controller link."""

    def __init__(
        self,
        manager: PeerManager,
        policy: ValidationPolicy,
        *,
        stats: StatsProvider,
        vpp_version: Callable[[], str] = lambda: "",
        observe: JobObserver | None = None,
    ) -> None:
        self.manager = manager
        self._observe = observe
        self.policy = policy
        self._stats = stats
        self._vpp_version = vpp_version

    async def run_job(self, message: str, params: Any, jobid: str) -> Outcome:
        started = time.monotonic()
        outcome = await self._run_job(message, params, jobid, started)
        if self._observe is not None:
            self._observe(message, outcome.ok, time.monotonic() - started)
        return outcome

    async def _run_job(self, message: str, params: Any, jobid: str, started: float) -> Outcome:
        bound = log.bind(jobid=jobid, job=message)
        try:
            result = await self._run(message, params if params is not None else {})
        except JobRejected as e:
            bound.warning("job rejected", reason=e.message)
            return Outcome(False, e.message)
        except JobError as e:
            bound.warning("job failed", reason=str(e))
            return Outcome(False, str(e))
        except Exception as e:  # a bug must not kill the session; its text may hold input
            bound.exception("job crashed", error_type=type(e).__name__)
            return Outcome(False, f"internal error while handling {message} "
                                  f"({type(e).__name__}); see the agent's log")
        bound.info("job done", seconds=round(time.monotonic() - started, 3),
                   writes=result.writes, notes=list(result.notes))
        for w in result.warnings:
            bound.warning("job warning", detail=w)
        return Outcome(True, "success")

    async def _run(self, message: str, params: Any) -> JobResult:
        if not isinstance(params, Mapping):
            raise JobError(f"{message}: params must be an object, got {type(params).__name__}")
        if message == "add-tunnel":
            spec = normalize_add_tunnel(params, self.policy)
            return await self.manager.apply([AddPeer(spec)])
        if message == "remove-tunnel":
            return await self.manager.apply([RemovePeer(normalize_remove_tunnel(params)
                                                        .tunnel_id)])
        if message == "modify-tunnel":
            return await self.manager.apply([_change(normalize_modify_tunnel(params))])
        if message == "aggregated":
            subs = normalize_aggregated(params, self.policy)
            return await self.manager.apply([_change(s) for s in subs])
        if message == "sync-device":
            return await self.manager.sync(normalize_sync_device(params, self.policy))
        raise JobError(f"{message} is not supported by this device (an IPsec peering agent "
                       f"handles {', '.join(SUPPORTED)}, get-device-info and get-device-stats)")

    async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
        tunnels = []
        for tid, spec in sorted(self.manager.desired.items()):
            tunnels.append({"tunnel-id": tid, "dst": str(spec.dst),
                            **self.manager.peer_summary(tid)})
        return {
            "device": __version__,
            "components": {
                "agent": {"version": __version__},
                "router": {"version": __version__},
                "vpp": {"version": self._vpp_version()},
                "frr": {"version": ""},
            },
            "tunnels": tunnels,
            "reconfig": "" if self.manager.in_sync else "vpp-out-of-sync",
        }

    async def device_stats(self) -> list[dict[str, Any]]:
        return await self._stats()

    def cfg_hash(self) -> str:
        return self.manager.cfg_hash()

