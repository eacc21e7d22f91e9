"""Fixtures for vppsim tests: a simulator per test on a private socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from vppsim_helpers import WAN

from agent.lab.vppsim.ike import InProcessIke
from agent.lab.vppsim.server import VppSim


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "api.sock"


@pytest.fixture
async def sim(sock: Path) -> AsyncIterator[VppSim]:
    s = VppSim(
        sock, interfaces=WAN, ike=InProcessIke(delay=0.005, failed_linger=0.3, timeout_after=0.1)
    )
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
