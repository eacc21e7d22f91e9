"""The job path drives FRR (routing room) and the multilink policy (policy room): what each
message asks of them, in which order with the VPP step, and the undo when either fails.
The peer manager, the routing manager and the policy manager are recording fakes here;
tests/integration/test_dispatch_frr.py runs the same path against a real FRR."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.admin import protocol as proto
from agent.admin.peerctl import build_request, render
from agent.app import make_routing
from agent.config import RoutingConfig
from agent.jobs.cfgstore import ConfigStore
from agent.jobs.dispatch import JobDispatcher
from agent.jobs.signature import advance
from agent.jobs.validation import ValidationPolicy
from agent.peers.changes import Change
from agent.peers.manager import JobResult
from agent.peers.spec import PeerSpec
from agent.policy.model import Application, PolicyError
from agent.routing.frrconf import Plan
from agent.routing.manager import RoutingError, RoutingManager
from agent.routing.model import RoutingModel
from agent.vpp.errors import VppError
from agent.vpp.executor import ApplyError
from agent.vpp.plan import Op
from tests.unit.test_jobs_dispatch import (
    OSPF,
    ROUTE,
    FakeManager,
    job,
    no_stats,
    peer_params,
    run,
    wan_facts,
)

CHANGED = Plan((), ((("router ospf",), "ospf router-id 192.0.2.1"),))


class Events(list[str]):
    """One ordered record of what the fakes were asked, across VPP, FRR and the policy."""


class OrderedManager(FakeManager):
    events: Events

    async def apply(self, changes: Sequence[Change],
                    alongside: Callable[[], object] | None = None) -> JobResult:
        self.events.append("vpp.apply " + " ".join(
            f"{type(c).__name__}:{getattr(c, 'tunnel_id', None) or c.spec.tunnel_id}"  # type: ignore[union-attr]
            for c in changes))
        return await super().apply(changes, alongside)

    async def sync(self, specs: Sequence[PeerSpec]) -> JobResult:
        self.events.append("vpp.sync " + " ".join(str(s.tunnel_id) for s in specs))
        return await super().sync(specs)


class FakeRouting:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.applied: list[RoutingModel] = []
        self._model: RoutingModel | None = None
        self.fail: str | None = None
        self.bgp = {"routerId": "192.0.2.1", "as": 65001, "peers": {}}

    @property
    def model(self) -> RoutingModel | None:
        return self._model

    async def apply(self, model: RoutingModel) -> Plan:
        self.events.append("frr.apply")
        if self.fail:
            raise RoutingError(self.fail)  # the real manager has restored FRR by now
        changed = model != self._model
        self.applied.append(model)
        self._model = model
        return CHANGED if changed else Plan((), ())

    async def bgp_status(self) -> dict[str, Any]:
        return dict(self.bgp)

    async def stats_bgp(self, max_age: float = 180.0) -> dict[str, Any]:
        return dict(self.bgp)

    async def peer_status(self) -> list[dict[str, Any]]:
        return [{"tunnel_id": 7, "interface": "peer7", "protocol": "ospf",
                 "neighbor": "10.100.0.17", "state": "Full", "learned": 2, "advertised": 1}]


class FakePolicies:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.applications: dict[str, Application] = {}
        self.fail: Exception | None = None

    def _record(self, what: str) -> int:
        self.events.append(what)
        if self.fail is not None:
            raise self.fail
        return 1

    async def apply(self, policy_params: Mapping[str, Any],
                    applications_params: Mapping[str, Any] | None = None) -> int:
        apps = ("keep" if applications_params is None
                else ",".join(a["id"] for a in applications_params.get("applications", [])))
        return self._record(f"policy.apply {policy_params['id']} apps={apps}")

    async def remove(self) -> int:
        return self._record("policy.remove")

    async def set_applications(self, applications_params: Mapping[str, Any] | None) -> int:
        apps = ("none" if applications_params is None
                else ",".join(a["id"] for a in applications_params.get("applications", [])))
        return self._record(f"policy.apps {apps}")

    async def release(self, tunnel_ids: Iterable[int]) -> int:
        self.events.append("policy.release " + ",".join(map(str, sorted(tunnel_ids))))
        return 0

    def restore(self, tunnel_ids: Iterable[int]) -> None:
        self.events.append("policy.restore " + ",".join(map(str, sorted(tunnel_ids))))


class Rig:
    def __init__(self, tmp_path: Path, *, frr: bool = True) -> None:
        self.events = Events()
        self.manager = OrderedManager()
        self.manager.events = self.events
        self.routing = FakeRouting(self.events) if frr else None
        self.policies = FakePolicies(self.events)
        self.d = JobDispatcher(self.manager, ValidationPolicy(),  # type: ignore[arg-type]
                               stats=no_stats, config=ConfigStore(tmp_path / "state"),
                               facts=wan_facts, routing=self.routing,
                               policies=self.policies)

    def take(self) -> list[str]:
        out = list(self.events)
        self.events.clear()
        return out


APPS = {"applications": [{"id": "app1", "name": "video", "category": "media",
                          "serviceClass": "streaming", "importance": "high",
                          "rules": [{"ip": "203.0.113.0/24"}]}]}
POLICY = {"id": "pol1", "rules": [{
    "id": "r1", "priority": 10,
    "classification": {"prefix": {"ip": "10.1.0.0/16", "ports": "", "protocol": ""}},
    "action": {"links": [{"pathlabels": ["A"], "order": "priority"}], "order": "priority"}}]}
BGP = {"localAsn": "65001", "routerId": "192.0.2.1", "redistributeOspf": False,
       "neighbors": [{"ip": "10.100.0.17", "remoteAsn": "65002", "password": "",
                      "inboundFilter": "", "outboundFilter": ""}],
       "networks": [{"ipv4": "192.168.1.0/24"}]}


def sync_job(*messages: dict[str, Any]) -> dict[str, Any]:
    return job("sync-device", {"requests": [copy.deepcopy(m) for m in messages]})


async def test_add_tunnel_programs_vpp_then_frr_with_the_peers_routing(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    msg = job("add-tunnel", peer_params())
    assert (await run(r.d, msg)).ok
    assert r.take() == ["vpp.apply AddPeer:7", "frr.apply"]
    assert r.routing is not None
    (peer,) = r.routing.applied[-1].peers
    assert (peer.tunnel_id, peer.interface, str(peer.addr), peer.routing, peer.ospf_cost) == (
        7, "peer7", "10.100.0.16/31", "ospf", 100)
    assert r.d.cfg_hash() == advance("", msg)


async def test_routing_messages_reach_frr_and_a_repeat_does_not(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert r.routing is not None
    assert (await run(r.d, job("add-ospf", {**OSPF, "routerId": "192.0.2.1"}))).ok
    assert (await run(r.d, job("add-routing-bgp", BGP))).ok
    model = r.routing.applied[-1]
    assert model.ospf is not None and str(model.ospf.router_id) == "192.0.2.1"
    assert model.bgp is not None and model.bgp.local_asn == 65001
    # modify-routing-bgp merges into the recorded item; FRR gets the merged whole
    assert (await run(r.d, job("modify-routing-bgp", {"localAsn": "65010"}))).ok
    assert r.routing.applied[-1].bgp is not None
    assert r.routing.applied[-1].bgp.local_asn == 65010
    assert [str(n.ip) for n in r.routing.applied[-1].bgp.neighbors] == ["10.100.0.17"]
    # a redistributed route feeds FRR's access-list; one that is not leaves FRR alone
    r.take()
    assert (await run(r.d, job("add-route", {**ROUTE, "redistributeViaOSPF": True}))).ok
    assert r.take() == ["frr.apply"]
    assert [str(x.addr) for x in r.routing.applied[-1].routes] == ["10.9.0.0/16"]
    assert (await run(r.d, job("add-route", {**ROUTE, "addr": "10.8.0.0/16"}))).ok
    assert r.take() == []
    # the same add-ospf again: nothing new for FRR (the model did not change)
    assert (await run(r.d, job("add-ospf", {**OSPF, "routerId": "192.0.2.1"}))).ok
    assert r.take() == []
    assert (await run(r.d, job("remove-route", {**ROUTE, "redistributeViaOSPF": True}))).ok
    assert r.take() == ["frr.apply"]
    assert r.routing.applied[-1].routes == ()
    assert (await run(r.d, job("remove-routing-bgp", {}))).ok
    assert r.routing.applied[-1].bgp is None


async def test_unusable_routing_params_refuse_the_job_before_vpp(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    agg = job("aggregated", {"requests": [
        job("add-tunnel", peer_params()),
        job("add-routing-bgp", {**BGP, "localAsn": "not-a-number"})]})
    out = await run(r.d, agg)
    assert not out.ok
    assert "routing" in out.message and "localAsn" in out.message
    assert r.take() == []  # neither VPP nor FRR was asked anything
    assert r.d.recorded_config() == [] and r.d.cfg_hash() == ""


async def test_frr_failure_undoes_the_vpp_steps_and_says_so(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert (await run(r.d, job("add-tunnel", peer_params(3)))).ok
    before_hash, before_cfg = r.d.cfg_hash(), r.d.recorded_config()
    r.take()
    assert r.routing is not None
    r.routing.fail = "FRR did not take 1 line(s): interface peer7 / ip ospf cost 100"
    out = await run(r.d, job("add-tunnel", peer_params(7)))
    assert not out.ok
    assert "FRR did not take" in out.message and "VPP changes were undone" in out.message
    # VPP first, then FRR, then VPP back to the peers it had (tunnel 7 released first)
    assert r.take() == ["vpp.apply AddPeer:7", "frr.apply", "policy.release 7",
                        "vpp.sync 3", "policy.restore 7"]
    assert sorted(r.manager.desired) == [3]
    assert r.d.cfg_hash() == before_hash and r.d.recorded_config() == before_cfg


async def test_frr_failure_on_a_removal_recreates_the_tunnel(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    spec = r.manager.desired[7]
    r.take()
    assert r.routing is not None
    r.routing.fail = "vtysh -c 'show running-config' failed (1)"
    out = await run(r.d, job("remove-tunnel", {"tunnel-id": 7}))
    assert not out.ok and "undone" in out.message
    assert r.take() == ["policy.release 7", "vpp.apply RemovePeer:7", "policy.restore 7",
                        "frr.apply", "vpp.sync 7"]
    assert r.manager.desired == {7: spec}


async def test_a_tunnel_leaves_the_policy_before_vpp_deletes_it(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    r.take()
    assert (await run(r.d, job("remove-tunnel", {"tunnel-id": 7}))).ok
    assert r.take() == ["policy.release 7", "vpp.apply RemovePeer:7", "policy.restore 7",
                        "frr.apply"]
    assert r.routing is not None and r.routing.applied[-1].peers == ()


async def test_policy_messages_reach_the_policy_manager(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    # flexiManage always aggregates a policy install, with the application database first
    install = job("aggregated", {"requests": [job("add-application", APPS),
                                              job("add-multilink-policy", POLICY)]})
    assert (await run(r.d, install)).ok
    assert r.take() == ["policy.apply pol1 apps=app1"]
    assert (await run(r.d, job("aggregated", {"requests": [
        job("add-multilink-policy", POLICY)]}))).ok
    assert r.take() == ["policy.apply pol1 apps=keep"]
    assert (await run(r.d, job("add-application", APPS))).ok
    assert r.take() == ["policy.apps app1"]
    uninstall = job("aggregated", {"requests": [job("remove-multilink-policy", {}),
                                                job("remove-application", {})]})
    assert (await run(r.d, uninstall)).ok
    assert r.take() == ["policy.remove"]
    assert (await run(r.d, job("remove-application", {}))).ok
    assert r.take() == ["policy.apps none"]


async def test_policy_refusal_is_the_reply_and_undoes_vpp_and_frr(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    r.policies.fail = ApplyError(Op("abf_policy_add_del", {}, "add ABF policy 1"),
                                 VppError("abf_policy_add_del: retval -54"), 0, [])
    agg = job("aggregated", {"requests": [job("add-tunnel", peer_params(7)),
                                          job("add-multilink-policy", POLICY)]})
    out = await run(r.d, agg)
    assert not out.ok
    assert "multilink policy" in out.message and "-54" in out.message
    assert "undone" in out.message
    assert r.take() == ["vpp.apply AddPeer:7", "frr.apply", "policy.apply pol1 apps=keep",
                        "frr.apply", "policy.release 7", "vpp.sync ", "policy.restore 7"]
    assert r.routing is not None and r.routing.model == RoutingModel()  # FRR as before
    assert r.manager.desired == {} and r.d.recorded_config() == [] and r.d.cfg_hash() == ""


async def test_unusable_policy_params_refuse_before_vpp(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    agg = job("aggregated", {"requests": [job("add-tunnel", peer_params(7)),
                                          job("add-multilink-policy", {"id": "p",
                                                                        "rules": "all"})]})
    out = await run(r.d, agg)
    assert not out.ok and "rules must be an array" in out.message
    assert r.take() == []
    r.policies.fail = PolicyError("this VPP lacks acl_add_replace: is acl_plugin.so enabled?")
    out = await run(r.d, job("aggregated", {"requests": [job("add-multilink-policy", POLICY)]}))
    assert not out.ok and "acl_plugin.so" in out.message


async def test_sync_device_hands_over_routing_and_policy_and_converges(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    listed = (job("add-ospf", OSPF), job("add-tunnel", peer_params(7)),
              job("add-application", APPS), job("add-multilink-policy", POLICY))
    assert (await run(r.d, sync_job(*listed))).ok
    assert r.take() == ["vpp.sync 7", "frr.apply", "policy.apply pol1 apps=app1"]
    assert r.routing is not None
    first = r.routing.applied[-1]
    # the same list again: FRR is handed the same model (it then writes nothing)
    assert (await run(r.d, sync_job(*listed))).ok
    assert r.take() == ["vpp.sync 7", "frr.apply", "policy.apply pol1 apps=app1"]
    assert r.routing.applied[-1] == first
    # without the policy and the applications: the policy goes, the database is emptied
    assert (await run(r.d, sync_job(*listed[:2]))).ok
    assert r.take() == ["vpp.sync 7", "frr.apply", "policy.remove", "policy.apps none"]
    # a policy without an add-application in the list gets an empty database
    assert (await run(r.d, sync_job(*listed[:2], listed[3]))).ok
    assert r.take()[-1] == "policy.apply pol1 apps="


async def test_stop_router_takes_routing_away_and_start_router_brings_it_back(
        tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert r.routing is not None
    assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    assert (await run(r.d, job("stop-router", {}))).ok
    assert r.routing.applied[-1] == RoutingModel()
    assert (await run(r.d, job("start-router", {}))).ok
    assert [p.tunnel_id for p in r.routing.applied[-1].peers] == [7]


async def test_reset_device_removes_routing_and_policy(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    r.take()
    assert (await run(r.d, job("reset-device"))).ok
    assert r.take() == ["policy.release 7", "vpp.sync ", "policy.restore 7", "frr.apply",
                        "policy.remove", "policy.apps none"]
    assert r.routing is not None and r.routing.model == RoutingModel()


async def test_without_frr_routing_is_recorded_and_warned_once(tmp_path: Path) -> None:
    r = Rig(tmp_path, frr=False)
    with capture_logs() as logs:
        assert (await run(r.d, job("add-ospf", OSPF))).ok
        assert (await run(r.d, job("add-routing-bgp", {**BGP, "localAsn": "junk"}))).ok
        assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    warnings = [e for e in logs if "vtysh" in e["event"]]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert {m["message"] for m in r.d.recorded_config()} == {
        "add-ospf", "add-routing-bgp", "add-tunnel"}
    assert await r.d.bgp_status() == {}
    assert await r.d.routing_status() == []
    await r.d.reconcile_routing()  # nothing to do, no error
    stats = await r.d.device_stats()
    assert "bgp" not in stats[-1]


async def test_bgp_status_stats_and_show_routing_come_from_the_routing_manager(
        tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert await r.d.bgp_status() == {"routerId": "192.0.2.1", "as": 65001, "peers": {}}
    stats = await r.d.device_stats()
    assert stats[-1]["bgp"] == {"routerId": "192.0.2.1", "as": 65001, "peers": {}}
    req = build_request(["show", "routing"])
    assert req.cmd == proto.SHOW_ROUTING
    text = render(req, await r.d.routing_status())
    assert text.splitlines()[0].split() == ["tunnel", "interface", "protocol", "neighbor",
                                            "state", "learned", "advertised"]
    assert text.splitlines()[1].split() == ["7", "peer7", "ospf", "10.100.0.17", "Full",
                                            "2", "1"]


async def test_reconcile_routing_applies_the_recorded_routing_and_logs_once(
        tmp_path: Path) -> None:
    r = Rig(tmp_path)
    assert (await run(r.d, job("add-tunnel", peer_params(7)))).ok
    assert r.routing is not None
    # a restarted agent: a fresh routing manager, the recorded configuration from disk
    again = Rig(tmp_path)
    assert again.routing is not None
    await again.d.reconcile_routing()
    assert again.routing.model == r.routing.model
    again.routing.fail = "vtysh -c 'show running-config' failed (1): zebra is not running"
    with capture_logs() as logs:
        await again.d.reconcile_routing()
        await again.d.reconcile_routing()
    assert [e["event"] for e in logs] == ["FRR reconcile failed"]
    again.routing.fail = None
    with capture_logs() as logs:
        await again.d.reconcile_routing()
    assert [e["event"] for e in logs] == ["FRR reconciled again"]


def test_routing_manager_only_when_vtysh_is_installed(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert make_routing(RoutingConfig(), tmp_path, which=lambda _name: None) is None
        assert make_routing(RoutingConfig(vtysh=""), tmp_path,
                            which=lambda _name: "/usr/bin/vtysh") is None
    assert [e["log_level"] for e in logs] == ["warning", "warning"]
    made = make_routing(RoutingConfig(vty_socket="/run/x"), tmp_path,
                        which=lambda name: f"/usr/bin/{name}")
    assert isinstance(made, RoutingManager)
    assert made._vtysh.binary == "/usr/bin/vtysh"
    assert made._vtysh.vty_socket == "/run/x"


@pytest.mark.parametrize("frr", [True, False])
async def test_admin_show_routing(tmp_path: Path, frr: bool) -> None:
    from agent.admin.backend import ManagerBackend
    from agent.admin.server import AdminServer

    r = Rig(tmp_path, frr=frr)
    backend = ManagerBackend(r.manager, r.manager.vpp,  # type: ignore[arg-type]
                             routing=r.d.routing_status)
    server = AdminServer(backend, tmp_path / "admin.sock")
    rows = await server._dispatch(proto.SHOW_ROUTING, {}, 0)
    assert rows == (await r.routing.peer_status() if r.routing is not None else [])


@pytest.mark.parametrize("frr", [True, False])
async def test_get_bgp_status_direct_message_answers_from_frr(tmp_path: Path, frr: bool) -> None:
    from agent.config import RemoteConfig
    from agent.remote.service import RemoteService

    async def no_cli(command: str) -> str:
        raise AssertionError(command)

    r = Rig(tmp_path, frr=frr)
    remote = RemoteService(RemoteConfig(), vpp_cli=no_cli,  # type: ignore[arg-type]
                           config=r.d.recorded_config, secrets=list,
                           bgp_status=r.d.bgp_status)
    out = await remote.answer("get-bgp-status", None)
    assert out.ok
    assert out.message == ({"routerId": "192.0.2.1", "as": 65001, "peers": {}} if frr else {})
