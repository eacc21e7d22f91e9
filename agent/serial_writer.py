"""Blocking, fsync'd store transactions run off the event loop, one at a time, in order.

A store's write (sqlite, `synchronous=FULL`) waits for the disk: tens of
milliseconds, seconds on a busy or failing disk. On the event loop that stalls
the controller link, the probes and the admin socket. `SerialWriter` runs such
writes on one thread of the store's own, so they keep the order in which they
were called (a job's `begin` before its `commit`), and each stays one
all-or-nothing transaction.

Cancellation keeps the semantics a blocking write had: a write that has started
runs to its end and its outcome (result or error) reaches the caller, so the
caller's state in memory can follow the disk; the cancellation is then delivered
at the caller's next await, exactly where a write that blocked the loop would
have let it in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class SerialWriter:
    """One worker thread for one store's writes; `close()` waits for those queued."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the writer thread, after every write called before."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        task = asyncio.current_task()
        interrupted = False
        while not fut.done():
            try:
                await asyncio.wait((fut,))  # unlike awaiting fut, leaves it running
            except asyncio.CancelledError:
                if task is None:
                    raise
                interrupted = True
                task.uncancel()  # taken back: re-sent once the write has ended
        if interrupted:
            assert task is not None
            task.cancel()  # delivered at the caller's next await
        return fut.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
