"""Work a job starts on a worker thread and collects later (or never, if it fails)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


def on_worker_thread(fn: Callable[..., _T], *args: Any) -> asyncio.Task[_T]:
    """Run `fn(*args)` on a worker thread from now; await the task for its result. A
    job that fails before awaiting it leaves no "exception never retrieved" behind."""
    task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args))
    task.add_done_callback(_seen)
    return task


def _seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
