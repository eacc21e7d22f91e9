"""The kind registry: planning, cleanup, marks and reconcile are loops over kinds."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from types import SimpleNamespace
from typing import Any

from agent.peers.reconcile import plan_reconcile
from agent.peers.spec import PeerSpec
from agent.vpp import kinds
from agent.vpp.kinds.base import InterfaceInfo, Kind, Observed
from agent.vpp.kinds.profile import profile_name, tunnel_of_profile
from agent.vpp.kinds.tunnel import TunnelInfo, tunnel_ref
from agent.vpp.ops import Op, VppFacts
from agent.vpp.plan import plan_add_ops
from tests.spec_factory import example_spec

FACTS = VppFacts(wan_sw_if_index=1)


class Marker(Kind):
    """A kind a newcomer could add: one op with its undo, drift when VPP lacks it."""

    name = "marker"
    recreates_peer = True

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        undo = Op("marker_del", {"sw_if_index": tunnel_ref(spec.tunnel_id)}, "unmark")
        return [Op("marker_add", {"sw_if_index": tunnel_ref(spec.tunnel_id)}, "mark",
                   undo=(undo,))]

    def drift(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int) -> list[str]:
        return [] if obs.extra.get(self.name) == {sw} else ["marker missing"]

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        if sw is None or sw not in obs.extra.get(self.name, set()):
            return []
        return [Op("marker_del", {"sw_if_index": tunnel_ref(tid)}, "unmark")]


def in_sync_obs(spec: PeerSpec) -> Observed:
    """What VPP shows right after the spec was applied (tunnel 7 at sw_if_index 20)."""
    obs = Observed()
    obs.interfaces = {20: InterfaceInfo(20, "ipip7", True, spec.mtu or 0)}
    obs.tunnels = {7: TunnelInfo(7, 20, spec.src, spec.dst)}
    obs.addresses = {20: {spec.addr}}
    obs.mss = {20: spec.tcp_mss_clamp or 0}
    obs.lcp = {20: "peer7"}
    return obs


def test_the_planner_is_the_kinds_in_registry_order() -> None:
    spec = example_spec()
    by_kind = [op.message for k in kinds.KINDS for op in k.create(spec, FACTS, ())]
    assert [op.message for op in plan_add_ops(spec, FACTS)] == by_kind
    assert by_kind[0] == "ipip_add_tunnel" and by_kind[-1] == "ip_route_add_del"


def test_a_registered_kind_is_created_compared_and_deleted_without_other_changes() -> None:
    spec = example_spec(monitor_ips=())
    registry = (*kinds.KINDS[:-1], Marker(), kinds.KINDS[-1])
    ops = kinds.create(spec, FACTS, (), registry)
    assert [op.message for op in ops].index("marker_add") == len(ops) - 1
    obs = in_sync_obs(spec)
    # VPP lacks the new kind's object: reconcile re-creates the peer, and says why
    plan = plan_reconcile({7: spec}, {7}, obs, {7: FACTS}, kind_list=registry)
    assert "marker missing" in plan.notes[0]
    assert "marker_add" in [op.message for op in plan.chains[0]]
    # a leftover of the new kind is deleted before the tunnel it hangs from
    obs.extra["marker"] = {20}
    gone = [op.message for op in kinds.delete(7, obs, registry)]
    assert gone.index("marker_del") < gone.index("ipip_del_tunnel")
    assert "marker_del" not in [op.message for op in kinds.delete(7, obs)]


def test_profile_names_are_built_and_read_back_in_one_place() -> None:
    assert profile_name(7) == "peer-7"
    assert tunnel_of_profile(profile_name(7)) == 7
    for foreign in ("peer-07", "peer-x", "peer7", "other-7", "peer-"):
        assert tunnel_of_profile(foreign) is None


def test_marks_come_from_every_kind() -> None:
    spec = example_spec()
    obs = in_sync_obs(spec)
    obs.tunnels[9] = TunnelInfo(9, 21, spec.src, IPv4Address("198.51.100.9"))
    obs.lcp[21] = "someone-else"
    obs.addresses[21] = {IPv4Interface("10.9.9.9/31")}
    assert kinds.owned(obs) == {7}  # the lcp mark; tunnel 9 is not the agent's
    plan = plan_reconcile({}, kinds.owned(obs), obs, {})
    assert plan.notes == ["tunnel 7: not desired, removing its leftovers"]
    assert all(op.tunnel_id == 7 for op in plan.chains[0])


class FakeVpp:
    """Answers the dumps the kinds read; records the order they were asked in."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        ns = SimpleNamespace
        self.replies: dict[str, list[Any]] = {
            "sw_interface_dump": [ns(sw_if_index=20, interface_name="ipip7", flags=1,
                                     mtu=[1400, 0, 0, 0])],
            "ipip_tunnel_dump": [ns(tunnel=ns(instance=7, sw_if_index=20,
                                              src="192.168.1.10", dst="203.0.113.10"))],
            "ikev2_profile_dump": [ns(profile=ns(name="not-ours"))],
            "mss_clamp_get": [ns(sw_if_index=20, ipv4_mss=1310, ipv4_direction=3)],
            "lcp_itf_pair_get": [ns(phy_sw_if_index=20, host_if_name="peer7")],
            "ip_address_dump": [ns(prefix="10.100.0.16/31")],
            "ip_route_dump": [
                ns(route=ns(prefix=p, n_paths=1,
                            paths=[ns(sw_if_index=20, type=0, preference=0)]))
                for p in ("10.100.0.16/31", "8.8.8.8/32")],
        }

    def has(self, name: str) -> bool:
        return name in self.replies

    async def dump(self, name: str, **fields: Any) -> list[Any]:
        self.asked.append(name)
        await asyncio.sleep(0)  # let the other dumps of the stage be asked first
        return self.replies[name]


def test_observe_reads_each_kind_in_stages_and_absorbs_in_kind_order() -> None:
    vpp = FakeVpp()
    obs = asyncio.run(kinds.observe(vpp))  # type: ignore[arg-type]
    # per-tunnel reads only once the tunnels are known; every dump asked once
    assert set(vpp.asked[:5]) == {"sw_interface_dump", "ipip_tunnel_dump",
                                  "ikev2_profile_dump", "mss_clamp_get", "lcp_itf_pair_get"}
    assert sorted(vpp.asked[5:]) == ["ip_address_dump", "ip_route_dump"]
    assert obs.tunnels[7].sw_if_index == 20 and obs.interfaces[20].mtu == 1400
    assert obs.addresses == {20: {IPv4Interface("10.100.0.16/31")}}
    assert obs.mss == {20: 1310} and obs.lcp == {20: "peer7"} and obs.profiles == {}
    # the route absorbed after the address: VPP's connected /31 is not the agent's
    assert obs.routes == {20: {IPv4Network("8.8.8.8/32")}}
    assert kinds.owned(obs) == {7}
