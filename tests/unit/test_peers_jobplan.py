"""A job's decisions without VPP: desired state + changes + facts -> a typed plan."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from agent.peers.changes import AddPeer, JobError, ModifyTargets, RemovePeer
from agent.peers.jobplan import (
    GLOBAL,
    check_added,
    draft_job,
    plan_job,
    sync_changes,
)
from agent.peers.spec import Identity, IdType
from agent.vpp.ops import VppFacts
from agent.vpp.plan import liveness_op
from tests.spec_factory import numbered_spec

FACTS = VppFacts(wan_sw_if_index=1)


def test_an_add_plans_the_whole_peer_and_records_its_intent() -> None:
    spec = numbered_spec(1)
    draft = draft_job({}, [AddPeer(spec)])
    assert draft.new == {1: spec} and draft.added == (spec,) and draft.touched == (1,)
    plan = plan_job({}, draft, {1: FACTS}, {}, {}, liveness_op())
    assert plan.removals[GLOBAL][0].message == "ikev2_profile_set_liveness"
    assert plan.sets_liveness and plan.writes_vpp
    assert plan.adds[1][0].message == "ipip_add_tunnel"
    assert plan.intents == (1,) and plan.upserts == (spec,) and plan.deletes == ()


def test_a_repeated_add_and_a_missing_remove_are_notes_that_write_nothing() -> None:
    spec = numbered_spec(1)
    draft = draft_job({1: spec}, [AddPeer(spec), RemovePeer(5)])
    assert draft.notes == ("tunnel 1 already configured as requested",
                           "tunnel 5 does not exist; nothing to remove")
    plan = plan_job({1: spec}, draft, {}, {1: FACTS}, {}, liveness_op())
    # nothing to write in VPP: the global liveness step is not sent either
    assert not plan.writes_vpp and not plan.sets_liveness and plan.intents == ()


def test_remove_then_add_of_one_tunnel_removes_before_it_adds() -> None:
    old = numbered_spec(1)
    new = numbered_spec(1, mtu=1400)
    draft = draft_job({1: old}, [RemovePeer(1), AddPeer(new)])
    plan = plan_job({1: old}, draft, {1: FACTS}, {1: FACTS}, {})
    assert plan.removals[1][-1].message == "ipip_del_tunnel"
    assert plan.adds[1][0].message == "ipip_add_tunnel"
    assert plan.upserts == (new,) and plan.deletes == ()


def test_new_monitor_targets_only_move_routes() -> None:
    spec = numbered_spec(1)
    change = ModifyTargets(1, (IPv4Address("9.9.9.9"),), ())
    draft = draft_job({1: spec}, [change])
    plan = plan_job({1: spec}, draft, {}, {1: FACTS}, {1: (IPv4Address("1.1.1.1"),)})
    assert [op.what for op in plan.removals[1]] == [
        f"tunnel 1: delete route {spec.monitor_ips[0]}/32"]
    assert [op.what for op in plan.adds[1]] == ["tunnel 1: add route 9.9.9.9/32"]


@pytest.mark.parametrize("change, error", [
    (AddPeer(numbered_spec(1, mtu=1400)), "already exists with different parameters"),
    (AddPeer(replace(numbered_spec(2), dst=numbered_spec(1).dst)),
     "one ipip tunnel per endpoint pair"),
    (AddPeer(numbered_spec(2, remote_id=Identity(IdType.FQDN, "gw1.cloud.example"))),
     "already used by tunnel 1"),
    (ModifyTargets(3, (), ()), "tunnel-id 3 does not exist"),
])
def test_what_cannot_coexist_is_refused_before_vpp_is_read(change: object,
                                                            error: str) -> None:
    with pytest.raises(JobError, match=error):
        draft_job({1: numbered_spec(1)}, [change])  # type: ignore[list-item]


def test_capability_refusals_and_warnings_of_added_peers() -> None:
    with pytest.raises(JobError, match="ikev2_set_pfs"):
        check_added([numbered_spec(1, pfs=True)], {1: FACTS})
    specs = [numbered_spec(n) for n in range(1, 13)]
    warnings = check_added(specs, dict.fromkeys(range(1, 13), FACTS))
    draft = draft_job({}, [AddPeer(s) for s in specs])
    plan = plan_job({}, draft, dict.fromkeys(range(1, 13), FACTS), {}, {}, None, warnings)
    # one line per gap, naming the tunnels
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith("tunnels 1, 2, 3") and "and 2 more" in plan.warnings[0]


def test_sync_changes_touch_only_what_differs() -> None:
    a, b, c = numbered_spec(1), numbered_spec(2), numbered_spec(3)
    b2 = numbered_spec(2, mtu=1400)
    assert sync_changes({1: a, 2: b, 3: c}, [a, b2]) == [RemovePeer(2), RemovePeer(3),
                                                         AddPeer(b2)]
    assert sync_changes({1: a}, [a]) == []
    with pytest.raises(JobError, match="more than once"):
        sync_changes({}, [a, a])
