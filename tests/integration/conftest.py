"""Fixtures shared by the integration tests of the peer manager against vppsim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.lab.vppsim.server import VppSim
from tests.integration.test_peers_vpp import Agent


@pytest.fixture
async def agent(sim: VppSim, short_dir: Path) -> AsyncIterator[Agent]:
    """A manager, VPP client and store on this test's vppsim, as the daemon wires them."""
    a = Agent(sim.socket_path, short_dir / "state")
    await a.start()
    try:
        yield a
    finally:
        await a.close()
