"""The only contract between the controller link and the rest of the agent.

The link owns the wire (envelope, ordering, exactly-once journal, reconnects);
the handler owns meaning (validation of params, applying jobs, building the
device-info and stats bodies). The daemon wires a concrete handler in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from agent.jobs.messages import (
    DIRECT_MESSAGES,
    EXEC_TIMEOUT,
    GET_DEVICE_INFO,
    GET_DEVICE_STATS,
    QUERY_MESSAGES,
    reply_entity,
)
from agent.jobs.outcome import Outcome

__all__ = ["DIRECT_MESSAGES", "EXEC_TIMEOUT", "GET_DEVICE_INFO", "GET_DEVICE_STATS",
           "QUERY_MESSAGES", "DirectHandler", "JobHandler", "Outcome", "reply_entity"]

# The message kinds come from the registry (agent.jobs.messages): QUERY_MESSAGES are
# answered concurrently with a running job. DIRECT_MESSAGES are the controller's
# Command, Logs, Configuration, Routes, Traces and BGP tabs (issue 17), sent with
# `jobid: ""`; the link answers them through a DirectHandler (`agent.remote`),
# concurrently with a running job and in slots of their own, so a slow command never
# delays get-device-stats. `exec_timeout` also arrives as a job (flexiManage's upgrade
# scheduler): it then runs in order on the job worker, through the same DirectHandler.


class DirectHandler(Protocol):
    async def answer(self, message: str, params: Any) -> Outcome:
        """Answer one of DIRECT_MESSAGES; bounded in time by the handler itself."""
        ...


class JobHandler(Protocol):
    """Implemented by the agent's job layer (`agent.jobs`).

    Idempotency: flexiManage never re-sends a job it delivered (a lost reply
    makes the job fail with "Send Timeout" and the hash mismatch brings a
    sync-device). The link still journals outcomes so that a job id sent again
    with the same content (e.g. by an operator tool) is answered without running
    twice, and `run_job` is idempotent like flexiagent's configuration DB
    (adding an identical item or removing an absent one is a no-op success).

    Cancellation: a job exceeding `controller.job_timeout` is cancelled; the
    handler must leave no half-applied state behind (roll back on CancelledError).
    """

    async def run_job(self, message: str, params: Any, jobid: str,
                      original: Mapping[str, Any] | None = None) -> Outcome:
        """Apply one job (`add-tunnel`, `remove-tunnel`, ...). `original` is the msg
        object as received, which the configuration hash chain signs. Unknown
        messages return Outcome(False, "<message> is not supported ...")."""
        ...

    async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """The `message` object of the get-device-info reply, without `jobs`
        (the link adds the outcomes of the job ids the server asks about)."""
        ...

    async def device_stats(self) -> list[dict[str, Any]]:
        """The `message` list of the get-device-stats reply (oldest first)."""
        ...

    def cfg_hash(self) -> str:
        """The configuration hash chain (`router-cfg-hash`), sent in every ok:1 reply."""
        ...
