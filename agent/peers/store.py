"""Desired state on disk: sqlite, one transaction per job, fsync'd before replying.

Two tables: `peers` (the acknowledged desired state) and `intents` (tunnel ids a
job is about to touch). Intents are written before VPP is programmed and cleared
in the same transaction that commits the job, so after a SIGKILL at any point
the agent knows which VPP objects may be half-made and reconciles them to the
last acknowledged state. The file holds PSKs: it is created 0600 in a 0700 dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from agent.peers.codec import canonical_json, spec_from_dict
from agent.peers.spec import PeerSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (tunnel_id INTEGER PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intents (tunnel_id INTEGER PRIMARY KEY);
"""


class PeerStore:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)  # a pre-existing 0755 dir would expose the file names
        path = state_dir / "peers.sqlite"
        self.path = path
        self.recovered: str | None = None  # why a corrupt store was replaced, if it was
        try:
            self._db = self._open(path)
            self.load()  # every row must parse: a store that cannot be read is no store
        except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, sqlite3.OperationalError) and not _corrupt(e):
                raise  # locked, read-only, disk full: not the file's fault
            with contextlib.suppress(Exception):
                self._db.close()
            moved = _move_aside(path)
            self.recovered = (f"{path} could not be read ({type(e).__name__}: {e}); moved "
                              f"to {moved.name} for inspection, starting with no peers")
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        db = sqlite3.connect(path, isolation_level=None)
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
        self._db.close()

    def load(self) -> tuple[dict[int, PeerSpec], set[int]]:
        peers = {
            int(tid): spec_from_dict(json.loads(text))
            for tid, text in self._db.execute("SELECT tunnel_id, spec FROM peers")
        }
        intents = {int(r[0]) for r in self._db.execute("SELECT tunnel_id FROM intents")}
        return peers, intents

    def begin(self, tunnel_ids: Iterable[int]) -> None:
        """Record that these tunnels are about to change in VPP."""
        with self._tx():
            self._db.executemany("INSERT OR IGNORE INTO intents VALUES (?)",
                                 [(t,) for t in tunnel_ids])

    def commit(self, upserts: Iterable[PeerSpec], deletes: Iterable[int],
               clear: Iterable[int] | None = None) -> None:
        """Make a job's outcome the acknowledged state and clear its intents (`clear`;
        None: all). Another job's intents stay until reconcile has finished them."""
        with self._tx():
            self._db.executemany("INSERT OR REPLACE INTO peers VALUES (?, ?)",
                                 [(s.tunnel_id, canonical_json(s)) for s in upserts])
            self._db.executemany("DELETE FROM peers WHERE tunnel_id = ?",
                                 [(t,) for t in deletes])
            self._delete_intents(clear)

    def _delete_intents(self, only: Iterable[int] | None) -> None:
        if only is None:
            self._db.execute("DELETE FROM intents")
        else:
            self._db.executemany("DELETE FROM intents WHERE tunnel_id = ?",
                                 [(t,) for t in only])

    def clear_intents(self, only: Iterable[int] | None = None) -> None:
        with self._tx():
            self._delete_intents(only)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


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
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
