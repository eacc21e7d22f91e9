"""The whole daemon over a real websocket (controller double) into vppsim."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.admin.peerctl import main as peerctl_main
from agent.app import Agent
from agent.config import AgentConfig, parse_config
from agent.jobs.dispatch import STORE_LOST_SIGNATURE
from agent.lab.controller_double import ControllerDouble
from agent.lab.offline import offline_name_resolver
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from agent.vpp.readers import read_observed
from tests.agent_task import running
from tests.fixtures import example_request, numbered_add_tunnel
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000e2e0"
DEVICE_TOKEN = "device-token-e2e-never-logged"





@dataclass
class Rig:
    sim: VppSim
    ctl: ControllerDouble
    agent: Agent
    logs: io.StringIO


def make_config(ctl: ControllerDouble, sim: VppSim, state: Path,
                job_timeout: float = 170.0, recovery_grace: float = 600.0) -> AgentConfig:
    token_file = state.parent / "device.token"
    token_file.write_text(DEVICE_TOKEN)
    token_file.chmod(0o600)
    return parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token_file),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3,
                       "ping_interval": 0.5, "silence_timeout": 5.0,
                       "job_timeout": job_timeout},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(state), "recovery_grace": recovery_grace},
        "routing": {"vtysh": ""},  # no FRR here: routing is recorded only
        "admin": {"socket": str(state.parent / "admin.sock")},
        "logging": {"level": "debug"},
    }, {})


@contextlib.asynccontextmanager
async def running_agent(sim: VppSim, short_dir: Path, job_timeout: float = 170.0,
                        recovery_grace: float = 600.0) -> AsyncIterator[Rig]:
    logs = io.StringIO()
    configure_logging("debug", json=True, stream=logs)
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=10.0)
    await ctl.start()
    agent = Agent(make_config(ctl, sim, short_dir / "state", job_timeout, recovery_grace),
                  name_resolver=offline_name_resolver)
    try:
        async with running(agent):
            await ctl.wait_connected(10)
            yield Rig(sim, ctl, agent, logs)
    finally:
        await ctl.stop()
        configure_logging("warning", json=True, stream=sys.stderr)


def ok(reply: dict[str, Any]) -> Any:
    msg = reply["msg"]
    assert msg["ok"] == 1, msg
    assert msg["entity"] == "agentReply"
    assert isinstance(msg["router-cfg-hash"], str)  # the hash chain: '' or a SHA-1
    assert len(msg["router-cfg-hash"]) in (0, 40) \
        or msg["router-cfg-hash"] == STORE_LOST_SIGNATURE  # the store was lost: "sync me"
    return msg["message"]


async def test_controller_drives_a_peer_through_its_whole_life(
        sim: VppSim, short_dir: Path) -> None:
    request = example_request()
    psk = request["params"]["ikev2"]["psk"]
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: len(rig.ctl.info_replies) == 1)  # sent by the server on connect
        await until(lambda: rig.agent.manager.in_sync)
        info_reply = await rig.ctl.request("get-device-info", {"tunnels": [], "jobs": []})
        info = ok(info_reply)
        assert info["components"]["vpp"]["version"] == "26.06-release"
        assert info["tunnels"] == []
        assert info_reply["msg"]["router-cfg-hash"] == ""

        reply = await rig.ctl.send_job("add-tunnel", request["params"], jobid=1001)
        assert ok(reply) == "success"
        assert reply["msg"]["router-cfg-hash"] == rig.ctl.cfg_hash != ""
        obs = await read_observed(rig.agent.vpp)
        tun = obs.tunnels[7]
        assert (tun.src, tun.dst) == (IPv4Address("192.168.1.10"), IPv4Address("203.0.113.10"))
        assert obs.profiles["peer-7"].remote_id == (2, "gw.cloud.example")
        assert obs.routes[tun.sw_if_index] == {IPv4Network("8.8.8.8/32")}

        await until(lambda: rig.agent.manager.states[7].status == "up")
        # vppsim has no Linux side for the tunnel: its probes cannot leave, so the
        # monitored tunnel is reported down, with the reason in the agent's view
        stats = ok(await rig.ctl.request("get-device-stats"))
        entry = stats[-1]["tunnel_stats"]["7"]
        assert set(entry) >= {"status", "rtt", "drop_rate", "jitter"}
        await until(lambda: (rig.agent.monitor.snapshot(7) or {}).get("status") == "down")
        snap = rig.agent.monitor.snapshot(7)
        assert snap is not None and snap["unresolved"]  # monitoring.example.com

        reply = await rig.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=1002)
        assert ok(reply) == "success"
        assert reply["msg"]["router-cfg-hash"] == rig.ctl.cfg_hash
        obs = await read_observed(rig.agent.vpp)
        assert obs.tunnels == {} and obs.profiles == {}
        assert [v[0] for v in sim.snapshot()["interfaces"].values()] == [
            "local0", "GigabitEthernet0/3/0"]

        # the same jobid re-sent: one apply, two identical replies
        first = await rig.ctl.send_job("add-tunnel", request["params"], jobid=1003)
        writes = sim.write_count
        second = await rig.ctl.send_job("add-tunnel", request["params"], jobid=1003)
        assert sim.write_count == writes
        assert first["msg"] == second["msg"]

        # a rejected job names the problem and writes nothing
        bad = example_request()["params"]
        bad["ikev2"]["ike"]["dh-group"] = "modp-1024"
        reply = await rig.ctl.send_job("add-tunnel", bad, jobid=1004)
        assert reply["msg"]["ok"] == 0
        assert "ikev2.ike.dh-group" in reply["msg"]["message"]
        assert "modp-1024" in reply["msg"]["message"]
        assert sim.write_count == writes

        # the engineer on call sees the peer and the jobs through peerctl
        out, err = io.StringIO(), io.StringIO()
        sock = str(short_dir / "admin.sock")
        rc = await asyncio.to_thread(peerctl_main, ["--socket", sock, "--json", "show", "peers"],
                                     stdout=out, stderr=err)
        assert rc == 0, err.getvalue()
        assert [p["tunnel_id"] for p in json.loads(out.getvalue())] == [7]
        out = io.StringIO()
        rc = await asyncio.to_thread(peerctl_main, ["--socket", sock, "show", "jobs"],
                                     stdout=out, stderr=err)
        assert rc == 0 and "1004" in out.getvalue()
        out = io.StringIO()
        rc = await asyncio.to_thread(peerctl_main, ["--socket", sock, "show", "ikev2", "profile"],
                                     stdout=out, stderr=err)
        assert rc == 0 and "peer-7" in out.getvalue() and psk not in out.getvalue()

        info = ok(await rig.ctl.request("get-device-info", {"jobs": [1001, 1004, 99]}))
        outcomes = {j["job_id"]: j for j in info["jobs"]}
        assert outcomes["1001"]["state"] == "complete" and outcomes["1004"]["state"] == "failed"
        assert "99" not in outcomes
        assert rig.ctl.violations == []

        from_device = "\n".join(str(f.data) for f in rig.ctl.frames if f.direction == "in")
        assert "success" in from_device
        log_text = rig.logs.getvalue()
        assert "job done" in log_text  # the log capture saw the agent's work
        for secret in (psk, DEVICE_TOKEN):
            assert secret not in from_device
            assert secret not in log_text
        for line in log_text.splitlines():
            json.loads(line)  # JSON lines when not on a terminal


async def test_agent_restart_keeps_state_and_writes_nothing(
        sim: VppSim, short_dir: Path) -> None:
    request = example_request()
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("add-tunnel", request["params"], jobid=2001))
        cfg_hash = rig.agent.dispatcher.cfg_hash()
        assert cfg_hash == rig.ctl.cfg_hash
    writes = sim.write_count
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: len(rig.ctl.info_replies) >= 1)
        assert rig.ctl.info_replies[-1]["msg"]["router-cfg-hash"] == cfg_hash
        await until(lambda: rig.agent.manager.in_sync)
        assert sim.write_count == writes
        # the journal survived: the old job id still answers with its outcome
        reply = await rig.ctl.send_job("add-tunnel", request["params"], jobid=2001)
        assert ok(reply) == "success" and sim.write_count == writes


async def test_the_monitor_follows_a_job_once_it_is_answered_and_journaled(
        sim: VppSim, short_dir: Path) -> None:
    """A 1000-peer job's monitor sync takes tens of ms: the reply must not wait for it."""
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        order: list[str] = []
        real_sync, real_record = rig.agent.monitor.sync, rig.agent.journal.record
        rig.agent.monitor.sync = (  # type: ignore[method-assign]
            lambda: (order.append("monitor sync"), real_sync())[1])
        rig.agent.journal.record = (  # type: ignore[method-assign]
            lambda *a: (order.append("journaled"), real_record(*a))[1])
        ok(await rig.ctl.send_job("add-tunnel", example_request()["params"], jobid=2101))
        await until(lambda: "monitor sync" in order)
        assert order == ["journaled", "monitor sync"]
        assert rig.agent.monitor.tunnel_ids() == [7]


@pytest.mark.parametrize("message", ["add-vxlan-tunnel", "upgrade-device-sw"])
async def test_unsupported_messages_are_refused_clearly(
        sim: VppSim, short_dir: Path, message: str) -> None:
    async with running_agent(sim, short_dir) as rig:
        reply = await rig.ctl.send_job(message, {})
        assert reply["msg"]["ok"] == 0
        assert message in reply["msg"]["message"]
        assert "router-cfg-hash" not in reply["msg"]


async def test_hostile_frames_leave_the_agent_up_and_vpp_untouched(
        sim: VppSim, short_dir: Path) -> None:
    from tests.integration.test_link_session import hostile_frames

    frames, replies_expected = hostile_frames()
    assert len(frames) >= 300
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        writes = sim.write_count
        before = len(rig.ctl.replies)
        for frame in frames:
            await rig.ctl.send_raw(frame)
        def hostile() -> list[dict[str, Any]]:
            return [r for r in rig.ctl.replies[before:] if "hostile" in str(r.get("seq"))]

        await rig.ctl.wait_for(lambda: len(hostile()) >= replies_expected, 10)
        assert len(hostile()) == replies_expected
        assert all(r["msg"]["ok"] == 0 for r in hostile())
        assert sim.write_count == writes
        assert "rejected" in rig.logs.getvalue()
        # still serving real jobs on the same connection
        reply = await rig.ctl.send_job("add-tunnel", example_request()["params"])
        assert ok(reply) == "success"
        assert len(rig.ctl.connections) == 1


async def test_stats_of_a_tunnel_without_targets_follow_its_sa(
        sim: VppSim, short_dir: Path) -> None:
    params = example_request()["params"]
    params["peer"]["ips"], params["peer"]["urls"] = [], []
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("add-tunnel", params))

        async def status() -> str:
            stats = ok(await rig.ctl.request("get-device-stats"))
            entry = stats[-1]["tunnel_stats"]["7"]
            assert (entry["rtt"], entry["drop_rate"]) == (0, 0)
            return str(entry["status"])

        deadline = time.monotonic() + 10
        while await status() != "up":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        sim.ike.script("peer-7", "AUTH_FAILED")
        sim.ike.peer_restart("peer-7")
        while await status() != "down":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def test_jobs_while_vpp_is_away_fail_with_a_clear_reason(
        sim: VppSim, short_dir: Path) -> None:
    # a job waits for VPP within its own bound (0.9 x job_timeout), then fails naming why
    async with running_agent(sim, short_dir, job_timeout=2.0) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        await sim.stop()
        await until(lambda: not rig.agent.vpp.connected)
        reply = await rig.ctl.send_job("add-tunnel", example_request()["params"])
        assert reply["msg"]["ok"] == 0
        assert "not connected after 1.8 s" in reply["msg"]["message"], reply["msg"]
        await sim.start()
        await until(lambda: rig.agent.manager.in_sync)
        ok(await rig.ctl.send_job("add-tunnel", example_request()["params"]))


def route(addr: str, via: str) -> dict[str, Any]:
    return {"addr": addr, "via": via, "redistributeViaOSPF": False,
            "redistributeViaBGP": False, "onLink": False}


async def test_static_routes_through_a_peer_are_programmed_with_it(
        sim: VppSim, short_dir: Path) -> None:
    """flexiManage routes a prefix through a peer with `add-route` via the peer's end of
    the /31: the prefix becomes a VPP path via the tunnel, removed with the route or
    the tunnel; a route via another next hop is recorded only; a route that would
    swallow the peer's own address is refused before VPP is touched."""
    request = example_request()
    via = "10.100.0.17"  # the peer's end of 10.100.0.16/31

    async def via_tunnel() -> set[IPv4Network]:
        obs = await read_observed(rig.agent.vpp)
        return obs.routes.get(obs.tunnels[7].sw_if_index, set()) if 7 in obs.tunnels \
            else set()

    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        ok(await rig.ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "add-route", "params": route("10.50.0.0/16", via)},
            {"entity": "agent", "message": "add-route",
             "params": route("10.77.0.0/16", "192.168.1.254")},
            {"entity": "agent", "message": "add-tunnel", "params": request["params"]},
        ]}, jobid=3001))
        assert await via_tunnel() == {IPv4Network("8.8.8.8/32"), IPv4Network("10.50.0.0/16")}

        ok(await rig.ctl.send_job("add-route", route("172.16.0.0/12", via), jobid=3002))
        assert IPv4Network("172.16.0.0/12") in await via_tunnel()

        writes = sim.write_count
        reply = await rig.ctl.send_job("add-route", route("0.0.0.0/0", via), jobid=3003)
        assert reply["msg"]["ok"] == 0
        assert "add-route 0.0.0.0/0 via 10.100.0.17 covers the tunnel's own peer address " \
               "203.0.113.10" in reply["msg"]["message"]
        assert sim.write_count == writes

        ok(await rig.ctl.send_job("remove-route", route("172.16.0.0/12", via), jobid=3004))
        assert await via_tunnel() == {IPv4Network("8.8.8.8/32"), IPv4Network("10.50.0.0/16")}
        cfg_hash = rig.agent.dispatcher.cfg_hash()  # behind the controller's: 3003 failed

    writes = sim.write_count
    async with running_agent(sim, short_dir) as rig:  # the agent restarted: nothing to do
        await until(lambda: rig.agent.manager.in_sync)
        assert sim.write_count == writes and rig.agent.dispatcher.cfg_hash() == cfg_hash
        assert IPv4Network("10.50.0.0/16") in await via_tunnel()
        sim.state.routes.clear()  # behind the agent's back (vppctl): the drift check repairs
        await rig.agent.manager.check_drift()
        assert IPv4Network("10.50.0.0/16") in await via_tunnel()

        # sync-device moves the routes and leaves the tunnel itself alone
        tunnel_sw = (await read_observed(rig.agent.vpp)).tunnels[7].sw_if_index
        ok(await rig.ctl.send_job("sync-device", {"requests": [
            {"entity": "agent", "message": "add-tunnel", "params": request["params"]},
            {"entity": "agent", "message": "add-route", "params": route("10.60.0.0/16", via)},
        ]}, jobid=3005))
        assert await via_tunnel() == {IPv4Network("8.8.8.8/32"), IPv4Network("10.60.0.0/16")}
        assert (await read_observed(rig.agent.vpp)).tunnels[7].sw_if_index == tunnel_sw

        ok(await rig.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=3006))
        assert await via_tunnel() == set()
        assert [r for r in sim.snapshot()["routes"] if r[1] == "10.60.0.0/16"] == []


def rewrite_stored_specs(state: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Change every stored peer spec as an older agent would have written it."""
    db = sqlite3.connect(state / "peers.sqlite")
    with db:
        for tid, text in db.execute("SELECT tunnel_id, spec FROM peers").fetchall():
            row = json.loads(text)
            change(row)
            db.execute("UPDATE peers SET spec = ? WHERE tunnel_id = ?", (json.dumps(row), tid))
    db.close()


async def test_a_static_routes_metric_orders_the_peers_routing_one_prefix(
        sim: VppSim, short_dir: Path) -> None:
    """One prefix via two peers: each path's VPP preference is its route's metric, so
    the lower one is the primary. A new metric swaps them, a preference changed behind
    the agent's back is repaired, and a restart writes nothing."""
    net = IPv4Network("10.50.0.0/16")
    via = {1: "10.100.0.3", 2: "10.100.0.5"}  # the peers' ends of the tunnels' /31s

    def metric_route(tid: int, metric: str) -> dict[str, Any]:
        return route(str(net), via[tid]) | {"metric": metric}

    async def preferences() -> dict[int, int]:
        obs = await read_observed(rig.agent.vpp)
        return {tid: obs.route_preferences[obs.tunnels[tid].sw_if_index][net]
                for tid in (1, 2) if net in obs.route_preferences.get(
                    obs.tunnels[tid].sw_if_index, {})}

    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        ok(await rig.ctl.send_job("aggregated", {"requests": [
            *({"entity": "agent", "message": "add-tunnel",
               "params": numbered_add_tunnel(n, "Metric")} for n in (1, 2)),
            {"entity": "agent", "message": "add-route", "params": metric_route(1, "10")},
            {"entity": "agent", "message": "add-route", "params": metric_route(2, "20")},
        ]}, jobid=5001))
        assert await preferences() == {1: 10, 2: 20}

        ok(await rig.ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "remove-route", "params": metric_route(1, "10")},
            {"entity": "agent", "message": "add-route", "params": metric_route(1, "30")},
        ]}, jobid=5002))
        assert await preferences() == {1: 30, 2: 20}

        (entry,) = [r for r in sim.state.routes.values() if r.prefix == net]
        for path in entry.paths:  # behind the agent's back (vppctl)
            path["preference"] = 7
        await rig.agent.manager.check_drift()
        assert await preferences() == {1: 30, 2: 20}

    writes = sim.write_count
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        assert sim.write_count == writes
        assert await preferences() == {1: 30, 2: 20}

    # a store written before metrics were programmed: every route at preference 0
    def without_preferences(row: dict[str, Any]) -> None:
        row["static_routes"] = [r if isinstance(r, str) else r[0] for r in row["static_routes"]]

    rewrite_stored_specs(short_dir / "state", without_preferences)
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.desired[1].static_routes[0].preference == 30)
        assert await preferences() == {1: 30, 2: 20}


async def test_routes_recorded_by_an_older_agent_are_programmed_at_start(
        sim: VppSim, short_dir: Path) -> None:
    """A peer store written before static routes were programmed has tunnels without
    them while the recorded configuration holds the routes: the agent programs them
    at start, through the route guard, and changes nothing on the next start."""
    request = example_request()
    via = "10.100.0.17"
    async with running_agent(sim, short_dir) as rig:
        ok(await rig.ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "add-route", "params": route("10.50.0.0/16", via)},
            {"entity": "agent", "message": "add-tunnel", "params": request["params"]},
        ]}, jobid=4001))
    # what the older agent left: the route recorded, neither in its store nor in VPP
    rewrite_stored_specs(short_dir / "state", lambda row: row.pop("static_routes"))
    for key in [k for k, r in sim.state.routes.items() if str(r.prefix) == "10.50.0.0/16"]:
        del sim.state.routes[key]

    async with running_agent(sim, short_dir) as rig:
        await until(lambda: 7 in rig.agent.manager.desired
                    and rig.agent.manager.desired[7].static_routes != ())
        obs = await read_observed(rig.agent.vpp)
        assert IPv4Network("10.50.0.0/16") in obs.routes[obs.tunnels[7].sw_if_index]
    writes = sim.write_count
    async with running_agent(sim, short_dir) as rig:
        await until(lambda: rig.agent.manager.in_sync)
        assert sim.write_count == writes
