"""The daemon's job path drives both rooms from the controller's messages: the multilink
policy (aggregated add-application + add-multilink-policy, sync-device, uninstall) on
vppsim's ACL/ABF, and FRR (add-ospf, a peer's OSPF) on a real FRR in a namespace,
with sync-device writing nothing to either when nothing changed and `peerctl show
routing` showing the peer."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from probe_netns import Lab, netns_unavailable_reason

from agent.admin.peerctl import main as peerctl_main
from agent.app import Agent
from agent.config import parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.frr import Frr, missing
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from agent.routing.manager import Vtysh
from tests.agent_task import running
from tests.fixtures import example_request
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000e2e2"
DEVICE_TOKEN = "device-token-rooms-never-logged"
WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
LAN = ("GigabitEthernet0/4/0", "10.0.0.1/24")
APPS = {"applications": [{"id": "app1", "name": "video", "category": "media",
                          "serviceClass": "streaming", "importance": "high",
                          "rules": [{"ip": "203.0.113.0/24"}]}]}
POLICY = {"id": "pol1", "rules": [{
    "id": "r1", "priority": 10,
    "classification": {"application": {"appId": "app1"}},
    "action": {"links": [{"pathlabels": ["lblA"], "order": "priority"}],
               "order": "priority", "fallback": "drop"}}]}
OSPF = {"routerId": "192.0.2.1", "redistributeBgp": False, "custom": []}


@dataclass(frozen=True)
class CountingVtysh(Vtysh):
    loads: list[str] = field(default_factory=list)

    async def load(self, script: str) -> tuple[int, str]:
        self.loads.append(script)
        return await super().load(script)


def ok(reply: dict[str, Any]) -> Any:
    assert reply["msg"]["ok"] == 1, reply["msg"]
    return reply["msg"]["message"]


def job(message: str, params: Any) -> dict[str, Any]:
    return {"entity": "agent", "message": message, "params": params}


@dataclass
class Rig:
    sim: VppSim
    ctl: ControllerDouble
    agent: Agent
    admin: Path


@contextlib.asynccontextmanager
async def daemon(short_dir: Path, routing: dict[str, Any]) -> AsyncIterator[Rig]:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN, LAN])
    await sim.start()
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=10.0)
    await ctl.start()
    token = short_dir / "device.token"
    token.write_text(DEVICE_TOKEN)
    token.chmod(0o600)
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(short_dir / "state")},
        "routing": routing,
        "admin": {"socket": str(short_dir / "admin.sock")},
        "policy": {"lan_interfaces": [LAN[0]], "period": 0.2},
    }, {})
    agent = Agent(cfg, name_resolver=offline_name_resolver)
    if agent.routing is not None:  # count FRR writes
        vtysh = agent.routing._vtysh
        agent.routing._vtysh = CountingVtysh(vtysh.binary, vtysh.vty_socket)
    try:
        async with running(agent):
            await ctl.wait_connected(10)
            await until(lambda: agent.manager.in_sync)
            yield Rig(sim, ctl, agent, short_dir / "admin.sock")
    finally:
        await ctl.stop()
        await sim.stop()


def peer() -> dict[str, Any]:
    params: dict[str, Any] = example_request()["params"]
    params["peer"]["multilink"] = {"labels": ["lblA"]}
    return params


async def test_controller_installs_syncs_and_uninstalls_a_policy(short_dir: Path) -> None:
    logs = io.StringIO()
    configure_logging("info", json=True, stream=logs)
    try:
        async with daemon(short_dir, {"vtysh": ""}) as rig:
            ctl, agent = rig.ctl, rig.agent
            acl_abf = rig.sim.handlers.acl_abf.state
            ok(await ctl.send_job("add-tunnel", peer(), jobid=1))
            install = [job("add-application", APPS), job("add-multilink-policy", POLICY)]
            ok(await ctl.send_job("aggregated", {"requests": install}, jobid=2))
            assert agent.policies.policy is not None and agent.policies.policy.id == "pol1"
            snap = acl_abf.snapshot()
            assert len(snap["acls"]) == 1 and [a[1:3] for a in snap["abf_attachments"]] == [
                (2, 10)]
            # the whole configuration again: neither the tunnels nor the policy are rewritten
            writes = agent.manager.executor.writes, agent.policies.executor.writes
            listed = [job("add-tunnel", peer()), *install]
            ok(await ctl.send_job("sync-device", {"requests": copy.deepcopy(listed)}))
            assert (agent.manager.executor.writes, agent.policies.executor.writes) == writes
            assert acl_abf.snapshot() == snap
            # the tunnel leaves the policy before VPP deletes it: nothing crashes VPP later
            ok(await ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=3))
            await agent.policies.evaluate()
            assert agent.policies.reprogram_failures == 0
            uninstall = [job("remove-multilink-policy", {}), job("remove-application", {})]
            ok(await ctl.send_job("aggregated", {"requests": uninstall}, jobid=4))
            assert acl_abf.snapshot() == {"acls": {}, "abf_policies": {},
                                          "abf_attachments": []}
            assert agent.policies.policy is None
            # a policy this VPP cannot take is refused with the reason
            bad = {"id": "p2", "rules": [{**POLICY["rules"][0],
                                          "classification": {"application": {"appId": "nope"}},
                                          "priority": "high"}]}
            reply = await ctl.send_job("aggregated",
                                       {"requests": [job("add-multilink-policy", bad)]}, jobid=5)
            assert reply["msg"]["ok"] == 0 and "priority" in reply["msg"]["message"]
        assert DEVICE_TOKEN not in logs.getvalue()
    finally:
        configure_logging("warning", json=True, stream=sys.stderr)


@pytest.fixture
def frr() -> Iterator[Frr]:
    reason = netns_unavailable_reason() or missing()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        ns = lab.netns("rooms")
        with Frr(ns, "rooms") as f:
            yield f


async def peerctl(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(peerctl_main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue() + err.getvalue()


async def test_controller_routing_reaches_frr_and_sync_writes_nothing(
        short_dir: Path, frr: Frr) -> None:
    async with daemon(short_dir, {"vty_socket": frr.vty_socket}) as rig:
        ctl, agent = rig.ctl, rig.agent
        assert agent.routing is not None
        ok(await ctl.send_job("add-ospf", OSPF, jobid=1))
        ok(await ctl.send_job("add-tunnel", peer(), jobid=2))
        config = frr.running_config().splitlines()
        for line in ("interface peer7", " ip ospf cost 100", " ospf router-id 192.0.2.1",
                     " network 10.100.0.16/31 area 0.0.0.0"):
            assert line in config, line
        vtysh = agent.routing._vtysh
        assert isinstance(vtysh, CountingVtysh)
        loads, writes = len(vtysh.loads), agent.manager.executor.writes
        listed = [job("add-ospf", OSPF), job("add-tunnel", peer())]
        ok(await ctl.send_job("sync-device", {"requests": listed}))
        assert (len(vtysh.loads), agent.manager.executor.writes) == (loads, writes)
        rc, out = await peerctl("--socket", str(rig.admin), "show", "routing")
        assert rc == 0
        assert out.splitlines()[1].split()[:4] == ["7", "peer7", "ospf", "10.100.0.17"]
        ok(await ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=3))
        assert "interface peer7" not in frr.running_config().splitlines()
