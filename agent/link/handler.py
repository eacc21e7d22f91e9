"""The only contract between the controller link and the rest of the agent.

The link owns the wire (envelope, ordering, exactly-once journal, reconnects);
the handler owns meaning (validation of params, applying jobs, building the
device-info and stats bodies). The daemon wires a concrete handler in.
"""

from __future__ import annotations

from typing import Any, Protocol

from agent.jobs.outcome import Outcome

__all__ = ["GET_DEVICE_INFO", "GET_DEVICE_STATS", "QUERY_MESSAGES", "JobHandler", "Outcome"]

# Non-job messages the link answers concurrently with a running job.
GET_DEVICE_INFO = "get-device-info"
GET_DEVICE_STATS = "get-device-stats"
QUERY_MESSAGES = frozenset({GET_DEVICE_INFO, GET_DEVICE_STATS})


class JobHandler(Protocol):
    """Implemented by the agent's job layer (`agent.jobs`).

    Idempotency: the link guarantees a job id is applied at most once *per
    journaled outcome*; if the agent crashes after applying a job but before its
    outcome reaches the journal, the controller re-sends it and `run_job` sees it
    again. `run_job` must therefore be idempotent (adding an existing identical
    tunnel is a no-op success, removing an absent one likewise).

    Cancellation: a job exceeding `controller.job_timeout` is cancelled; the
    handler must leave no half-applied state behind (roll back on CancelledError).
    """

    async def run_job(self, message: str, params: Any, jobid: str) -> Outcome:
        """Apply one job (`add-tunnel`, `remove-tunnel`, ...). Unknown messages
        return Outcome(False, "<message> is not supported ...")."""
        ...

    async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """The `message` object of the get-device-info reply, without `jobs`
        (the link adds the outcomes of the job ids the server asks about)."""
        ...

    async def device_stats(self) -> list[dict[str, Any]]:
        """The `message` list of the get-device-stats reply (oldest first)."""
        ...

    def cfg_hash(self) -> str:
        """Hash of the stored desired configuration (`router-cfg-hash`)."""
        ...
