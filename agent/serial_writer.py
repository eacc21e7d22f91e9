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

A job's rows go to SQLite in one statement per table (`insert_rows`, `delete_rows`):
`executemany` releases and retakes the interpreter lock for every row, and while the
event loop is busy (after a 5000-peer job) each retake waits for a switch interval;
one config-store save took 1.2 s that way.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

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


def sqlite_has_json(db: sqlite3.Connection) -> bool:
    """SQLite has its JSON functions built in since 3.38; older builds may lack them."""
    try:
        db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def _json_text(values: Sequence[Any], as_json: bool) -> str | None:
    """`values` (rows or keys) as one JSON array, or None where they must go row by row:
    no JSON functions, a text with a NUL (SQLite's JSON functions cut text there), or a
    value JSON cannot hold (row by row, SQLite refuses it with its own error)."""
    if not as_json or _has_nul(values):
        return None
    try:
        return json.dumps(values, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None


def _has_nul(values: Sequence[Any]) -> bool:
    return any("\0" in v if isinstance(v, str) else
               isinstance(v, list | tuple) and _has_nul(v) for v in values)


def insert_rows(db: sqlite3.Connection, table: str, rows: Sequence[Sequence[Any]], *,
                as_json: bool) -> None:
    """INSERT OR REPLACE every row (all of one width) into `table`."""
    if not rows:
        return
    width = len(rows[0])
    text = _json_text(rows, as_json)
    if text is None:
        db.executemany(f"INSERT OR REPLACE INTO {table} VALUES "
                       f"({', '.join('?' * width)})", rows)
        return
    columns = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(width))
    db.execute(f"INSERT OR REPLACE INTO {table} SELECT {columns} FROM json_each(?)", (text,))


def delete_rows(db: sqlite3.Connection, table: str, column: str, keys: Sequence[Any], *,
                as_json: bool) -> None:
    """DELETE the rows of `table` whose `column` is one of `keys`."""
    if not keys:
        return
    text = _json_text(keys, as_json)
    if text is None:
        db.executemany(f"DELETE FROM {table} WHERE {column} = ?", [(k,) for k in keys])
        return
    db.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))",
               (text,))
