"""The dispatcher as flexiManage sees it: every configuration message accepted and
recorded, the hash chain, sync-device convergence, device info and stats that pass
flexiManage's validators. The peer manager is a recording fake (VPP is tested elsewhere)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from agent.jobs.cfgstore import ConfigStore
from agent.jobs.dispatch import JobDispatcher
from agent.jobs.signature import advance
from agent.jobs.validation import ValidationPolicy
from agent.jobs.wirejson import loads
from agent.lab.flexi_rules import validate_device_info, validate_stats
from agent.peers.changes import AddPeer, Change, ModifyTargets, RemovePeer
from agent.peers.manager import JobError, JobResult
from agent.peers.spec import PeerSpec
from agent.vpp.readers import WanFacts
from tests.fixtures import example_request


@dataclass
class FakeVpp:
    connected: bool = True
    last_error: str = ""
    generation: int = 1  # connected once


@dataclass
class FakeManager:
    desired: dict[int, PeerSpec] = field(default_factory=dict)
    vpp: FakeVpp = field(default_factory=FakeVpp)
    applied: list[list[Change]] = field(default_factory=list)
    synced: list[list[PeerSpec]] = field(default_factory=list)
    fail: str | None = None

    async def apply(self, changes: Sequence[Change],
                    alongside: Callable[[], object] | None = None) -> JobResult:
        if self.fail:
            raise JobError(self.fail)
        self.applied.append(list(changes))
        if alongside is not None:  # like the manager: done once the apply succeeded
            alongside()
        for ch in changes:
            if isinstance(ch, AddPeer):
                self.desired[ch.spec.tunnel_id] = ch.spec
            elif isinstance(ch, RemovePeer):
                self.desired.pop(ch.tunnel_id, None)
            elif isinstance(ch, ModifyTargets):
                self.desired[ch.tunnel_id] = ch.applied_to(self.desired[ch.tunnel_id])
        return JobResult(writes=1)

    async def sync(self, specs: Sequence[PeerSpec]) -> JobResult:
        if self.fail:
            raise JobError(self.fail)
        self.synced.append(list(specs))
        self.desired = {s.tunnel_id: s for s in specs}
        return JobResult()


async def no_stats() -> list[dict[str, Any]]:
    return [{"ok": 1, "period": 10.0, "utc": 1.0, "tunnel_stats": {}, "health": {"cpu": []},
             "alerts": {}, "alerts_hash": "", "running": True, "state": "running",
             "stateReason": ""}]


async def wan_facts() -> list[WanFacts]:
    return [WanFacts("pci:0000:00:03.00", "GigabitEthernet0/3/0", "02:00:00:00:00:01", 1500,
                     True, IPv4Interface("192.168.1.10/24"), "192.168.1.1"),
            WanFacts("pci:0000:00:04.00", "host-lan0", "", 1500, True, None, "")]


def make(tmp_path: Path, manager: FakeManager | None = None) -> tuple[JobDispatcher, FakeManager]:
    mgr = manager or FakeManager()
    d = JobDispatcher(mgr, ValidationPolicy(), stats=no_stats,  # type: ignore[arg-type]
                      config=ConfigStore(tmp_path / "state"),
                      vpp_version=lambda: "26.06-rc2~13-g0123abcd", facts=wan_facts)
    return d, mgr


def job(message: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"entity": "agent", "message": message}
    if params is not None:
        msg["params"] = params
    return msg


async def run(d: JobDispatcher, msg: dict[str, Any], jobid: str = "1") -> Any:
    return await d.run_job(msg["message"], msg.get("params"), jobid, msg)


def peer_params(tunnel_id: int = 7) -> dict[str, Any]:
    params: dict[str, Any] = example_request()["params"]
    params["tunnel-id"] = tunnel_id
    return params


INTERFACE = {"dev_id": "pci:0000:00:03.00", "dhcp": "no", "addr": "192.168.1.10/24",
             "type": "WAN", "multilink": {"labels": []}, "routing": ["NONE"],
             "gateway": "192.168.1.1", "metric": "0", "mtu": 1500}
ROUTE = {"addr": "10.9.0.0/16", "via": "10.100.0.17", "redistributeViaOSPF": False,
         "redistributeViaBGP": False, "onLink": False}
OSPF = {"custom": [], "redistributeBgp": False}
NOTIFICATIONS = {"org": "o1", "rules": {
    "Link/Tunnel round trip time": {"warningThreshold": 300, "criticalThreshold": 600,
                                    "thresholdUnit": "ms", "type": "tunnel"}}}


async def test_a_lone_surrogate_in_a_job_is_hashed_and_recorded(tmp_path: Path) -> None:
    """JSON's "\\ud800" parses to a lone surrogate, which UTF-8 cannot hold: the job
    still runs, its hash is the controller's, and a restart reads the item back."""
    msg = loads(json.dumps(job("add-route", {**ROUTE, "via": "192.168.1.254",
                                             "note": "\ud800"}), ensure_ascii=True))
    d, _ = make(tmp_path)
    assert (await run(d, msg)).ok
    assert d.cfg_hash() == advance("", msg)
    again, _ = make(tmp_path)
    assert again.cfg_hash() == d.cfg_hash() and again.items == d.items


async def test_chain_advances_on_signed_ok_jobs_only(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    expected = ""
    for msg in (job("add-interface", INTERFACE), job("add-ospf", OSPF),
                job("add-tunnel", peer_params()), job("start-router", {"interfaces": []})):
        assert (await run(d, msg)).ok
        expected = advance(expected, msg)
        assert d.cfg_hash() == expected
    # a failure leaves it (flexiManage then sends sync-device)
    mgr.fail = "VPP said no"
    assert not (await run(d, job("remove-tunnel", {"tunnel-id": 7}))).ok
    assert d.cfg_hash() == expected
    mgr.fail = None
    # a message sent without a job id is never hashed by flexiManage
    assert (await run(d, job("add-route", ROUTE), jobid="")).ok
    assert d.cfg_hash() == expected
    # unsigned jobs: flexiagent does not sign them either
    assert not (await run(d, job("upgrade-device-sw", {"version": "6.3.9"}))).ok
    assert d.cfg_hash() == expected


async def test_aggregated_is_signed_once_as_a_whole(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    agg = job("aggregated", {"requests": [job("add-route", ROUTE),
                                          job("add-tunnel", peer_params())]})
    assert (await run(d, agg)).ok
    assert d.cfg_hash() == advance("", agg)
    assert [type(c).__name__ for c in mgr.applied[0]] == ["AddPeer"]
    assert {r["message"] for r in d.recorded_config()} == {"add-route", "add-tunnel"}


async def test_sync_device_converges_and_resets_the_chain(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    for msg in (job("add-interface", INTERFACE), job("add-route", ROUTE),
                job("add-tunnel", peer_params(7)), job("add-tunnel", peer_params(8))):
        assert (await run(d, msg)).ok
    assert d.cfg_hash() != ""
    changed = copy.deepcopy(INTERFACE)
    changed["mtu"] = 1400
    sync = job("sync-device", {"requests": [
        job("add-vxlan-config", {"port": "4789"}), job("add-interface", changed),
        job("add-ospf", OSPF), job("add-tunnel", peer_params(7)),
        job("add-notifications-config", NOTIFICATIONS)]})
    outcome = await run(d, sync)
    assert outcome.ok, outcome.message
    assert d.cfg_hash() == ""
    assert sorted(mgr.desired) == [7]  # 8 is absent: removed
    config = {r["message"]: r["params"] for r in d.recorded_config()}
    assert set(config) == {"add-vxlan-config", "add-interface", "add-ospf", "add-tunnel",
                           "add-notifications-config"}  # the route is gone
    assert config["add-interface"]["mtu"] == 1400
    # persisted: a restarted agent has the same chain and configuration
    d2, _ = make(tmp_path, mgr)
    assert (d2.cfg_hash(), d2.recorded_config()) == ("", d.recorded_config())
    assert (await run(d2, job("add-route", ROUTE))).ok
    assert d2.cfg_hash() == advance("", job("add-route", ROUTE))
    d3, _ = make(tmp_path, mgr)
    assert d3.cfg_hash() == d2.cfg_hash()


async def test_a_failed_sync_changes_nothing(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    assert (await run(d, job("add-route", ROUTE))).ok
    before = (d.cfg_hash(), d.recorded_config())
    mgr.fail = "ipip_add_tunnel: VNET_API_ERROR"
    assert not (await run(d, job("sync-device", {"requests": [job("add-ospf", OSPF)]}))).ok
    assert (d.cfg_hash(), d.recorded_config()) == before


async def test_db_semantics_no_ops_and_merges(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    assert (await run(d, job("remove-route", ROUTE))).ok  # missing: no-op success
    assert (await run(d, job("modify-interface", INTERFACE))).ok  # missing: no-op
    assert d.recorded_config() == []
    assert (await run(d, job("add-interface", INTERFACE))).ok
    assert (await run(d, job("modify-interface", {"dev_id": INTERFACE["dev_id"],
                                                  "metric": "10"}))).ok
    [itf] = d.recorded_config()
    assert (itf["params"]["metric"], itf["params"]["mtu"]) == ("10", 1500)
    assert (await run(d, job("add-tunnel", peer_params()))).ok
    assert (await run(d, job("add-tunnel", peer_params()))).ok  # identical: no-op
    # modify-tunnel without urls keeps them; with notificationsSettings only the tunnel
    # is not touched at all
    assert (await run(d, job("modify-tunnel", {"tunnel-id": 7,
                                               "peer": {"ips": ["9.9.9.9"]}}))).ok
    assert mgr.desired[7].monitor_ips == (IPv4Address("9.9.9.9"),)
    assert mgr.desired[7].monitor_urls == ("monitoring.example.com",)
    applied = len(mgr.applied)
    settings = {"Link/Tunnel round trip time": {"warningThreshold": 100,
                                                "criticalThreshold": 200, "thresholdUnit": "ms"}}
    assert (await run(d, job("modify-tunnel", {"notificationsSettings": settings,
                                               "tunnel-id": 7}))).ok
    assert len(mgr.applied) == applied
    assert d.tunnel_notifications() == {7: settings}
    tunnel = next(r for r in d.recorded_config() if r["message"] == "add-tunnel")
    assert tunnel["params"]["peer"]["ips"] == ["9.9.9.9"]


async def test_only_what_cannot_be_parsed_is_refused(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    out = await run(d, job("add-interface", {"type": "WAN"}))
    assert not out.ok and "params.dev_id" in out.message
    out = await run(d, job("aggregated", {"requests": [job("add-route", {"via": "1.2.3.4"}),
                                                       job("frobnicate", {})]}))
    assert not out.ok
    assert "requests[0].params.addr" in out.message and "requests[1].message" in out.message
    assert d.recorded_config() == []
    for name, params in [("add-routing-general", {"custom": ["ip forwarding"]}),
                         ("add-lan-nat-policy", {"nat44-1to1": []}),
                         ("remove-lan-nat-policy", None), ("add-multilink-policy", {"id": "p"}),
                         ("add-application", {"applications": "eJwLy0xJBQAAQwH7"}),
                         ("add-dhcp-config", {"interface": "pci:0000:00:04.00"}),
                         ("add-routing-bgp", {"localAsn": "65001", "neighbors": []}),
                         ("modify-vxlan-config", {"port": "4790"})]:
        out = await run(d, job(name, params))
        assert out.ok, (name, out.message)


async def test_router_state_follows_start_and_stop(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    assert d.data_plane_state()[0] == "running"
    assert (await run(d, job("stop-router", {}))).ok
    stats = await d.device_stats()
    assert (stats[-1]["state"], stats[-1]["running"]) == ("stopped", False)
    assert (await run(d, job("start-router", {"interfaces": [INTERFACE]}))).ok
    assert (await d.device_stats())[-1]["state"] == "running"
    assert [r["message"] for r in d.recorded_config()] == ["add-interface"]
    mgr.vpp.connected, mgr.vpp.last_error = False, "connection refused"
    entry = (await d.device_stats())[-1]
    assert entry["state"] == "failed" and "VPP" in entry["stateReason"]
    assert validate_stats(await d.device_stats()) == []
    mgr.vpp.generation = 0  # never connected yet (boot): VPP is not running, not failed
    entry = (await d.device_stats())[-1]
    assert entry["state"] == "stopped" and "VPP" in entry["stateReason"]


@pytest.mark.parametrize("raw, reported", [
    ("26.06-rc2~13-g0123abcd", "26.06"), ("v26.06-release", "26.06-release"),
    ("26.06", "26.06"), ("", "26.06"), ("garbage", "26.06")])
async def test_device_info_passes_flexiManage_validation(
        tmp_path: Path, raw: str, reported: str) -> None:
    d, _ = make(tmp_path)
    d._vpp_version = lambda: raw
    info = await d.device_info({})
    assert validate_device_info(info) == []
    assert info["components"]["vpp"]["version"] == reported
    assert info["device"] == info["components"]["agent"]["version"] == "6.3.0"
    assert info["components"]["frr"]["version"] == "8.4.4"
    names = [i["name"] for i in info["network"]["interfaces"]]
    assert names == ["GigabitEthernet0/3/0", "host_lan0"]
    assert len(info["reconfig"]) == 32
    # flexiManage rebuilds cpuInfo from each reply: 2 cores when it is missing
    assert info["cpuInfo"]["hwCores"] == info["cpuInfo"]["grubCores"] == os.cpu_count()


async def test_reconfig_changes_only_with_interface_facts(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    first = (await d.device_info({}))["reconfig"]
    assert (await d.device_info({}))["reconfig"] == first
    facts = await wan_facts()

    async def changed() -> list[WanFacts]:
        return [replace(facts[0], addr=IPv4Interface("192.168.1.11/24")), facts[1]]

    d._facts = changed
    assert (await d.device_info({}))["reconfig"] != first


async def test_stats_carry_interface_and_tunnel_counters_over_the_time_they_cover(
        tmp_path: Path) -> None:
    from agent.vpp.counters import Counters

    now = [100.0]
    totals = [Counters(1000, 10, 2000, 20)]

    wan = WanFacts("pci:0000:00:03.00", "GigabitEthernet0/3/0", "", 1500, True, None, "", 1)
    handed: list[list[WanFacts]] = []

    async def facts() -> list[WanFacts]:
        return [wan]

    async def counters(wans: Sequence[WanFacts]
                       ) -> tuple[dict[str, Counters], dict[int, Counters]]:
        handed.append(list(wans))
        return {"pci:0000:00:03.00": totals[0]}, {7: totals[0]}

    async def stats() -> list[dict[str, Any]]:
        entry = (await no_stats())[0]
        entry["tunnel_stats"] = {"7": {"status": "up", "rtt": 1.0, "drop_rate": 0.0}}
        return [entry]

    mgr = FakeManager()
    d = JobDispatcher(mgr, ValidationPolicy(), stats=stats,  # type: ignore[arg-type]
                      config=ConfigStore(tmp_path / "s"), counters=counters, facts=facts,
                      clock=lambda: now[0])
    first = await d.device_stats()
    assert first[-1]["stats"] == {}  # the baseline reading
    now[0], totals[0] = 130.0, Counters(4000, 40, 2600, 26)
    entry = (await d.device_stats())[-1]
    assert entry["period"] == 30.0
    expected = {"rx_bytes": 3000, "rx_pkts": 30, "tx_bytes": 600, "tx_pkts": 6}
    assert entry["stats"] == {"pci:0000:00:03.00": expected}
    assert entry["tunnel_stats"]["7"] == {"status": "up", "rtt": 1.0, "drop_rate": 0.0,
                                          **expected}
    assert validate_stats([entry]) == []
    assert handed == [[wan], [wan]]  # the reply's one reading of the WAN facts


async def test_counters_are_shared_out_over_every_entry_of_a_reply(tmp_path: Path) -> None:
    """flexiManage stores the first entry of each 5-minute bucket (its throughput
    graphs) and sums every entry's bytes into the month's traffic: each entry carries
    its share of the reply's counters, by the time it covers, and the shares add up."""
    from agent.vpp.counters import Counters

    mono, wall = [100.0], [1000.0]
    totals = [Counters(1000, 10, 2000, 20)]
    wan = WanFacts("pci:0000:00:03.00", "GigabitEthernet0/3/0", "", 1500, True, None, "", 1)

    async def facts() -> list[WanFacts]:
        return [wan]

    async def counters(wans: Sequence[WanFacts]
                       ) -> tuple[dict[str, Counters], dict[int, Counters]]:
        return {wan.dev_id: totals[0]}, {7: totals[0], 8: totals[0]}

    utcs = [[999.0], [1010.0, 1020.0, 1028.0]]

    async def stats() -> list[dict[str, Any]]:
        out = []
        for i, utc in enumerate(utcs.pop(0)):
            entry = (await no_stats())[0]
            entry["utc"] = utc
            entry["tunnel_stats"] = {"7": {"status": "up", "rtt": 1.0, "drop_rate": 0.0}}
            if i:  # tunnel 8 added after the first entry
                entry["tunnel_stats"]["8"] = {"status": "up", "rtt": 2.0, "drop_rate": 0.0}
            out.append(entry)
        return out

    d = JobDispatcher(FakeManager(), ValidationPolicy(), stats=stats,  # type: ignore[arg-type]
                      config=ConfigStore(tmp_path / "s"), counters=counters, facts=facts,
                      clock=lambda: mono[0], wall_clock=lambda: wall[0])
    await d.device_stats()  # the baseline reading
    mono[0], wall[0] = 130.0, 1030.0
    totals[0] = Counters(1000 + 3001, 10 + 30, 2000 + 600, 20 + 6)
    entries = await d.device_stats()
    assert [e["period"] for e in entries] == [10.0, 10.0, 10.0]
    assert validate_stats(entries) == []
    wan_parts = [e["stats"][wan.dev_id] for e in entries]
    assert wan_parts[0] == {"rx_bytes": 1000, "rx_pkts": 10, "tx_bytes": 200, "tx_pkts": 2}
    for name, total in (("rx_bytes", 3001), ("rx_pkts", 30), ("tx_bytes", 600),
                        ("tx_pkts", 6)):
        assert sum(p[name] for p in wan_parts) == total  # the month's bytes stay exact
        assert sum(e["tunnel_stats"]["7"][name] for e in entries) == total
        assert sum(e["tunnel_stats"]["8"][name] for e in entries[1:]) == total
    assert entries[0]["tunnel_stats"]["7"]["rx_bytes"] == 1000
    assert "8" not in entries[0]["tunnel_stats"]
    assert entries[1]["tunnel_stats"]["8"]["rx_bytes"] == 1500  # 8's share: its 2 entries


def test_spread_and_entry_spans_are_exact() -> None:
    from agent.vpp.counters import Counters, entry_spans, spread

    assert spread(Counters(10, 1, 7, 0), [1.0, 1.0, 1.0]) == [
        Counters(3, 0, 2, 0), Counters(3, 0, 2, 0), Counters(4, 1, 3, 0)]
    assert spread(Counters(10, 3, 0, 0), [1.0, 1.0, 0.0]) == [
        Counters(5, 1, 0, 0), Counters(5, 2, 0, 0), Counters(0, 0, 0, 0)]
    assert entry_spans([1010.0, 1020.0, 1028.0], 1000.0, 1030.0) == [10.0, 10.0, 10.0]
    assert entry_spans([990.0, 1020.0], 1000.0, 1030.0) == [0.0, 30.0]  # an older entry
    assert entry_spans([5.0, 6.0], 1000.0, 1000.0) == [1.0, 1.0]  # no usable times


def test_stats_segment_counters_are_summed_over_threads_and_survive_resets() -> None:
    from agent.vpp.counters import Counters, combine, delta

    rx = [[(1, 100), (5, 500)], [(2, 200), (1, 100)]]  # threads x sw_if_index (pkts, bytes)
    tx = [[(0, 0), (3, 300)], [(0, 0), (1, 100)]]
    assert combine(rx, tx) == {0: Counters(300, 3, 0, 0), 1: Counters(600, 6, 400, 4)}
    before = {1: Counters(600, 6, 400, 4)}
    assert delta(before, {1: Counters(50, 1, 10, 1)}) == {1: Counters(50, 1, 10, 1)}
    assert delta({}, {1: Counters(50, 1, 10, 1)}) == {1: Counters(0, 0, 0, 0)}


PSK = "S3cr3tPSK-nested-0001"


def add_tunnel(tunnel_id: int, last_octet: int, psk: str = PSK) -> dict[str, Any]:
    params = peer_params(tunnel_id)
    params["ikev2"]["psk"] = psk
    params["dst"] = f"203.0.113.{last_octet}"
    params["peer"]["addr"] = f"10.100.0.{2 * tunnel_id}/31"
    return job("add-tunnel", params)


async def test_nested_problems_name_their_path_and_never_show_a_psk(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    leaking = add_tunnel(8, 21, psk=PSK + "-other")
    leaking["params"]["ikev2"]["remote-device-id"] = f"x {PSK}"  # another request's PSK
    no_id = job("remove-tunnel", {"tunnel-id": "x"})
    agg = job("aggregated", {"requests": [add_tunnel(7, 20), leaking, no_id,
                                          add_tunnel(7, 23),
                                          {"entity": "system", "message": "add-ospf"}]})
    out = await run(d, agg)
    assert not out.ok
    assert "requests[4].entity: 'system': unknown entity" in out.message
    assert "requests[2].params.tunnel-id: (not a number)" in out.message
    del agg["params"]["requests"][4], agg["params"]["requests"][2]
    out = await run(d, agg)  # keyable now: the tunnels themselves are validated
    assert "requests[1].params.ikev2.remote-device-id" in out.message
    assert "tunnel-id 7: added twice in one job" in out.message
    assert PSK not in out.message
    assert mgr.applied == [] and d.recorded_config() == [] and d.cfg_hash() == ""


async def test_sync_device_refuses_duplicates_and_names_them(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    out = await run(d, job("sync-device", {"requests": [add_tunnel(7, 20), add_tunnel(7, 21)]}))
    assert not out.ok
    assert "requests[1].params: 'tunnel:7': listed twice in sync-device" in out.message
    out = await run(d, job("sync-device", {"requests": [job("remove-route", ROUTE)]}))
    assert "requests[0].message: 'remove-route': not a configuration message accepted in " \
           "sync-device" in out.message
    out = await run(d, job("sync-device", {}))
    assert not out.ok and "requests" in out.message
    assert mgr.synced == []


async def test_stop_router_takes_the_peers_down_and_start_router_brings_them_back(
        tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    assert (await run(d, add_tunnel(7, 20))).ok
    assert (await run(d, job("stop-router", {}))).ok
    assert mgr.desired == {} and d.data_plane_state()[0] == "stopped"
    # while stopped, changes are validated and recorded, not programmed
    assert (await run(d, add_tunnel(8, 21))).ok
    assert mgr.desired == {}
    assert not (await run(d, add_tunnel(9, 22, psk="tiny"))).ok
    assert (await run(d, job("start-router", {"interfaces": [INTERFACE]}))).ok
    assert sorted(mgr.desired) == [7, 8] and d.data_plane_state()[0] == "running"
    # the router state survives a restart
    assert (await run(d, job("stop-router", {}))).ok
    d2, _ = make(tmp_path, mgr)
    assert d2.data_plane_state()[0] == "stopped"


async def test_stats_report_the_interface_facts_hash_of_device_info(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    info = await d.device_info({})
    assert (await d.device_stats())[-1]["reconfig"] == info["reconfig"] != ""


async def test_tunnels_without_wan_follow_the_interface_facts(tmp_path: Path) -> None:
    d, _ = make(tmp_path)
    assert (await run(d, job("add-tunnel", peer_params()))).ok
    facts = await wan_facts()
    await d.interfaces()
    assert d.tunnels_without_wan() == set()

    async def link_down() -> list[WanFacts]:
        return [replace(facts[0], link_up=False), facts[1]]

    d._facts = link_down
    await d.interfaces()
    assert d.tunnels_without_wan() == {7}


async def test_reset_device_wipes_and_forces_a_sync(tmp_path: Path) -> None:
    d, mgr = make(tmp_path)
    assert (await run(d, job("add-tunnel", peer_params()))).ok
    assert (await run(d, job("add-route", ROUTE))).ok
    assert (await run(d, job("reset-device"))).ok
    assert mgr.desired == {} and d.recorded_config() == []
    assert d.cfg_hash() not in ("", advance("", job("add-route", ROUTE)))  # never matches
    assert (await run(d, job("sync-device", {"requests": [job("add-tunnel", peer_params())]}))).ok
    assert d.cfg_hash() == "" and sorted(mgr.desired) == [7]


async def test_stats_reuse_interface_facts_and_refresh_them_in_the_background(
        tmp_path: Path) -> None:
    """While a job runs, a stats reply never waits for VPP's interface dump (behind a big
    job's requests it took seconds): the facts are re-read at most every 10 s, without
    the reply; with no job they are read afresh."""
    now = [100.0]
    reads: list[float] = []
    gate = asyncio.Event()

    async def facts() -> list[WanFacts]:
        reads.append(now[0])
        if len(reads) > 1:
            await gate.wait()  # VPP busy: the refresh is slow
        return await wan_facts()

    d = JobDispatcher(FakeManager(), ValidationPolicy(), stats=no_stats,  # type: ignore[arg-type]
                      config=ConfigStore(tmp_path / "s"), facts=facts, clock=lambda: now[0])
    first = (await d.device_stats())[-1]["reconfig"]
    assert first and reads == [100.0]
    await d._lock.acquire()  # a job runs from here on
    now[0] = 105.0
    assert (await d.device_stats())[-1]["reconfig"] == first and reads == [100.0]
    now[0] = 111.0
    # stale: answered at once from the last facts while a refresh reads VPP
    answered = await asyncio.wait_for(d.device_stats(), 1.0)
    assert answered[-1]["reconfig"] == first and reads == [100.0, 111.0]
    await d.device_stats()  # a refresh in progress is not started twice
    assert reads == [100.0, 111.0]
    gate.set()
    d._lock.release()  # no job: a reply reads the facts afresh
    await d.device_stats()
    assert reads == [100.0, 111.0, 111.0]
