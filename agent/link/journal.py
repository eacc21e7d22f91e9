"""The exactly-once journal: the recorded outcome of every job, keyed by job id.

sqlite3 in WAL mode with ``synchronous=FULL``: each `record()` returns only
after the commit is fsync'd, and the link sends a job's reply only after that,
so a reply the controller saw always survives a crash, and a job that flexiManage
failed with Send Timeout can be reported complete when it asks for it in
get-device-info. flexiManage never re-sends a job: in the converse window (crash
after the handler applied a job, before its outcome was recorded) the job fails
there, its hash has advanced, and the sync-device that follows repairs the device.

Job ids are counters of the controller's queue and restart from 1 when the
controller's database is reset, so each entry also stores a fingerprint of the
job's content (HMAC-SHA256 of message + params with a key private to this
journal, so no digest of a PSK is stored that could be brute-forced offline).
A known id with a different fingerprint is a new job, not a replay.

The methods are blocking (short fsync'd transactions); the link calls them
through `asyncio.to_thread`, a lock serialises them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.link.handler import Outcome

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
    seqno INTEGER PRIMARY KEY AUTOINCREMENT,
    jobid TEXT NOT NULL UNIQUE,
    message TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ok INTEGER NOT NULL,
    reply TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
"""


def received_at_text(at: float | None) -> str:
    """flexiagent's job time format, e.g. ``Jun 08, 2022, 05:01 AM`` (UTC; now if None)."""
    return time.strftime("%b %d, %Y, %I:%M %p", time.gmtime(time.time() if at is None else at))


@dataclass(frozen=True)
class JournalEntry:
    jobid: str
    message: str
    fingerprint: str
    outcome: Outcome
    recorded_at: float


class Journal:
    """Job outcomes on disk. Open once at startup, `close()` at shutdown."""

    def __init__(self, path: Path, keep: int = 10000) -> None:
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            # A corrupt journal must not keep the device offline: set it aside
            # (for post-mortem) and start empty; idempotent handlers absorb replays.
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error(
                "job journal unreadable, starting a new one",
                path=str(path),
                moved_to=str(aside),
                error=str(exc),
            )
            os.replace(path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self._db = self._open()
        row = self._db.execute("SELECT value FROM meta WHERE name = 'hmac_key'").fetchone()
        if row is None:
            key = secrets.token_bytes(32)
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('hmac_key', ?)", (key,))
        else:
            key = bytes(row[0])
        self._key = key

    def _open(self) -> sqlite3.Connection:
        # Create the file 0600 before sqlite does (its -wal/-shm inherit the mode).
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"cannot enable WAL (journal_mode={mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM outcomes").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def fingerprint(self, message: str, params: Any) -> str:
        blob = json.dumps(
            {"message": message, "params": params}, sort_keys=True, separators=(",", ":")
        ).encode()
        return hmac.new(self._key, blob, hashlib.sha256).hexdigest()

    def lookup(self, jobid: str) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT jobid, message, fingerprint, ok, reply, recorded_at "
                "FROM outcomes WHERE jobid = ?",
                (jobid,),
            ).fetchone()
        if row is None:
            return None
        return JournalEntry(
            jobid=row[0],
            message=row[1],
            fingerprint=row[2],
            outcome=Outcome(ok=bool(row[3]), message=json.loads(row[4])),
            recorded_at=row[5],
        )

    def record(self, jobid: str, message: str, fingerprint: str, outcome: Outcome) -> None:
        """Store (or replace) a job's outcome; returns after the commit is on disk."""
        reply = json.dumps(outcome.message)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM outcomes WHERE jobid = ?", (jobid,))
            self._db.execute(
                "INSERT INTO outcomes (jobid, message, fingerprint, ok, reply, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (jobid, message, fingerprint, int(outcome.ok), reply, time.time()),
            )
            # Prune in batches (10 % slack) so a steady stream costs one DELETE rarely.
            (count,) = self._db.execute("SELECT count(*) FROM outcomes").fetchone()
            if count > self.keep + self.keep // 10:
                self._db.execute(
                    "DELETE FROM outcomes WHERE seqno IN "
                    "(SELECT seqno FROM outcomes ORDER BY seqno LIMIT ?)",
                    (count - self.keep,),
                )

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest outcomes first, for `peerctl show jobs`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT jobid, message, ok, reply, recorded_at FROM outcomes "
                "ORDER BY seqno DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{"jobid": r[0], "message": r[1], "ok": bool(r[2]), "reply": json.loads(r[3]),
                 "recorded_at": r[4]} for r in rows]

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM outcomes").fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
