"""Boot order: the controller may deliver a job before VPP's API socket is up."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from agent.app import Agent
from agent.lab.controller_double import ControllerDouble
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.vpp.readers import read_observed
from tests.conftest import WAN
from tests.fixtures import example_request
from tests.integration.test_agent_e2e import DEVICE_TOKEN, MACHINE, make_config, ok
from tests.waiting import until


async def test_a_job_before_vpp_is_up_waits_for_it_and_stats_say_stopped(
        short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])  # not started yet: VPP boots
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=20.0)
    await ctl.start()
    agent = Agent(make_config(ctl, sim, short_dir / "state"),
                  name_resolver=offline_name_resolver)
    task = asyncio.create_task(agent.run())
    try:
        await ctl.wait_connected(10)
        stats = ok(await ctl.request("get-device-stats"))
        assert stats[-1]["state"] == "stopped" and stats[-1]["running"] is False
        assert stats[-1]["stateReason"].startswith("VPP is not connected")

        job = asyncio.create_task(
            ctl.send_job("add-tunnel", example_request()["params"], jobid=4242))
        await until(lambda: agent.manager.jobs_waiting_for_vpp == 1, 5)
        assert not job.done()
        await sim.start()
        reply = await asyncio.wait_for(job, 20)
        assert ok(reply) == "success"
        assert 7 in (await read_observed(agent.vpp)).tunnels
        stats = ok(await ctl.request("get-device-stats"))
        assert stats[-1]["state"] == "running" and stats[-1]["stateReason"] == ""
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ctl.stop()
        await sim.stop()
