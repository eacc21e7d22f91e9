"""Acceptance: a day in the life of a peering device under a controller that holds
flexiManage 6.3's rules (the controller double), with the agent on vppsim.

Register, wait for approval (403 retried quickly), connect, pass get-device-info,
receive the interface jobs of a WAN assignment, create a peer as flexiManage does
(aggregated [add-route, add-tunnel]), see it connected, change alert thresholds,
receive sync-device with the full configuration (synced, and still synced over 10
stats polls), restart the agent (no VPP write) and VPP (reconciled, still synced),
delete the peer. Every reply must pass the double's validators.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.app import Agent
from agent.config import AgentConfig, parse_config
from agent.jobs.info import interface_entry
from agent.lab.controller_double import ControllerDouble, peer_addr, peer_tunnel_job
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.link.register import default_facts, register
from agent.logsetup import configure_logging
from agent.secret import Secret
from agent.vpp.client import VppClient
from agent.vpp.readers import read_observed, read_wan_facts
from tests.agent_task import running
from tests.fixtures import example_request
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000da11"
ORG_TOKEN = "org-token-day-never-logged"
WAN_DEV = "pci:0000:00:03.00"


def config(ws_url: str, sim: VppSim, state: Path, **controller: Any) -> AgentConfig:
    return parse_config({
        "controller": {"url": ws_url, "machine_id": MACHINE,
                       "token_file": str(state.parent / "device.token"),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3,
                       "retry_quick_min": 0.2, "retry_quick_max": 0.4,
                       "ping_interval": 0.5, "silence_timeout": 5.0, **controller},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(state)},
        "routing": {"vtysh": ""},  # no FRR here: routing is recorded only
        "admin": {"socket": str(state.parent / "admin.sock")},
        "monitor": {"stats_period": 0.2},
        "logging": {"level": "info"},
    }, {})


@contextlib.asynccontextmanager
async def agent_running(cfg: AgentConfig) -> AsyncIterator[Agent]:
    async with running(Agent(cfg, name_resolver=offline_name_resolver)) as agent:
        yield agent


def ok(reply: dict[str, Any]) -> Any:
    msg = reply["msg"]
    assert msg["ok"] == 1, msg
    return msg["message"]


async def wan_interfaces(sim: VppSim) -> list[dict[str, Any]]:
    client = VppClient(str(sim.socket_path))
    await client.start()
    try:
        await client.wait_connected(5)
        return [interface_entry(f) for f in await read_wan_facts(client, {})]
    finally:
        await client.close()


async def test_a_day_in_the_life(sim: VppSim, short_dir: Path) -> None:
    logs = io.StringIO()
    configure_logging("info", json=True, stream=logs)
    ctl = ControllerDouble(machine_id=MACHINE, ping_interval=0.5, stats_interval=None,
                           job_timeout=10.0, approved=False)
    await ctl.start()
    try:
        await _day(ctl, sim, short_dir)
    finally:
        await ctl.stop(abort=True)
        configure_logging("warning", json=True, stream=sys.stderr)
    assert ctl.violations == []
    assert ORG_TOKEN not in logs.getvalue()


async def _day(ctl: ControllerDouble, sim: VppSim, short_dir: Path) -> None:
    state = short_dir / "state"
    # 1. registration, answered like routes/connect.js
    reg_port = ctl.start_registration_server()
    reg_cfg = config(f"ws://127.0.0.1:{reg_port}", sim, state)
    facts = default_facts(reg_cfg, await wan_interfaces(sim))
    await register(reg_cfg, Secret(ORG_TOKEN), facts=facts)
    assert ctl.device_token is not None and ctl.violations == []

    cfg = config(ctl.url, sim, state)
    async with agent_running(cfg) as agent:
        # 2. not approved yet: 403, retried within seconds
        await ctl.wait_for(lambda: len(ctl.handshakes) >= 2, 5)
        assert [h.status for h in ctl.handshakes[:2]] == [403, 403]
        approved_at = time.monotonic()
        ctl.approved = True
        # 3. connect and pass get-device-info: the device is ready for jobs
        await ctl.wait_ready(5)
        assert time.monotonic() - approved_at < 0.4 + 1.0
        assert ctl.device_versions["agent"] == "6.3.0"
        await until(lambda: agent.manager.in_sync)

        # 4. the admin assigns the WAN (and a LAN the device only records)
        wan = {"dev_id": WAN_DEV, "dhcp": "no", "addr": "192.168.1.10/24", "addr6": "",
               "type": "WAN", "multilink": {"labels": []}, "deviceType": "dpdk",
               "configuration": {}, "routing": ["NONE"], "bridge_addr": None, "mtu": 1500,
               "gateway": "192.168.1.1", "metric": "0", "useStun": True,
               "monitorInternet": True, "dnsServers": ["8.8.8.8"], "dnsDomains": []}
        lan = {"dev_id": "pci:0000:00:08.00", "dhcp": "no", "addr": "10.0.0.1/24",
               "addr6": "", "type": "LAN", "multilink": {"labels": []}, "deviceType": "dpdk",
               "configuration": {}, "routing": ["OSPF"], "bridge_addr": None, "mtu": 1500,
               "ospf": {"area": "0", "helloInterval": 10, "deadInterval": 40}}
        writes = sim.write_count
        ok(await ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "add-interface", "params": wan},
            {"entity": "agent", "message": "add-interface", "params": lan}]}))
        ok(await ctl.send_job("start-router", {"interfaces": [wan, lan]}))
        assert sim.write_count == writes  # recorded: nothing of it is VPP's business

        # 5. a peer, as flexiManage builds it with a route through it
        params = example_request()["params"]
        params["peer"]["addr"] = peer_addr(7)
        params["peer"]["ips"], params["peer"]["urls"] = [], []
        params["peer"]["ospf-cost"] = "10.5"
        params["peer"]["tcp-mss-clamp"] = 460
        params["peer"]["mtu"] = 500
        via = "10.100.0.17"
        route = {"addr": "10.99.0.0/16", "via": via, "redistributeViaOSPF": False,
                 "redistributeViaBGP": False, "onLink": False}
        message, job = peer_tunnel_job(params, [route])
        assert message == "aggregated"
        reply = await ctl.send_job(message, job)
        ok(reply)
        assert reply["msg"]["router-cfg-hash"] == ctl.cfg_hash
        obs = await read_observed(agent.vpp)
        assert 7 in obs.tunnels and "peer-7" in obs.profiles

        # 6. connected (no probe targets: the status follows the SA), reported with
        # rtt and drop in stats that flexiManage accepts
        async def status() -> dict[str, Any]:
            stats = ok(await ctl.poll_stats())
            return dict(stats[-1]["tunnel_stats"].get("7", {}))

        deadline = time.monotonic() + 10
        while (await status()).get("status") != "up":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert {"rtt", "drop_rate"} <= set(ctl.tunnel_status["7"])
        assert ctl.sync_state == "synced"

        # 7. thresholds: org rules and per-tunnel ones; the tunnel is not touched
        writes = sim.write_count
        rules = {"Link/Tunnel round trip time": {
                     "warningThreshold": 300, "criticalThreshold": 600, "thresholdUnit": "ms",
                     "severity": None, "immediateEmail": False, "resolvedAlert": False,
                     "type": "tunnel", "sendWebHook": False},
                 "Link/Tunnel default drop rate": {
                     "warningThreshold": 5, "criticalThreshold": 20, "thresholdUnit": "%",
                     "type": "tunnel"}}
        ok(await ctl.send_job("add-notifications-config", {"org": "o1", "rules": rules}))
        ok(await ctl.send_job("modify-tunnel", {"notificationsSettings": {
            "Link/Tunnel round trip time": {"warningThreshold": 150, "criticalThreshold": 450,
                                            "thresholdUnit": "ms"},
            "Link/Tunnel default drop rate": {"warningThreshold": 2.5, "criticalThreshold": 10,
                                              "thresholdUnit": "%"}}, "tunnel-id": 7}))
        assert sim.write_count == writes

        # 8. sync-device with the full configuration: converges without touching VPP
        before = copy.deepcopy(ctl.sync_device_params()["requests"])
        assert {r["message"] for r in before} >= {
            "add-vxlan-config", "add-ospf", "add-interface", "add-route", "add-tunnel",
            "add-notifications-config"}
        reply = await ctl.send_job("sync-device", {"requests": before})
        assert ok(reply) == "success" and reply["msg"]["router-cfg-hash"] == ""
        assert sim.write_count == writes and ctl.cfg_hash == ""
        for _ in range(10):
            ok(await ctl.poll_stats())
            assert ctl.sync_state == "synced"
        assert ctl.sync_jobs[-1].state == "complete" and len(ctl.sync_jobs) == 1
        assert ctl.reinfo_requests == 0  # interface facts unchanged: no get-device-info
        recorded = agent.dispatcher.recorded_config()
        assert sorted(r["message"] for r in recorded) == sorted(r["message"] for r in before)

    # 9. the agent restarts: nothing is written, the chain is still the controller's
    writes = sim.write_count
    async with agent_running(cfg) as agent:
        await ctl.wait_ready(5, count=len(ctl.connections) + 1)
        await until(lambda: agent.manager.in_sync)
        ok(await ctl.poll_stats())
        assert ctl.sync_state == "synced" and sim.write_count == writes

        # 10. VPP restarts: reconciled by the agent, no job needed, still synced
        await sim.stop()
        await until(lambda: not agent.vpp.connected)
        stats = ok(await ctl.poll_stats())
        assert stats[-1]["state"] == "failed" and "VPP" in stats[-1]["stateReason"]
        await sim.start()
        await until(lambda: agent.manager.in_sync, 10)
        assert 7 in (await read_observed(agent.vpp)).tunnels
        ok(await ctl.poll_stats())
        assert ctl.sync_state == "synced" and len(ctl.sync_jobs) == 1

        # 11. the peer is deleted with its route
        ok(await ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "remove-route", "params": route},
            {"entity": "agent", "message": "remove-tunnel", "params": {"tunnel-id": 7}}]}))
        obs = await read_observed(agent.vpp)
        assert obs.tunnels == {} and obs.profiles == {}
        ok(await ctl.poll_stats())
        assert ctl.sync_state == "synced"
        assert all(r["message"] != "add-tunnel" for r in agent.dispatcher.recorded_config())

        # 12. the WAN gets a new address: stats carry a new reconfig, flexiManage asks
        # for get-device-info again and learns the address from network.interfaces
        wan_sw = next(i for i in (await read_observed(agent.vpp)).interfaces.values()
                      if i.name == "GigabitEthernet0/3/0").sw_if_index
        await agent.vpp.call("sw_interface_add_del_address", sw_if_index=wan_sw, is_add=True,
                             del_all=False, prefix="192.168.1.5/24")
        ok(await ctl.poll_stats())
        await ctl.wait_for(lambda: ctl.reinfo_requests == 1 and len(ctl.info_replies) >= 3, 5)
        itf = ok(ctl.info_replies[-1])["network"]["interfaces"][0]
        assert (itf["devId"], itf["IPv4"], itf["IPv4Mask"]) == (WAN_DEV, "192.168.1.5", "24")
