"""Desired state on disk: sqlite, one transaction per job, fsync'd before replying.

Two tables: `peers` (the acknowledged desired state) and `intents` (tunnel ids a
job is about to touch). Intents are written before VPP is programmed and cleared
in the same transaction that commits the job, so after a SIGKILL at any point
the agent knows which VPP objects may be half-made and reconciles them to the
last acknowledged state. The file holds PSKs: it is created 0600 in a 0700 dir.

The daemon writes through the `a`-prefixed methods, which run the blocking,
fsync'd transactions on the store's own writer thread (`SerialWriter`: in call
order, never on the event loop); the plain ones block and serve tools and tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.peers.codec import canonical_json, spec_from_dict
from agent.peers.spec import PeerSpec
from agent.serial_writer import SerialWriter, delete_rows, insert_rows, sqlite_has_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (tunnel_id INTEGER PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intents (tunnel_id INTEGER PRIMARY KEY);
"""


@dataclass(frozen=True)
class SpecRows:
    """Specs as the store's rows (canonical JSON: the CPU-heavy part of a commit)."""

    rows: list[tuple[int, str]]


def spec_rows(specs: Iterable[PeerSpec]) -> SpecRows:
    return SpecRows([(s.tunnel_id, canonical_json(s)) for s in specs])


class PeerStore:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)  # a pre-existing 0755 dir would expose the file names
        path = state_dir / "peers.sqlite"
        self.path = path
        self.recovered: str | None = None  # why a corrupt store was replaced, if it was
        self._lock = threading.Lock()  # the writer thread and the loop's reads
        self._writer = SerialWriter("peer-store")
        # what the check at start-up read, handed to the first load() unless a write
        # came first: start-up reads (and parses) a thousand rows once, not twice
        self._read: tuple[dict[int, PeerSpec], set[int]] | None = None
        try:
            self._db = self._open(path)
            self._read = self.load()  # every row must parse: an unreadable store is no store
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, sqlite3.OperationalError) and not _corrupt(e):
                raise  # locked, read-only, disk full: not the file's fault
            with contextlib.suppress(Exception):
                self._db.close()
            moved = _move_aside(path)
            self.recovered = (f"{path} could not be read ({type(e).__name__}: {e}); moved "
                              f"to {moved.name} for inspection, starting with no peers")
            self._db = self._open(path)
        self._json = sqlite_has_json(self._db)  # rows in one statement (serial_writer)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            row = db.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Finish the writes already called, then close the file."""
        self._writer.close()
        with self._lock:
            self._db.close()

    def load(self) -> tuple[dict[int, PeerSpec], set[int]]:
        with self._lock:
            if self._read is not None:
                read, self._read = self._read, None
                return read
            rows = self._db.execute("SELECT tunnel_id, spec FROM peers").fetchall()
            intents = {int(r[0]) for r in self._db.execute("SELECT tunnel_id FROM intents")}
        return {int(tid): spec_from_dict(json.loads(text)) for tid, text in rows}, intents

    # the daemon's writes: off the event loop, in call order; the plain method is
    # looked up at run time (a test can replace it to fail the write)

    async def abegin(self, tunnel_ids: Iterable[int]) -> None:
        await self._writer.run(self.begin, list(tunnel_ids))

    async def acommit(self, upserts: Iterable[PeerSpec] | SpecRows, deletes: Iterable[int],
                      clear: Iterable[int] | None = None) -> None:
        await self._writer.run(self.commit, upserts if isinstance(upserts, SpecRows)
                               else list(upserts), list(deletes),
                               None if clear is None else list(clear))

    async def aclear_intents(self, only: Iterable[int] | None = None) -> None:
        await self._writer.run(self.clear_intents, None if only is None else list(only))

    def begin(self, tunnel_ids: Iterable[int]) -> None:
        """Record that these tunnels are about to change in VPP."""
        with self._tx():  # an intent already recorded is replaced by the same row
            insert_rows(self._db, "intents", [(t,) for t in tunnel_ids], as_json=self._json)

    def commit(self, upserts: Iterable[PeerSpec] | SpecRows, deletes: Iterable[int],
               clear: Iterable[int] | None = None) -> None:
        """Make a job's outcome the acknowledged state and clear its intents (`clear`;
        None: all). Another job's intents stay until reconcile has finished them.
        `upserts` may be made into rows beforehand (`spec_rows`)."""
        rows = upserts if isinstance(upserts, SpecRows) else spec_rows(upserts)
        with self._tx():
            insert_rows(self._db, "peers", rows.rows, as_json=self._json)
            delete_rows(self._db, "peers", "tunnel_id", list(deletes), as_json=self._json)
            self._delete_intents(clear)

    def _delete_intents(self, only: Iterable[int] | None) -> None:
        if only is None:
            self._db.execute("DELETE FROM intents")
        else:
            delete_rows(self._db, "intents", "tunnel_id", list(only), as_json=self._json)

    def clear_intents(self, only: Iterable[int] | None = None) -> None:
        with self._tx():
            self._delete_intents(only)

    def _tx(self) -> _Transaction:
        with self._lock:
            self._read = None  # a write makes what start-up read stale
        return _Transaction(self._db, self._lock)


def _corrupt(e: sqlite3.OperationalError) -> bool:
    text = str(e).lower()
    return "malformed" in text or "not a database" in text or "no such" in text


def _move_aside(path: Path) -> Path:
    """Keep a corrupt store (and its WAL) for inspection under a new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
        n += 1
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


class _Transaction:
    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()
