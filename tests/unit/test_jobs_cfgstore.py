"""The recorded device configuration on disk: saved off the event loop, in call order,
each save all or nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.jobs.cfgstore import ConfigStore
from agent.jobs.devcfg import Items


async def test_saves_land_in_call_order_and_survive_reopen(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    one: Items = {"tunnel:1": ("add-tunnel", {"tunnel-id": 1, "mtu": 1400.0})}
    two: Items = {**one, "tunnel:2": ("add-tunnel", {"tunnel-id": 2})}
    three: Items = {"tunnel:2": two["tunnel:2"]}
    await asyncio.gather(store.asave({}, one, {"signature": "a"}),
                         store.asave(one, two, {"signature": "b"}),
                         store.asave(two, three, {"signature": "c", "router_state": "x"}))
    store.close()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    items, meta = ConfigStore(tmp_path).load()
    assert items == three and meta == {"signature": "c", "router_state": "x"}


async def test_a_failed_save_leaves_nothing_of_itself(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    one: Items = {"tunnel:1": ("add-tunnel", {"tunnel-id": 1})}
    await store.asave({}, one, {"signature": "a"})
    with pytest.raises(sqlite3.ProgrammingError, match="binding"):
        # the items are written, then a meta value sqlite cannot store fails the save
        await store.asave(one, {"tunnel:2": ("add-tunnel", {})},
                          {"signature": object()})
    assert store.load() == (one, {"signature": "a"})
    store.close()


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # any storable text


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.dictionaries(TEXT, st.tuples(TEXT, st.dictionaries(TEXT, TEXT, max_size=3)),
                             max_size=6),
       keep=st.sets(st.integers(0, 5)), extra=st.dictionaries(TEXT, TEXT, max_size=3))
@example(first={"k\0": ("m", {"a\0": "\0"}), "q\"\\": ("\U0001f600", {})}, keep={1},
         extra={"\0": "x"})
def test_any_text_survives_a_save_exactly(tmp_path_factory: pytest.TempPathFactory,
                                          first: dict[str, tuple[str, dict[str, str]]],
                                          keep: set[int], extra: dict[str, str]) -> None:
    """Rows go to SQLite as one JSON array per statement (row by row where SQLite has no
    JSON functions): quotes, backslashes, control characters, NUL and non-BMP text come
    back as they were, deletions included."""
    one: Items = dict(first)
    two: Items = {k: v for i, (k, v) in enumerate(one.items()) if i in keep}
    two.update({f"new{k}": ("add-route", {"v": v}) for k, v in extra.items()})
    for as_json in (True, False):
        store = ConfigStore(tmp_path_factory.mktemp("cfg"))
        if as_json and not store._json:
            store.close()
            continue  # this SQLite has no JSON functions: only the row-by-row path runs
        store._json = as_json
        store.save({}, one, {"signature": "a"})
        assert store.load() == (one, {"signature": "a"})
        store.save(one, two, {"signature": "b"})
        assert store.load() == (two, {"signature": "b"})
        store.close()
