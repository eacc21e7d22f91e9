"""Runs planned operations all-or-nothing.

Chains (one per peer connection) run concurrently so that many peers keep the
API socket busy (pipelining); inside a chain each step waits for the previous
one, because later steps use values VPP returned earlier. If any step fails,
every chain stops at its next step and all done steps are undone newest first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from agent.vpp.errors import VppApiError, VppError
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
        # Only a VPP answer proves a step did nothing; a lost connection or a timeout
        # leaves it unknown whether VPP applied it, so VPP cannot be called restored.
        self.uncertain = isinstance(cause, VppError) and not isinstance(cause, VppApiError)
        self.rolled_back = not undo_errors and not self.uncertain
        self.undo_errors = undo_errors
        if self.rolled_back:
            tail = f"VPP restored to its previous state ({undone} steps undone)"
        elif not undo_errors:
            tail = (f"{undone} steps undone, but VPP may have applied this step before the "
                    "answer was lost; the agent will reconcile VPP to the last acknowledged "
                    "state")
        else:
            tail = (f"ROLLBACK INCOMPLETE ({len(undo_errors)} undo steps failed: "
                    f"{'; '.join(undo_errors[:3])}); the agent will reconcile VPP to the "
                    "last acknowledged state as soon as VPP is reachable")
        super().__init__(f"{op.what} failed: {cause}; {tail}")


@dataclass(frozen=True)
class Applied:
    """The steps a successful apply did, per phase and chain, for a later rollback."""

    done: list[list[list[Op]]]

    @property
    def steps(self) -> int:
        return sum(len(d) for p in self.done for d in p)


class Executor:
    """Applies operation chains through a VPP caller and counts the writes."""

    def __init__(self, vpp: VppCaller) -> None:
        self._vpp = vpp
        self.writes = 0

    async def apply(self, chains: Sequence[Sequence[Op]], refs: dict[str, int]) -> Applied:
        """Run every chain; on failure undo everything done and raise ApplyError."""
        return await self.apply_phases([chains], refs)

    async def rollback(self, applied: Applied, refs: dict[str, int]) -> list[str]:
        """Undo a successful apply (e.g. its outcome could not be saved); the undo
        steps that failed, empty when VPP is exactly as before."""
        errors: list[str] = []
        await self._undo_phases(applied.done, refs, errors)
        log.warning("apply rolled back", undone=applied.steps, rollback_errors=len(errors))
        return errors

    async def apply_phases(self, phases: Sequence[Sequence[Sequence[Op]]],
                           refs: dict[str, int]) -> Applied:
        """Run each phase's chains concurrently, a phase only after the previous one
        finished (removals before the adds that re-use their endpoints, addresses
        or routes); on failure undo everything done in every phase, newest first."""
        done_phases: list[list[list[Op]]] = []
        failure: list[tuple[Op, Exception]] = []

        async def run_chain(chain: Sequence[Op], done: list[Op]) -> None:
            for op in chain:
                if failure:
                    return
                try:
                    await self._step(op, refs)
                except (VppError, KeyError, ValueError) as e:
                    failure.append((op, e))
                    return
                done.append(op)

        try:
            for phase in phases:
                chains = [c for c in phase if c]
                if not chains or failure:
                    continue
                done: list[list[Op]] = [[] for _ in chains]
                done_phases.append(done)
                if len(chains) == 1:
                    await run_chain(chains[0], done[0])
                    continue
                # A bounded number of chains in flight: enough to keep the socket busy,
                # few enough that one event-loop pass stays short and the controller's
                # stats and commands are answered while a 1000-peer job runs.
                pending = iter(zip(chains, done, strict=True))

                async def worker(work: Iterator[tuple[Sequence[Op], list[Op]]]) -> None:
                    for chain, chain_done in work:
                        await run_chain(chain, chain_done)

                await asyncio.gather(*(worker(pending) for _ in
                                       range(min(len(chains), MAX_CHAINS_IN_FLIGHT))))
        except asyncio.CancelledError:
            # A job timeout must not leave half a peer behind: undo, then stop.
            errors: list[str] = []
            await asyncio.shield(self._undo_phases(done_phases, refs, errors))
            log.warning("apply cancelled and rolled back",
                        undone=sum(len(d) for p in done_phases for d in p),
                        rollback_errors=len(errors))
            raise
        if not failure:
            return Applied(done_phases)
        op, cause = failure[0]
        undo_errors: list[str] = []
        undone = sum(len(d) for p in done_phases for d in p)
        await self._undo_phases(done_phases, refs, undo_errors)
        log.warning("apply failed", step=op.what, error=str(cause), undone=undone,
                    rollback_errors=len(undo_errors), tunnel_id=op.tunnel_id)
        raise ApplyError(op, cause, undone, undo_errors)

    async def _undo_phases(self, done_phases: list[list[list[Op]]], refs: dict[str, int],
                           errors: list[str]) -> None:
        for done in reversed(done_phases):
            await asyncio.gather(*(self._undo(d, refs, errors) for d in done if d))

    async def _undo(self, done: list[Op], refs: dict[str, int], errors: list[str]) -> None:
        """Undo one chain newest first; stop at the first failure: the older steps are
        what the failed one depends on (a tunnel deleted under its own route would leave
        that route dangling), and reconcile removes what is left, whole."""
        for op in reversed(done):
            for undo in op.undo:
                try:
                    await self._step(undo, refs)
                except (VppError, KeyError, ValueError) as e:
                    errors.append(f"{undo.what}: {e}")
                    return

    async def _step(self, op: Op, refs: dict[str, int]) -> Any:
        args = resolve(op.args, refs)
        self.writes += 1
        reply = await self._vpp.call(op.message, **args)
        if op.produces is not None:
            refs[op.produces] = int(getattr(reply, op.produces_field))
        return reply
