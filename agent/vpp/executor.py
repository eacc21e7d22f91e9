"""Runs planned operations all-or-nothing.

Chains (one per peer connection) run concurrently so that many peers keep the
API socket busy (pipelining); inside a chain each step waits for the previous
one, because later steps use values VPP returned earlier. If any step fails,
every chain stops at its next step and all done steps are undone newest first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from agent.vpp.errors import VppError
from agent.vpp.plan import Op, resolve

log = structlog.get_logger(__name__)

MAX_CHAINS_IN_FLIGHT = 64


class VppCaller(Protocol):
    async def call(
        self, name: str, /, *, _timeout: float | None = None, _check: bool = True, **fields: Any
    ) -> Any: ...


class ApplyError(Exception):
    """A step failed; `rolled_back` tells whether VPP is exactly as before."""

    def __init__(self, op: Op, cause: Exception, undone: int, undo_errors: list[str]) -> None:
        self.op = op
        self.cause = cause
        self.rolled_back = not undo_errors
        self.undo_errors = undo_errors
        if self.rolled_back:
            tail = f"VPP restored to its previous state ({undone} steps undone)"
        else:
            tail = (f"ROLLBACK INCOMPLETE ({len(undo_errors)} undo steps failed: "
                    f"{'; '.join(undo_errors[:3])}); the agent will reconcile VPP")
        super().__init__(f"{op.what} failed: {cause}; {tail}")


class Executor:
    """Applies operation chains through a VPP caller and counts the writes."""

    def __init__(self, vpp: VppCaller) -> None:
        self._vpp = vpp
        self.writes = 0

    async def apply(self, chains: Sequence[Sequence[Op]], refs: dict[str, int]) -> None:
        """Run every chain; on failure undo everything done and raise ApplyError."""
        chains = [c for c in chains if c]
        if not chains:
            return
        done: list[list[Op]] = [[] for _ in chains]
        failure: list[tuple[Op, Exception]] = []

        async def run_chain(i: int) -> None:
            for op in chains[i]:
                if failure:
                    return
                try:
                    await self._step(op, refs)
                except (VppError, KeyError, ValueError) as e:
                    failure.append((op, e))
                    return
                done[i].append(op)

        try:
            if len(chains) == 1:
                await run_chain(0)
            else:
                # A bounded number of chains in flight: enough to keep the socket busy,
                # few enough that one event-loop pass stays short and the controller's
                # stats and commands are answered while a 1000-peer job runs.
                pending = iter(range(len(chains)))

                async def worker() -> None:
                    for i in pending:
                        await run_chain(i)

                await asyncio.gather(*(worker() for _ in
                                       range(min(len(chains), MAX_CHAINS_IN_FLIGHT))))
        except asyncio.CancelledError:
            # A job timeout must not leave half a peer behind: undo, then stop.
            errors: list[str] = []
            await asyncio.shield(asyncio.gather(
                *(self._undo(d, refs, errors) for d in done if d)))
            log.warning("apply cancelled and rolled back", undone=sum(len(d) for d in done),
                        rollback_errors=len(errors))
            raise
        if not failure:
            return
        op, cause = failure[0]
        undo_errors: list[str] = []
        undone = sum(len(d) for d in done)
        await asyncio.gather(*(self._undo(d, refs, undo_errors) for d in done if d))
        log.warning("apply failed", step=op.what, error=str(cause), undone=undone,
                    rollback_errors=len(undo_errors), tunnel_id=op.tunnel_id)
        raise ApplyError(op, cause, undone, undo_errors)

    async def _undo(self, done: list[Op], refs: dict[str, int], errors: list[str]) -> None:
        for op in reversed(done):
            for undo in op.undo:
                try:
                    await self._step(undo, refs)
                except (VppError, KeyError, ValueError) as e:
                    errors.append(f"{undo.what}: {e}")

    async def _step(self, op: Op, refs: dict[str, int]) -> Any:
        args = resolve(op.args, refs)
        self.writes += 1
        reply = await self._vpp.call(op.message, **args)
        if op.produces is not None:
            refs[op.produces] = int(getattr(reply, op.produces_field))
        return reply
