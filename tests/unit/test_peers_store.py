"""Desired state on disk: round trip, permissions, intents, ordered off-loop writes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from agent.peers.store import PeerStore
from tests.spec_factory import TEST_PSK, numbered_spec


def test_store_survives_reopen_and_is_private(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "state")
    a, b = numbered_spec(1), numbered_spec(2)
    store.begin([1, 2])
    store.commit([a, b], [])
    store.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "peers.sqlite").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    again = PeerStore(tmp_path / "state")
    peers, intents = again.load()
    assert peers == {1: a, 2: b}
    assert intents == set()
    assert peers[1].psk.reveal() == TEST_PSK


def test_intents_outlive_a_crash_until_commit(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    store.begin([9])
    # simulated crash: a new process opens the same file
    peers, intents = PeerStore(tmp_path).load()
    assert (peers, intents) == ({}, {9})
    store.commit([numbered_spec(9)], [])
    assert PeerStore(tmp_path).load()[1] == set()
    store.commit([], [9])
    assert PeerStore(tmp_path).load()[0] == {}


async def test_daemon_writes_are_ordered_and_all_or_nothing(tmp_path: Path) -> None:
    store = PeerStore(tmp_path)
    a, b, c = numbered_spec(1), numbered_spec(2), numbered_spec(3)
    # called without waiting in between: they land in call order
    await asyncio.gather(store.abegin([1, 2]), store.acommit([a, b], [], clear=[1]),
                         store.aclear_intents([2]), store.abegin([3]))
    assert PeerStore(tmp_path).load() == ({1: a, 2: b}, {3})
    # a commit that fails part-way leaves nothing of itself behind
    with pytest.raises(sqlite3.Error):
        await store.acommit([c], [object()], clear=[3])
    assert PeerStore(tmp_path).load() == ({1: a, 2: b}, {3})
    await store.acommit([c], [1], clear=None)
    store.close()
    assert PeerStore(tmp_path).load() == ({2: b, 3: c}, set())


def test_start_up_reads_the_rows_once_and_a_write_makes_the_next_load_read_again(
        tmp_path: Path) -> None:
    first = PeerStore(tmp_path)
    first.commit([numbered_spec(1)], [])
    first.close()
    store = PeerStore(tmp_path)
    reads: list[str] = []
    store._db.set_trace_callback(reads.append)
    desired, _ = store.load()  # what the start-up check read
    assert set(desired) == {1} and not any("FROM peers" in r for r in reads)
    store.commit([numbered_spec(2)], [])
    desired, _ = store.load()
    assert set(desired) == {1, 2} and any("FROM peers" in r for r in reads)
    store.close()


@pytest.mark.parametrize("as_json", [True, False])
def test_a_jobs_rows_land_the_same_in_one_statement_or_row_by_row(
        tmp_path: Path, as_json: bool) -> None:
    """begin/commit write all their rows in one statement where SQLite has JSON
    functions (serial_writer.insert_rows), row by row otherwise: the same rows land."""
    store = PeerStore(tmp_path)
    if as_json and not store._json:
        pytest.skip("this SQLite has no JSON functions: only the row-by-row path exists")
    store._json = as_json
    specs = [numbered_spec(n) for n in range(1, 6)]
    store.begin([1, 2, 3, 4, 5, 6])
    store.commit(specs, [], clear=[1, 2, 3])
    store.commit([], [2, 4], clear=[4])
    store.close()
    assert PeerStore(tmp_path).load() == ({s.tunnel_id: s for s in specs
                                           if s.tunnel_id not in (2, 4)}, {5, 6})
