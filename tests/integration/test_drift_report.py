"""Drift in VPP is reported to the controller (issue 15, case 11): through the whole agent
and the controller double, which holds flexiManage 6.3's sync rules."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from agent.app import Agent
from agent.config import parse_config
from agent.jobs.dispatch import DRIFT_SIGNATURE
from agent.lab.controller_double import ControllerDouble
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.vpp.readers import read_observed
from tests.agent_task import running
from tests.fixtures import example_request
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000d41f"
TOKEN = "device-token-drift-never-logged"


@contextlib.asynccontextmanager
async def agent_under(ctl: ControllerDouble, sim: VppSim, d: Path) -> AsyncIterator[Agent]:
    token = d / "device.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3,
                       "ping_interval": 0.5, "silence_timeout": 5.0},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(d / "state")},
        "peers": {"sa_poll_interval": 0.2, "drift_check_interval": 0.3},
        "routing": {"vtysh": ""},
        "admin": {"socket": str(d / "admin.sock")},
        "logging": {"level": "warning"},
    }, {})
    async with running(Agent(cfg, name_resolver=offline_name_resolver)) as agent:
        yield agent


async def test_repaired_drift_makes_fleximanage_sync_the_device(
        sim: VppSim, short_dir: Path) -> None:
    ctl = ControllerDouble(machine_id=MACHINE, device_token=TOKEN, ping_interval=0.5,
                           stats_interval=0.2, job_timeout=10.0)
    async with ctl, agent_under(ctl, sim, short_dir) as agent:
        await ctl.wait_ready(10)
        reply = await ctl.send_job("add-tunnel", example_request()["params"])
        assert reply["msg"]["ok"] == 1
        await until(lambda: agent.manager.in_sync)
        # the controller's periodic check: in sync, nothing to send
        await until(lambda: len(ctl.stats_replies) >= 3 and ctl.sync_state == "synced")
        assert ctl.sync_jobs == []

        # vppctl deletes the tunnel's IKE profile behind the agent's back
        sw = (await read_observed(agent.vpp)).tunnels[7].sw_if_index
        await agent.vpp.call("ikev2_profile_add_del", name="peer-7", is_add=False)
        await until(lambda: agent.manager.drift_repairs >= 1, 10)
        # repaired by the agent, and told: flexiManage sees the hash differ and sends
        # its automatic sync-device, whose reply brings the device back to synced
        await until(lambda: any(f.direction == "in" and DRIFT_SIGNATURE in str(f.data)
                                for f in ctl.frames), 10)
        await until(lambda: len(ctl.sync_jobs) == 1 and ctl.sync_jobs[0].state == "complete",
                    10)
        sync_reply = ctl.sync_jobs[0].reply
        assert sync_reply is not None and sync_reply["msg"]["router-cfg-hash"] == ""
        await until(lambda: ctl.sync_state == "synced", 10)
        obs = await read_observed(agent.vpp)
        assert obs.tunnels[7].sw_if_index == sw  # repaired in place, not re-created
        assert "peer-7" in obs.profiles
        assert agent.dispatcher.cfg_hash() == ""
        stats_before = len(ctl.stats_replies)
        await until(lambda: len(ctl.stats_replies) >= stats_before + 3)
        assert len(ctl.sync_jobs) == 1 and ctl.sync_state == "synced"  # once, not a loop
        assert ctl.violations == []
