"""Fixtures shared by the agent's tests: a vppsim per test on a short socket path."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.lab.vppsim.server import VppSim

WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path may not."""
    d = Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def sim(short_dir: Path) -> AsyncIterator[VppSim]:
    s = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
