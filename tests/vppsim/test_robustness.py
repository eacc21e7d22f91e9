"""vppsim answers every request, as VPP does, even when its own handler fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.lab.vppsim.server import VppSim
from agent.vpp.client import VppClient
from agent.vpp.errors import VppApiError


async def test_a_failing_handler_answers_unspecified_and_keeps_the_connection(
        short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[("GigabitEthernet0/3/0", "192.0.2.1/24")])
    await sim.start()
    vpp = VppClient(str(sim.socket_path))
    await vpp.start()
    try:
        await vpp.wait_connected(5)

        def broken(msg: Any) -> Any:
            raise KeyError("sk_ei")

        sim.handlers.table["cli_inband"] = broken
        with pytest.raises(VppApiError) as e:
            await vpp.cli("show ikev2 sa details")
        assert e.value.retval == -1
        assert vpp.connected and vpp.generation == 1
        assert (await vpp.call("show_version")).retval == 0
    finally:
        await vpp.close()
        await sim.stop()
