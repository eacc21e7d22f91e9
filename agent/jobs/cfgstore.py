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

import os
import sqlite3
import threading
from pathlib import Path

from agent.jobs.devcfg import Items
from agent.jobs.wirejson import canonical, loads
from agent.serial_writer import SerialWriter, delete_rows, insert_rows, sqlite_has_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, message TEXT NOT NULL,
                                  params TEXT NOT NULL);
"""


Rows = tuple[list[tuple[str, str, str]], list[tuple[str]]]  # upserts, deletes


def difference(old: Items, new: Items, texts: dict[int, str] | None = None) -> Rows:
    """The rows that take the store from `old` to `new` (canonical JSON of each changed
    item: the CPU-heavy part of a save, which a caller may do ahead of time). `texts`
    collects each written dict's text by id, for a `canonical` of the job after it."""
    upserts = []
    for k, (m, p) in new.items():
        if k not in old or old[k] != (m, p):
            text = canonical(p)
            if texts is not None and isinstance(p, dict):
                texts[id(p)] = text
            upserts.append((k, m, text))
    return upserts, [(k,) for k in old if k not in new]


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
        self._json = sqlite_has_json(self._db)  # rows in one statement (serial_writer)

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
                insert_rows(self._db, "items", upserts, as_json=self._json)
                delete_rows(self._db, "items", "key", [k for (k,) in deletes],
                            as_json=self._json)
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

