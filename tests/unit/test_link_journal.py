"""The exactly-once journal on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.link.handler import Outcome
from agent.link.journal import Journal


def test_outcomes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    j = Journal(path)
    fp = j.fingerprint("add-tunnel", {"tunnel-id": 7, "ikev2": {"psk": "S3cr3tPSK"}})
    j.record("1234", "add-tunnel", fp, Outcome(True, "success"))
    j.record("1235", "remove-tunnel", "x", Outcome(False, {"error": "no tunnel 9"}))
    j.close()

    j2 = Journal(path)
    entry = j2.lookup("1234")
    assert entry is not None and entry.outcome == Outcome(True, "success")
    assert entry.message == "add-tunnel"
    # The fingerprint key persists, so the same job fingerprints identically.
    assert entry.fingerprint == j2.fingerprint(
        "add-tunnel", {"ikev2": {"psk": "S3cr3tPSK"}, "tunnel-id": 7}
    )
    other = j2.lookup("1235")
    assert other is not None and other.outcome == Outcome(False, {"error": "no tunnel 9"})
    assert j2.lookup("9999") is None
    j2.close()


def test_files_are_private_and_wal_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        j = Journal(tmp_path / "j.sqlite3")
        j.record("1", "add-tunnel", "f", Outcome(True))
        for name in os.listdir(tmp_path):
            mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
        assert (tmp_path / "j.sqlite3-wal").exists()
        j.close()
    finally:
        os.umask(old)


def test_fingerprint_distinguishes_content_and_hides_the_psk(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    a = j.fingerprint("add-tunnel", {"ikev2": {"psk": "one"}})
    assert a != j.fingerprint("add-tunnel", {"ikev2": {"psk": "two"}})
    assert a != j.fingerprint("remove-tunnel", {"ikev2": {"psk": "one"}})
    # Keyed: another journal (another device) fingerprints the same job differently.
    other = Journal(tmp_path / "k.sqlite3")
    assert a != other.fingerprint("add-tunnel", {"ikev2": {"psk": "one"}})
    j.record("5", "add-tunnel", a, Outcome(True))
    j.close()
    other.close()
    assert b"one" not in (tmp_path / "j.sqlite3").read_bytes()


def test_rerecording_replaces_and_old_entries_are_pruned(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3", keep=100)
    j.record("1", "add-tunnel", "f1", Outcome(False, "first"))
    j.record("1", "add-tunnel", "f2", Outcome(True, "second"))
    e = j.lookup("1")
    assert e is not None and e.fingerprint == "f2" and e.outcome.message == "second"
    for i in range(2, 300):
        j.record(str(i), "add-tunnel", "f", Outcome(True))
    assert 100 <= len(j) <= 110
    assert j.lookup("1") is None and j.lookup("299") is not None
    j.close()


def test_corrupt_journal_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    j = Journal(path)
    j.record("1", "add-tunnel", "f", Outcome(True))
    assert j.lookup("1") is not None
    j.close()
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
