"""The SA-supervision decision core: VPP's semantics in, one action out (no I/O)."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address

from agent.peers.supervision import (
    ECP_REASON,
    Action,
    Endpoints,
    Policy,
    Record,
    SaView,
    Status,
    initiated,
    match_sas,
    step,
)
from agent.vpp.readers import SaInfo

POLICY = Policy(role="initiator", dst="203.0.113.10", sa_init_timeout=30.0,
                backoff_min=2.0, backoff_max=60.0)
UP_SA = SaView(ispi=0x11, rspi=0x22, state="AUTHENTICATED", children=1,
               child_spis=((0xA, 0xB),))


def run(rec: Record, sas: list[SaView], t0: float, t1: float, dt: float = 2.0,
        policy: Policy = POLICY) -> tuple[Record, list[float]]:
    """Step every `dt` from t0 to t1 with the same observation; times of restarts."""
    restarts = []
    t = t0
    while t < t1:
        s = step(sas, rec, t, policy)
        if s.action is Action.RESTART:
            restarts.append(t)
            rec = initiated(s.record, t)  # what the manager does after a restart
        else:
            rec = s.record
        t += dt
    return rec, restarts


def test_a_fresh_initiation_is_waited_for_not_repeated() -> None:
    rec = initiated(Record(), 0.0)
    for t in (2.0, 10.0, 28.0):
        s = step([], rec, t, POLICY)
        assert s.action is Action.NONE
        assert s.record.status is Status.CONNECTING
        assert "IKE_SA_INIT sent to 203.0.113.10" in s.record.reason
        rec = s.record


def test_an_unreachable_peer_is_reported_and_restarted_at_most_once_per_timeout() -> None:
    rec = initiated(Record(), 0.0)
    s = step([], rec, 30.0, POLICY)
    assert s.action is Action.RESTART
    assert s.record.status is Status.DOWN
    assert s.record.reason.startswith("no answer from peer 203.0.113.10 within 30 s")
    rec, restarts = run(initiated(Record(), 0.0), [], 0.0, 600.0)
    gaps = [b - a for a, b in itertools.pairwise(restarts)]
    assert restarts[0] == 30.0
    assert all(g >= 30.0 for g in gaps), gaps  # never stacks negotiations
    assert 10 <= len(restarts) <= 20
    assert rec.status is Status.DOWN and "no answer from peer" in rec.reason


def test_the_reachable_peer_brings_it_up_and_resets_the_backoff() -> None:
    rec, restarts = run(initiated(Record(), 0.0), [], 0.0, 100.0)
    assert restarts
    s = step([UP_SA], rec, 101.0, POLICY)
    assert s.action is Action.NONE
    assert s.record.status is Status.UP
    assert s.record.child_spis == ((0xA, 0xB),)
    assert s.record.backoff == 0.0 and s.record.restarts == 0


def test_a_lost_sa_is_left_to_vpps_own_reinitiation() -> None:
    up = step([UP_SA], initiated(Record(), 0.0), 1.0, POLICY).record
    lost = step([], up, 50.0, POLICY)
    assert lost.action is Action.NONE  # VPP re-initiates after DPD: do not fight it
    assert lost.record.status is Status.DOWN
    assert "IKE SA lost" in lost.record.reason
    rec = lost.record
    for t in (52.0, 60.0, 78.0):
        s = step([], rec, t, POLICY)
        assert s.action is Action.NONE, t
        assert "VPP is re-initiating" in s.record.reason
        rec = s.record
    new_sa = SaView(ispi=0x33, rspi=0x44, state="AUTHENTICATED", children=1)
    back = step([new_sa], rec, 79.0, POLICY)
    assert back.action is Action.NONE and back.record.status is Status.UP


def test_a_lost_sa_vpp_does_not_bring_back_is_restarted_after_the_timeout() -> None:
    up = step([UP_SA], initiated(Record(), 0.0), 1.0, POLICY).record
    rec = step([], up, 50.0, POLICY).record
    assert step([], rec, 79.0, POLICY).action is Action.NONE
    s = step([], rec, 80.0, POLICY)
    assert s.action is Action.RESTART
    assert "no answer from peer" in s.record.reason


def test_a_failed_negotiation_is_restarted_with_capped_backoff() -> None:
    failed = [SaView(ispi=0x55, rspi=0x66, state="AUTH_FAILED", children=0)]
    rec, restarts = run(initiated(Record(), 0.0), failed, 0.0, 400.0, dt=0.5)
    assert rec.status is Status.DOWN and rec.reason.startswith("AUTH_FAILED")
    gaps = [b - a for a, b in itertools.pairwise(restarts)]
    assert gaps[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert max(gaps) == 60.0  # capped


def test_reasons_name_vpps_failure_states() -> None:
    rec = initiated(Record(), 0.0)
    for state, words in [("AUTH_FAILED", "PSK or IKE IDs"),
                         ("NO_PROPOSAL_CHOSEN", "refused our ESP proposal or our traffic"),
                         ("TS_UNACCEPTABLE", "narrowed the traffic selectors")]:
        s = step([SaView(1, 2, state)], rec, 1.0, POLICY)
        assert s.record.status is Status.DOWN
        assert s.record.reason.startswith(state) and words in s.record.reason


def test_an_sa_without_child_is_in_flight_first_then_failed() -> None:
    pending = [SaView(ispi=7, rspi=8, state="SA_INIT")]
    rec = initiated(Record(), 0.0)
    s = step(pending, rec, 1.0, POLICY)
    assert s.action is Action.NONE and s.record.status is Status.CONNECTING
    assert "IKE_AUTH in progress" in s.record.reason
    s = step(pending, s.record, 3.6, POLICY)  # older than VPP's own IKE_AUTH retry
    assert s.action is Action.RESTART
    assert s.record.reason.startswith("NO_PROPOSAL_CHOSEN")
    gone_child = [SaView(ispi=9, rspi=10, state="NO_CHILD")]
    s = step(gone_child, step(gone_child, rec, 1.0, POLICY).record, 7.0, POLICY)
    assert s.action is Action.RESTART and "without a child SA" in s.record.reason


def test_vpp_setting_the_tunnel_down_means_the_child_is_going() -> None:
    s = step([UP_SA], initiated(Record(), 0.0), 1.0, POLICY, admin_up=False)
    assert s.record.status is Status.DOWN
    assert s.action is Action.NONE
    assert step([UP_SA], s.record, 2.0, POLICY, admin_up=True).record.status is Status.UP


def test_a_profile_not_initiated_by_this_process_starts_over_cleanly() -> None:
    s = step([], Record(), 5.0, POLICY)  # e.g. after an agent restart, VPP kept the profile
    assert s.action is Action.RESTART


def test_a_responder_never_initiates() -> None:
    responder = Policy(role="responder", dst="203.0.113.10")
    rec, restarts = run(Record(), [], 0.0, 300.0, policy=responder)
    assert restarts == []
    assert rec.reason == "waiting for the peer to initiate"
    s = step([SaView(1, 2, "TS_UNACCEPTABLE")], rec, 301.0, responder)
    assert s.action is Action.NONE and s.record.reason.startswith("TS_UNACCEPTABLE")
    assert step([UP_SA], rec, 302.0, responder).record.status is Status.UP


def _sa(i: str, r: str, i_id: tuple[int, str] = (0, ""), r_id: tuple[int, str] = (0, ""),
        state: str = "AUTHENTICATED") -> SaInfo:
    return SaInfo(sa_index=0, state=state, ispi=1, rspi=2, iaddr=IPv4Address(i),
                  raddr=IPv4Address(r), i_id=i_id, r_id=r_id, children=1)


def test_sas_are_matched_to_tunnels_by_addresses_in_either_role_and_ids() -> None:
    ep7 = Endpoints(IPv4Address("192.0.2.1"), IPv4Address("203.0.113.10"),
                    (2, "edge.example"), (2, "gw.example"))
    ep8 = Endpoints(IPv4Address("192.0.2.1"), IPv4Address("203.0.113.20"),
                    (2, "edge.example"), (2, "gw2.example"))
    sas = [_sa("192.0.2.1", "203.0.113.10"),  # we initiated (tunnel 7)
           _sa("203.0.113.20", "192.0.2.1", state="SA_INIT"),  # the peer initiated (8)
           _sa("198.51.100.9", "192.0.2.1", state="SA_INIT")]  # a scanner: nobody's
    got = match_sas(sas, {7: ep7, 8: ep8})
    assert [v.state for v in got[7]] == ["AUTHENTICATED"]
    assert [v.state for v in got[8]] == ["SA_INIT"]
    assert set(got) == {7, 8}
    twin = Endpoints(ep7.src, ep7.dst, (2, "other.example"), (2, "gw.example"))
    got = match_sas([_sa("192.0.2.1", "203.0.113.10", (2, "other.example"), (2, "gw.example"))],
                    {7: ep7, 9: twin})
    assert set(got) == {9}


def test_a_retry_keeps_naming_the_failure_while_it_is_in_progress() -> None:
    rec = initiated(Record(), 0.0)
    failed = step([SaView(1, 2, "AUTH_FAILED")], rec, 1.0, POLICY)
    assert failed.action is Action.RESTART
    rec = initiated(failed.record, 1.0)
    s = step([SaView(3, 4, "SA_INIT")], rec, 2.0, POLICY)
    assert s.record.status is Status.DOWN
    assert s.record.reason.startswith("AUTH_FAILED") and "IKE_AUTH in progress" in s.record.reason


def test_an_ike_auth_that_never_completes_fails_the_negotiation_as_a_whole() -> None:
    """VPP re-initiates every 2 s while the peer drops its IKE_AUTH: each SA is fresh,
    the negotiation is not. After `sa_init_timeout` it is down, and restarted."""
    rec = initiated(Record(), 0.0)
    for t in range(0, 30, 2):  # a new SA_INIT SA at every manager tick
        s = step([SaView(ispi=100 + t, rspi=200 + t, state="SA_INIT")], rec, float(t), POLICY)
        assert s.action is Action.NONE and "IKE_AUTH in progress" in s.record.reason
        rec = s.record
    s = step([SaView(ispi=130, rspi=230, state="SA_INIT")], rec, 30.0, POLICY)
    assert s.action is Action.RESTART and s.record.status is Status.DOWN
    assert s.record.reason.startswith("IKE_AUTH unanswered for 30 s"), s.record.reason
    ecp = Policy(role="initiator", dst="203.0.113.10", ike_ecp=True)
    s = step([SaView(ispi=130, rspi=230, state="SA_INIT")], rec, 30.0, ecp)
    assert s.action is Action.RESTART and s.record.reason == ECP_REASON
    # one SA left waiting past VPP's own retry: the ECP reason too, not the ESP one
    pending = [SaView(ispi=7, rspi=8, state="SA_INIT")]
    first = step(pending, initiated(Record(), 0.0), 1.0, ecp)
    assert step(pending, first.record, 3.6, ecp).record.reason == ECP_REASON


def test_a_tunnel_left_admin_down_under_its_sa_is_renegotiated_not_set_up() -> None:
    """VPP sets the tunnel down while it removes a child SA (one poll). Still down at
    the next poll, someone set it down by hand: a new negotiation, whose child SA
    brings it up with its protection, is the only safe way back up."""
    first = step([UP_SA], initiated(Record(), 0.0), 1.0, POLICY, admin_up=False)
    assert first.action is Action.NONE and first.record.status is Status.DOWN
    second = step([UP_SA], first.record, 3.0, POLICY, admin_up=False)
    assert second.action is Action.RESTART and second.record.reason == first.record.reason
