"""Pure translation: spec -> VPP operations with undos."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.peers.spec import TrafficSelector
from agent.secret import Secret
from agent.vpp.plan import (
    CapabilityError,
    Ref,
    VppFacts,
    check_capabilities,
    child_sa_lifetime,
    covering_prefixes,
    inverse,
    plan_add,
    plan_add_ops,
    plan_remove,
    plan_routes,
    resolve,
)
from tests.spec_factory import TEST_PSK, example_spec

FACTS = VppFacts(wan_sw_if_index=1)


def test_example_becomes_the_expected_ordered_operations() -> None:
    plan = plan_add(example_spec(), FACTS)
    assert [op.message for op in plan.ops] == [
        "ipip_add_tunnel",
        "sw_interface_set_mtu",
        # no admin-up: VPP's IKE sets the tunnel up with its child SA (and protection)
        "sw_interface_add_del_address",
        "mss_clamp_enable_disable",
        "lcp_itf_pair_add_del_v2",
        "ikev2_profile_add_del",
        "ikev2_profile_set_auth",
        "ikev2_profile_set_id",
        "ikev2_profile_set_id",
        "ikev2_profile_set_ts",
        "ikev2_profile_set_ts",
        "ikev2_set_ike_transforms",
        "ikev2_set_esp_transforms",
        "ikev2_set_sa_lifetime",
        "ikev2_set_tunnel_interface",
        "ikev2_set_responder",
        "ikev2_initiate_sa_init",
        "ip_route_add_del",
    ]
    by = {(op.message, i): op for i, op in enumerate(plan.ops)}
    tunnel = plan.ops[0]
    assert tunnel.args["tunnel"]["instance"] == 7
    assert tunnel.args["tunnel"]["src"] == IPv4Address("192.168.1.10")
    assert tunnel.args["tunnel"]["dst"] == IPv4Address("203.0.113.10")
    assert tunnel.produces == "tun:7"
    assert plan.ops[1].args["mtu"] == [1500, 0, 0, 0]
    assert str(plan.ops[2].args["prefix"]) == "10.100.0.16/31"
    assert plan.ops[3].args["ipv4_mss"] == 1310
    local_id, remote_id = plan.ops[7].args, plan.ops[8].args
    assert (local_id["is_local"], local_id["id_type"], local_id["data"]) == (
        True, 1, bytes([198, 51, 100, 7]))
    assert local_id["data_len"] == 4
    assert (remote_id["is_local"], remote_id["id_type"], remote_id["data"]) == (
        False, 2, b"gw.cloud.example")
    assert plan.ops[11].args["tr"] == {"crypto_alg": 12, "crypto_key_size": 256,
                                      "integ_alg": 12, "prf_alg": 5, "dh_group": 14}
    assert plan.ops[12].args["tr"] == {"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12}
    # VPP rekeys at lifetime + random(jitter) and retries every handover: both before 3600 s
    lt = plan.ops[13].args
    assert (lt["lifetime"], lt["lifetime_jitter"], lt["handover"]) == (3240, 300, 60)
    assert lt["lifetime"] + lt["lifetime_jitter"] + lt["handover"] <= 3600
    assert plan.ops[14].args["sw_if_index"] == Ref("tun:7")
    assert plan.ops[15].args["responder"] == {"sw_if_index": 1,
                                              "addr": IPv4Address("203.0.113.10")}
    route = plan.ops[17].args["route"]
    assert route["prefix"] == IPv4Network("8.8.8.8/32")
    assert route["paths"][0]["sw_if_index"] == Ref("tun:7")
    assert by  # every op has a human description naming the tunnel
    assert all(op.what.startswith("tunnel 7: ") for op in plan.ops)


def test_psk_travels_as_secret_and_never_in_reprs() -> None:
    plan = plan_add(example_spec(), FACTS)
    auth = plan.ops[6]
    assert isinstance(auth.args["data"], Secret)
    assert auth.args["data_len"] == len(TEST_PSK)
    assert TEST_PSK not in repr(plan)
    assert resolve(auth.args, {})["data"] == TEST_PSK.encode()


def test_responder_role_does_not_initiate() -> None:
    plan = plan_add(example_spec(role="responder"), FACTS)
    assert "ikev2_initiate_sa_init" not in [op.message for op in plan.ops]


def test_optional_parts_follow_spec_and_vpp() -> None:
    spec = example_spec(mtu=None, tcp_mss_clamp=None, monitor_ips=())
    plan = plan_add(spec, VppFacts(1, has_lcp=False))
    messages = [op.message for op in plan.ops]
    for absent in ("sw_interface_set_mtu", "mss_clamp_enable_disable",
                   "lcp_itf_pair_add_del_v2", "ip_route_add_del"):
        assert absent not in messages


def test_policy_based_routes_the_remote_selector_with_fewest_prefixes() -> None:
    remote = TrafficSelector(0, 0, 65535, IPv4Address("10.1.0.0"), IPv4Address("10.1.2.255"))
    plan = plan_add(example_spec(remote_ts=remote, monitor_ips=()), FACTS)
    routes = [op.args["route"]["prefix"] for op in plan.ops if op.message == "ip_route_add_del"]
    assert routes == [IPv4Network("10.1.0.0/23"), IPv4Network("10.1.2.0/24")]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("10.0.0.0", "10.0.0.255", ["10.0.0.0/24"]),
        ("10.0.0.1", "10.0.0.6", ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]),
        ("0.0.0.0", "255.255.255.255", ["0.0.0.0/0"]),
        ("192.0.2.7", "192.0.2.7", ["192.0.2.7/32"]),
    ],
)
def test_covering_prefixes_are_exact(start: str, end: str, expected: list[str]) -> None:
    nets = covering_prefixes(IPv4Address(start), IPv4Address(end))
    assert [str(n) for n in nets] == expected
    covered = sum(n.num_addresses for n in nets)
    assert covered == int(IPv4Address(end)) - int(IPv4Address(start)) + 1


def test_pfs_is_refused_on_stock_vpp_and_used_when_patched() -> None:
    spec = example_spec(pfs=True, esp=replace(example_spec().esp, dh_group=14))
    with pytest.raises(CapabilityError, match="pfs is true.*ikev2_set_pfs"):
        plan_add(spec, FACTS)
    patched = VppFacts(1, optional_messages=frozenset({"ikev2_set_pfs", "ikev2_set_ike_lifetime"}))
    plan = plan_add(spec, patched)
    messages = [op.message for op in plan.ops]
    assert "ikev2_set_pfs" in messages and "ikev2_set_ike_lifetime" in messages
    assert plan.warnings == ()


def test_ike_lifetime_gap_is_a_warning_on_stock_vpp() -> None:
    plan = plan_add(example_spec(), FACTS)
    assert len(plan.warnings) == 1 and "IKE SA lifetime" in plan.warnings[0]


@pytest.mark.parametrize("group", [19, 20, 21, 25])
def test_an_ecp_ike_group_is_warned_about_with_the_reason(group: int) -> None:
    """VPP 26.06's ECP secret is x||y, a standard peer's x: the tunnel cannot come up
    with one (tests/lab/test_strongswan_lab.py shows it on real VPP)."""
    spec = example_spec(ike=replace(example_spec().ike, dh_group=group))
    warnings = plan_add(spec, FACTS).warnings
    assert any("ECP group" in w and "RFC 5903" in w and "modp-2048" in w for w in warnings)
    assert not any("ECP" in w for w in plan_add(example_spec(), FACTS).warnings)


def test_remove_is_the_exact_inverse_and_each_step_recreates_its_part() -> None:
    spec = example_spec()
    removal = plan_remove(spec, FACTS).ops
    assert [op.message for op in removal] == [
        "ip_route_add_del",
        "ikev2_profile_add_del",
        "lcp_itf_pair_add_del_v2",
        "mss_clamp_enable_disable",
        "sw_interface_add_del_address",
        "ipip_del_tunnel",
    ]
    assert removal[0].args["is_add"] is False
    assert removal[1].args == {"name": "peer-7", "is_add": False}
    # undoing the profile delete re-applies every profile setter (PSK, IDs, ...)
    assert [u.message for u in removal[1].undo][:2] == ["ikev2_profile_add_del",
                                                        "ikev2_profile_set_auth"]
    assert removal[1].undo[-1].message == "ikev2_initiate_sa_init"
    # undoing the tunnel delete re-creates it with its MTU
    assert [u.message for u in removal[-1].undo] == ["ipip_add_tunnel", "sw_interface_set_mtu"]
    # applying add then remove touches each added object once
    added = plan_add_ops(spec, FACTS)
    assert len(inverse(added)) == sum(1 for op in added if op.undo)


def test_route_changes_touch_only_the_difference() -> None:
    a, b, c = ((IPv4Network(f"10.9.0.{i}/32"), 0) for i in (1, 2, 3))
    plan = plan_routes(7, [a, b], [b, c])
    assert [(op.args["is_add"], op.args["route"]["prefix"]) for op in plan.ops] == [
        (False, a[0]), (True, c[0])]
    assert plan_routes(7, [a], [a]).ops == ()


def test_a_new_preference_removes_the_path_then_adds_it_and_undo_restores_the_old() -> None:
    net = IPv4Network("10.50.0.0/16")
    ops = plan_routes(7, [(net, 0)], [(net, 1)]).ops
    steps = [(op.args["is_add"], op.args["route"]["paths"][0]["preference"]) for op in ops]
    assert steps == [(False, 0), (True, 1)]  # VPP's add alone would keep preference 0
    assert [(u.args["is_add"], u.args["route"]["paths"][0]["preference"])
            for op in ops for u in op.undo] == [(True, 0), (False, 1)]
    assert ops[1].what == "tunnel 7: add route 10.50.0.0/16 preference 1"


def test_resolve_replaces_refs_and_reports_missing_ones() -> None:
    assert resolve({"x": [Ref("tun:1")], "y": 3}, {"tun:1": 9}) == {"x": [9], "y": 3}
    with pytest.raises(KeyError, match="tun:2"):
        resolve({"x": Ref("tun:2")}, {})


def test_resolve_copies_what_holds_a_ref_and_shares_the_rest() -> None:
    """A plan's args are shared by retries and undo: never changed in place; the parts
    without a Ref or Secret are handed over as they are."""
    stack = [{}] * 16
    paths = [{"sw_if_index": Ref("tun:1"), "label_stack": stack}]
    args = {"route": {"paths": paths, "prefix": "10.0.0.0/8"}, "tr": {"a": 1}}
    out = resolve(args, {"tun:1": 9})
    assert out == {"route": {"paths": [{"sw_if_index": 9, "label_stack": stack}],
                             "prefix": "10.0.0.0/8"}, "tr": {"a": 1}}
    assert paths[0]["sw_if_index"] == Ref("tun:1")  # the plan is untouched
    assert out["route"]["paths"][0]["label_stack"] is stack and out["tr"] is args["tr"]
    plain = {"name": "p", "ts": {"start_port": 0}}
    assert resolve(plain, {}) is plain


def test_every_rekey_is_scheduled_before_the_configured_lifetime() -> None:
    for configured in (300, 301, 900, 3600, 28800, 86400):
        lifetime, jitter, handover = child_sa_lifetime(configured)
        assert lifetime > 0 and handover >= 1
        assert lifetime + jitter + handover <= configured, configured


def test_a_responder_is_told_what_vpp_leaves_to_the_peer() -> None:
    spec = example_spec(role="responder", pfs=True, esp=replace(example_spec().esp, dh_group=14))
    warnings = check_capabilities(spec, FACTS)  # PFS is the peer's to propose: not refused
    assert any("accepts any proposal it implements" in w and "never rekeys" in w
               for w in warnings)
    assert any("PFS happens only if the peer proposes" in w for w in warnings)
    ops = [op.message for op in plan_add_ops(spec, FACTS)]
    assert "ikev2_initiate_sa_init" not in ops
