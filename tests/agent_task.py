"""The whole agent running as the daemon runs it, for as long as a test needs it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from agent.app import Agent


@contextlib.asynccontextmanager
async def task_running(coro: Coroutine[Any, Any, Any], *,
                       must_end_by_cancel: bool = False) -> AsyncIterator[asyncio.Task[Any]]:
    """`coro` as a task for the block; cancelled, and awaited to its end, when the block
    ends. `must_end_by_cancel`: it must still be running then and end by that cancel."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        if must_end_by_cancel:
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    """`agent.run()` as a task; cancelled, and awaited to its end, when the block ends."""
    async with task_running(agent.run()):
        yield agent
