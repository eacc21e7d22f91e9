"""The recorded device configuration, the hash chain and the router state, on disk.

One sqlite file (``device-config.sqlite``, 0600: tunnel items hold PSKs) in the
state directory. Every job's changes (items, signature, router state) are one
fsync'd transaction, written after the peer store committed the VPP part, so a
crash in between leaves the signature behind and flexiManage repairs it with a
`sync-device`. Params are stored as canonical wire JSON, so float text survives.
The daemon saves with `asave`, on the store's own writer thread (in call order,
never on the event loop).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

from agent.jobs.devcfg import Items
from agent.jobs.wirejson import canonical, loads
from agent.serial_writer import SerialWriter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, message TEXT NOT NULL,
                                  params TEXT NOT NULL);
"""


Rows = tuple[list[tuple[str, str, str]], list[tuple[str]]]  # upserts, deletes


def difference(old: Items, new: Items) -> Rows:
    """The rows that take the store from `old` to `new` (canonical JSON of each changed
    item: the CPU-heavy part of a save, which a caller may do ahead of time)."""
    upserts = [(k, m, canonical(p)) for k, (m, p) in new.items()
               if k not in old or old[k] != (m, p)]
    return upserts, [(k,) for k in old if k not in new]


def _has_json(db: sqlite3.Connection) -> bool:
    """SQLite has its JSON functions built in since 3.38; older builds may lack them."""
    try:
        db.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def _write_items(db: sqlite3.Connection, upserts: list[tuple[str, str, str]],
                 deletes: list[tuple[str]], *, as_json: bool) -> None:
    """All rows in one statement each, handed over as one JSON array: `executemany`
    releases and retakes the interpreter lock for every row, and while the event loop
    is busy (after a 5000-peer job) each retake waits for its switch interval: 1.2 s
    for one save. Text with a NUL (which SQLite's JSON functions cut) goes row by row,
    as everything does where SQLite has no JSON functions."""
    texts = [t for row in upserts for t in row] + [k for (k,) in deletes]
    if not as_json or any("\0" in t for t in texts):
        db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", upserts)
        db.executemany("DELETE FROM items WHERE key = ?", deletes)
        return
    if upserts:
        db.execute("INSERT OR REPLACE INTO items SELECT json_extract(value, '$[0]'), "
                   "json_extract(value, '$[1]'), json_extract(value, '$[2]') "
                   "FROM json_each(?)", (json.dumps(upserts, ensure_ascii=False),))
    if deletes:
        db.execute("DELETE FROM items WHERE key IN (SELECT value FROM json_each(?))",
                   (json.dumps([k for (k,) in deletes], ensure_ascii=False),))


class ConfigStore:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / "device-config.sqlite"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self.path = path
        self._lock = threading.Lock()
        self._writer = SerialWriter("config-store")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._json = _has_json(self._db)

    def load(self) -> tuple[Items, dict[str, str]]:
        with self._lock:
            items: Items = {
                key: (message, loads(params))
                for key, message, params in self._db.execute(
                    "SELECT key, message, params FROM items")
            }
            meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        return items, meta

    def save(self, old: Items, new: Items, meta: dict[str, str],
             rows: Rows | None = None) -> None:
        """Write the difference between `old` and `new` and the meta values atomically;
        `rows` is that difference made beforehand (`difference`), to write as it is."""
        upserts, deletes = rows if rows is not None else difference(old, new)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                _write_items(self._db, upserts, deletes, as_json=self._json)
                self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     list(meta.items()))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    async def asave(self, old: Items, new: Items, meta: dict[str, str],
                    rows: Rows | None = None) -> None:
        """`save` on the writer thread; `old` and `new` must not change meanwhile."""
        await self._writer.run(self.save, old, new, meta, rows)

    def close(self) -> None:
        """Finish the saves already called, then close the file."""
        self._writer.close()
        with self._lock:
            self._db.close()

