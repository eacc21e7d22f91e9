"""The daemon wires the PolicyManager: a peer pushed by the controller with a path
label becomes a link, the policy follows the monitor's view of it, peerctl shows it,
and the tunnel's removal does not leave VPP in a state that crashes it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from agent.admin.peerctl import main as peerctl_main
from agent.app import Agent
from agent.config import parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from tests.fixtures import example_request
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000e2e1"
DEVICE_TOKEN = "device-token-policy-never-logged"
WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
LAN = ("GigabitEthernet0/4/0", "10.0.0.1/24")


async def peerctl(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(peerctl_main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue() + err.getvalue()


def ok(reply: dict[str, Any]) -> Any:
    assert reply["msg"]["ok"] == 1, reply["msg"]
    return reply["msg"]["message"]


async def test_daemon_runs_policies_for_controller_peers(short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN, LAN])
    await sim.start()
    logs = io.StringIO()
    configure_logging("info", json=True, stream=logs)
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=10.0)
    await ctl.start()
    state = short_dir / "state"
    token = short_dir / "device.token"
    token.write_text(DEVICE_TOKEN)
    token.chmod(0o600)
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(state)},
        "routing": {"vtysh": ""},  # no FRR here: routing is recorded only
        "admin": {"socket": str(short_dir / "admin.sock")},
        "policy": {"lan_interfaces": [LAN[0]], "period": 0.2},
    }, {})
    agent = Agent(cfg, name_resolver=offline_name_resolver)
    task = asyncio.create_task(agent.run())
    try:
        await ctl.wait_connected(10)
        await until(lambda: agent.manager.in_sync)
        params = example_request()["params"]
        params["peer"]["multilink"] = {"labels": ["lblA"]}
        ok(await ctl.send_job("add-tunnel", params, jobid=3001))
        await agent.policies.apply({"id": "pol1", "rules": [{
            "id": "r1", "priority": 10,
            "classification": {"prefix": {"ip": "172.16.0.0/16"}},
            "action": {"links": [{"pathlabels": ["lblA"], "order": "priority"}],
                       "order": "priority", "fallback": "drop"}}]})
        # vppsim gives the tunnel no Linux side: the monitor reports it down, so the
        # rule falls back to its drop path, and says why
        await until(lambda: agent.policies.status()["rules"][0]["chosen"] == "drop", 10)
        acl_abf = sim.handlers.acl_abf.state
        assert [a[1:3] for a in acl_abf.snapshot()["abf_attachments"]] == [(2, 10)]
        rc, out = await peerctl("--socket", str(short_dir / "admin.sock"), "--json",
                                "show", "policies")
        row = json.loads(out)["rules"][0]
        assert rc == 0 and row["chosen"] == "drop" and "peer 7 down" in row["why"]

        # the same rule with the WAN's DIA label first (recorded from add-interface): the
        # traffic is left to the routing table, not dropped
        ok(await ctl.send_job("add-interface", {
            "dev_id": "pci:0000:00:03.00", "type": "WAN", "addr": WAN[1],
            "multilink": {"labels": ["dia1"]}, "routing": ["NONE"]}, jobid=3003))
        await agent.policies.apply({"id": "pol1", "rules": [{
            "id": "r1", "priority": 10,
            "classification": {"prefix": {"ip": "172.16.0.0/16"}},
            "action": {"links": [{"pathlabels": ["dia1"], "order": "priority"},
                                 {"pathlabels": ["lblA"], "order": "priority"}],
                       "order": "priority", "fallback": "drop"}}]})
        await until(lambda: agent.policies.status()["rules"][0]["kind"] == "fib", 10)
        assert "dia1 is a WAN (DIA) label" in agent.policies.status()["rules"][0]["why"]
        assert acl_abf.snapshot()["abf_attachments"] == []

        ok(await ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=3002))
        await agent.policies.evaluate()
        assert agent.policies.reprogram_failures == 0
        await agent.policies.remove()
        assert acl_abf.snapshot() == {"acls": {}, "abf_policies": {}, "abf_attachments": []}
        assert DEVICE_TOKEN not in logs.getvalue()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ctl.stop()
        await sim.stop()
        configure_logging("warning", json=True, stream=sys.stderr)
