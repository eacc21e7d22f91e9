"""The recorded device configuration on disk: saved off the event loop, in call order,
each save all or nothing."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from pathlib import Path

import pytest

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
