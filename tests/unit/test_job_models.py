"""Controller job models and their normalization into PeerSpec and request objects."""

from __future__ import annotations

import copy
import traceback
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from agent.jobs.models import AddTunnelParams
from agent.jobs.validation import (
    AddRequest,
    JobNotSupported,
    JobRejected,
    ModifyRequest,
    RemoveRequest,
    ValidationPolicy,
    normalize_add_tunnel,
    normalize_aggregated,
    normalize_modify_tunnel,
    normalize_remove_tunnel,
    normalize_sync_device,
)
from agent.peers.spec import (
    FULL_END,
    FULL_START,
    EspTransforms,
    Identity,
    IdType,
    IkeTransforms,
    PeerSpec,
    TrafficSelector,
)
from agent.secret import Secret
from tests.fixtures import example_request

POLICY = ValidationPolicy()
WEAK_OK = ValidationPolicy(allow_weak_crypto=True)
FULL_TS = TrafficSelector(0, 0, 65535, FULL_START, FULL_END)
NOT_INT = "not an integer; allowed: an integer (JSON number or string of digits)"


def example_params(**ikev2: Any) -> dict[str, Any]:
    params: dict[str, Any] = example_request()["params"]
    params["ikev2"].update(ikev2)
    return params


def with_psk(params: dict[str, Any], psk: Any) -> dict[str, Any]:
    params["ikev2"]["psk"] = psk
    return params


def rejection(params: Any, policy: ValidationPolicy = POLICY) -> JobRejected:
    with pytest.raises(JobRejected) as info:
        normalize_add_tunnel(params, policy)
    return info.value


# --- the document's example ------------------------------------------------------


def test_document_example_normalizes_to_the_expected_spec() -> None:
    request = example_request()
    assert (request["entity"], request["message"]) == ("agent", "add-tunnel")
    spec = normalize_add_tunnel(request["params"], POLICY)
    expected = PeerSpec(
        tunnel_id=7,
        dev_id="pci:0000:00:03.00",
        src=IPv4Address("192.168.1.10"),
        dst=IPv4Address("203.0.113.10"),
        addr=IPv4Interface("10.100.0.16/31"),
        role="initiator",
        psk=Secret("S3cr3tPSK"),
        local_id=Identity(IdType.IP4_ADDR, "198.51.100.7"),
        remote_id=Identity(IdType.FQDN, "gw.cloud.example"),
        # aes-cbc 256 / hmac-sha2-256-128 -> PRF hmac-sha2-256 / modp-2048
        ike=IkeTransforms(crypto_alg=12, crypto_key_size=256, integ_alg=12, prf_alg=5, dh_group=14),
        esp=EspTransforms(crypto_alg=12, crypto_key_size=256, integ_alg=12, dh_group=0),
        local_ts=FULL_TS,
        remote_ts=FULL_TS,
        child_lifetime=3600,
        ike_lifetime=86400,
        pfs=False,
        mtu=1500,
        tcp_mss_clamp=1310,
        routing="ospf",
        ospf_cost=100,
        ospf_area=None,
        labels=(),
        monitor_ips=(IPv4Address("8.8.8.8"),),
        monitor_urls=("monitoring.example.com",),
        udp_encap=False,
    )
    assert spec == expected  # dataclass equality compares every field
    assert spec.psk.reveal() == "S3cr3tPSK"
    assert spec.route_based
    assert spec.peer_inner_addr == IPv4Address("10.100.0.17")
    assert spec.profile_name == "peer-7"


def test_normalization_does_not_modify_the_params() -> None:
    params = example_params()
    before = copy.deepcopy(params)
    normalize_add_tunnel(params, POLICY)
    assert params == before


def test_numeric_strings_and_numbers_are_both_accepted_for_integers() -> None:
    params = example_params()
    params["tunnel-id"] = "42"
    params["peer"]["mtu"] = "1400"
    params["ikev2"]["lifetime"] = "7200"
    params["ikev2"]["ike"]["key-size"] = "128"
    params["ikev2"]["local-ts"]["start-port"] = 0
    params["ikev2"]["local-ts"]["end-port"] = 65535
    spec = normalize_add_tunnel(params, POLICY)
    assert (spec.tunnel_id, spec.mtu, spec.child_lifetime) == (42, 1400, 7200)
    assert spec.ike.crypto_key_size == 128
    assert spec.local_ts.is_full


def test_unknown_fields_are_ignored_at_every_level() -> None:
    params = example_params()
    params["dstPort"] = "4789"
    params["notificationsSettings"] = {"rtt": {"warning": 300}}
    params["peer"]["name"] = "cloud-1"
    params["ikev2"]["certificate"] = None
    params["ikev2"]["ike"]["prf-alg"] = "whatever"
    params["ikev2"]["local-ts"]["comment"] = 5
    assert normalize_add_tunnel(params, POLICY) == normalize_add_tunnel(example_params(), POLICY)


def test_optional_fields_default_like_the_controller() -> None:
    params = example_params()
    for key in ("routing", "mtu", "tcp-mss-clamp", "ospf-cost", "multilink", "urls", "ips"):
        del params["peer"][key]
    for key in ("lifetime", "ike_lifetime", "pfs", "local-ts", "remote-ts"):
        del params["ikev2"][key]
    del params["srcPort"]
    spec = normalize_add_tunnel(params, POLICY)
    assert (spec.routing, spec.mtu, spec.tcp_mss_clamp, spec.ospf_cost) == (
        "ospf",
        None,
        None,
        None,
    )
    assert (spec.child_lifetime, spec.ike_lifetime, spec.pfs) == (3600, 86400, False)
    assert spec.local_ts == FULL_TS and spec.remote_ts == FULL_TS
    assert spec.monitor_ips == () and spec.monitor_urls == () and spec.labels == ()


def test_peer_options_are_normalized() -> None:
    params = example_params()
    params["peer"].update(
        {
            "routing": "bgp",
            "ospf-area": 0,
            "multilink": {"labels": ["5f3e1b2c9d8a7b6c5d4e3f21"]},
            "ips": ["8.8.8.8", "10.100.0.17", "8.8.8.8"],
            "urls": ["Monitoring.Example.com", "monitoring.example.com", "probe"],
        }
    )
    spec = normalize_add_tunnel(params, POLICY)
    assert spec.routing == "bgp"
    assert spec.ospf_area == "0"
    assert spec.labels == ("5f3e1b2c9d8a7b6c5d4e3f21",)
    assert spec.monitor_ips == (IPv4Address("8.8.8.8"), IPv4Address("10.100.0.17"))
    assert spec.monitor_urls == ("monitoring.example.com", "probe")
    params["peer"]["ospf-area"] = "0.0.0.1"
    assert normalize_add_tunnel(params, POLICY).ospf_area == "0.0.0.1"


def test_policy_based_selectors_are_kept() -> None:
    params = example_params()
    params["ikev2"]["local-ts"] = {
        "protocol": "tcp",
        "start-port": "443",
        "end-port": "443",
        "start-addr": "192.168.10.0",
        "end-addr": "192.168.10.255",
    }
    params["ikev2"]["remote-ts"]["protocol"] = "udp"
    spec = normalize_add_tunnel(params, POLICY)
    assert spec.local_ts == TrafficSelector(
        6, 443, 443, IPv4Address("192.168.10.0"), IPv4Address("192.168.10.255")
    )
    assert spec.remote_ts.protocol == 17
    assert not spec.route_based


# --- identities -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_type", "value", "expected"),
    [
        ("fqdn", "gw", Identity(IdType.FQDN, "gw")),
        ("fqdn", "a-1.B-2.example", Identity(IdType.FQDN, "a-1.B-2.example")),
        ("rfc822", "t.1+x@edge.example.com", Identity(IdType.RFC822, "t.1+x@edge.example.com")),
        ("email", "t@example.com", Identity(IdType.RFC822, "t@example.com")),
        ("ip4-addr", "203.0.113.10", Identity(IdType.IP4_ADDR, "203.0.113.10")),
    ],
)
def test_identities_by_type(id_type: str, value: str, expected: Identity) -> None:
    params = example_params(**{"remote-device-id-type": id_type, "remote-device-id": value})
    assert normalize_add_tunnel(params, POLICY).remote_id == expected


# --- crypto -----------------------------------------------------------------------


def transforms(ike: dict[str, Any], esp: dict[str, Any], **ikev2: Any) -> PeerSpec:
    params = example_params(**ikev2)
    params["ikev2"]["ike"].update(ike)
    params["ikev2"]["esp"].update(esp)
    return normalize_add_tunnel(params, ikev2.pop("policy", POLICY))


def test_aead_ike_without_integrity_uses_prf_sha2_256() -> None:
    spec = transforms(
        {"crypto-alg": "aes-gcm-16", "integ-alg": "none", "key-size": 128},
        {"crypto-alg": "aes-gcm-16", "integ-alg": "none", "key-size": 256},
    )
    assert spec.ike == IkeTransforms(20, 128, 0, 5, 14)
    assert spec.esp == EspTransforms(20, 256, 0, 0)


@pytest.mark.parametrize(
    ("integ", "prf"),
    [("sha1-96", 2), ("hmac-sha2-256-128", 5), ("hmac-sha2-384-192", 6), ("hmac-sha2-512-256", 7)],
)
def test_aead_ike_with_an_hmac_takes_it_as_prf_and_no_integrity(integ: str, prf: int) -> None:
    spec = transforms({"crypto-alg": "aes-gcm-16", "integ-alg": integ}, {})
    assert (spec.ike.integ_alg, spec.ike.prf_alg) == (0, prf)


@pytest.mark.parametrize(
    ("integ", "iana", "prf"),
    [("sha1-96", 2, 2), ("hmac-sha2-384-192", 13, 6), ("hmac-sha2-512-256", 14, 7)],
)
def test_non_aead_ike_prf_follows_integrity(integ: str, iana: int, prf: int) -> None:
    spec = transforms({"integ-alg": integ}, {})
    assert (spec.ike.integ_alg, spec.ike.prf_alg) == (iana, prf)


def test_esp_null_with_gmac_and_chacha() -> None:
    spec = transforms(
        {"crypto-alg": "chacha20-poly1305", "integ-alg": "none", "dh-group": "ecp-384"},
        {"crypto-alg": "null", "integ-alg": "aes-256-gmac", "key-size": 256},
    )
    assert spec.ike == IkeTransforms(28, 256, 0, 5, 20)
    assert spec.esp == EspTransforms(11, 0, 11, 0)  # NULL has no key


def test_esp_aes_ctr_is_allowed() -> None:
    assert transforms({}, {"crypto-alg": "aes-ctr", "key-size": 192}).esp == EspTransforms(
        13, 192, 12, 0
    )


def test_legacy_and_alias_names() -> None:
    spec = transforms(
        {"crypto-alg": "AES-GCM-16-ICV", "integ-alg": "none", "dh-group": "ECP-256"},
        {"crypto-alg": "aes-cbc-128", "integ-alg": "sha-256-128", "key-size": None},
    )
    assert spec.ike == IkeTransforms(20, 256, 0, 5, 19)
    assert spec.esp == EspTransforms(12, 128, 12, 0)


def test_pfs_with_empty_esp_group_uses_the_ike_group() -> None:
    spec = transforms({"dh-group": "ecp-256"}, {"dh-group": ""}, pfs=True)
    assert spec.pfs and spec.esp.dh_group == 19 == spec.ike.dh_group


def test_pfs_with_an_explicit_esp_group() -> None:
    spec = transforms({}, {"dh-group": "modp-3072"}, pfs=True)
    assert (spec.ike.dh_group, spec.esp.dh_group) == (14, 15)


def test_weak_crypto_is_accepted_only_by_policy_and_logged() -> None:
    def params() -> dict[str, Any]:
        p = example_params()
        p["ikev2"]["ike"].update({"integ-alg": "sha1-96", "dh-group": "modp-1024"})
        p["ikev2"]["esp"].update({"crypto-alg": "aes-cbc", "integ-alg": "sha1-96",
                                  "dh-group": "modp-1536"})
        p["ikev2"]["pfs"] = True
        return p

    exc = rejection(params())
    assert [p.field for p in exc.problems] == ["ikev2.ike.dh-group", "ikev2.esp.dh-group"]
    with capture_logs() as logs:
        spec = normalize_add_tunnel(params(), WEAK_OK)
    assert (spec.ike.dh_group, spec.esp.dh_group) == (2, 5)
    weak = [entry for entry in logs if entry["event"] == "weak_crypto_accepted_by_policy"]
    assert weak and weak[0]["log_level"] == "warning" and weak[0]["tunnel_id"] == 7
    assert weak[0]["fields"] == ["ikev2.ike.dh-group", "ikev2.esp.dh-group"]


def test_what_vpp_does_not_implement_is_refused_even_with_the_weak_policy() -> None:
    p = example_params()
    p["ikev2"]["ike"].update({"crypto-alg": "3des", "integ-alg": "md5-96"})
    p["ikev2"]["esp"].update({"crypto-alg": "des"})
    exc = rejection(p, WEAK_OK)
    assert [(q.field, q.value) for q in exc.problems] == [
        ("ikev2.ike.crypto-alg", "'3des'"), ("ikev2.ike.integ-alg", "'md5-96'"),
        ("ikev2.esp.crypto-alg", "'des'")]
    assert all("not implemented by VPP 26.06" in q.reason for q in exc.problems)
    assert all("3des" not in q.allowed and "md5-96" not in q.allowed for q in exc.problems)


def test_weak_policy_lists_weak_choices_as_allowed() -> None:
    params = example_params()
    params["ikev2"]["ike"]["dh-group"] = "modp-999"
    assert "modp-768" not in rejection(params).allowed
    assert "modp-768, modp-1024, modp-1536" in rejection(params, WEAK_OK).allowed


def test_ike_null_encryption_with_weak_policy() -> None:
    spec = transforms({"crypto-alg": "null"}, {}, policy=WEAK_OK)
    assert (spec.ike.crypto_alg, spec.ike.crypto_key_size, spec.ike.integ_alg) == (11, 0, 12)


def test_lifetime_bounds_come_from_the_policy() -> None:
    policy = ValidationPolicy(child_lifetime_min=60, child_lifetime_max=1800, ike_lifetime_max=3600)
    assert (
        normalize_add_tunnel(example_params(lifetime=60, ike_lifetime=3600), policy).child_lifetime
        == 60
    )
    exc = rejection(example_params(), policy)
    assert exc.message == (
        "ikev2.lifetime: 3600: out of range; allowed: 60-1800 seconds"
        " | ikev2.ike_lifetime: 86400: out of range; allowed: 300-3600 seconds"
    )
    with pytest.raises(ValueError):
        ValidationPolicy(ike_lifetime_min=600, ike_lifetime_max=300)


# --- messages and structure of rejections -------------------------------------------


def test_all_problems_are_reported_together() -> None:
    params = example_params(role="boss", ike_lifetime=1)
    params["peer"]["mtu"] = 100
    exc = rejection(params)
    assert [p.field for p in exc.problems] == ["peer.mtu", "ikev2.role", "ikev2.ike_lifetime"]
    assert exc.message == (
        "peer.mtu: 100: out of range; allowed: 576-9000"
        " | ikev2.role: 'boss': unknown role; allowed: initiator, responder"
        " | ikev2.ike_lifetime: 1: out of range; allowed: 300-604800 seconds"
    )
    assert (exc.field, exc.value, exc.allowed) == ("peer.mtu", "100", "576-9000")


def test_long_problem_lists_are_capped() -> None:
    params = example_params()
    params["peer"]["ips"] = [f"10.0.0.{n}00" for n in range(3, 10)] + ["x"] * 5
    exc = rejection(params)
    assert len(exc.problems) == 12
    assert exc.message.endswith(" | and 2 more problem(s)")
    assert exc.message.count("peer.ips[") == 10


def test_add_tunnel_without_peer_is_not_supported() -> None:
    params = example_params()
    del params["peer"]
    with pytest.raises(JobNotSupported) as info:
        normalize_add_tunnel(params, POLICY)
    assert info.value.message == (
        "peer: (missing): add-tunnel without peer is not supported: this agent runs peer tunnels "
        "only; allowed: an add-tunnel with peer and ikev2"
    )


def test_params_must_be_an_object() -> None:
    assert rejection(["not", "an", "object"]).message == (
        "params: a list: not an object; allowed: a JSON object"
    )


def test_wrong_container_types_never_render_the_container() -> None:
    params = example_params()
    params["ikev2"]["ike"] = ["aes-cbc", "S3cr3tPSK"]
    params["peer"] = {"addr": {"ip": "10.100.0.16"}}
    exc = rejection(params)
    assert exc.message == (
        "peer.addr: an object: not a string; allowed: a string"
        " | ikev2.ike: a list: not an object; allowed: a JSON object"
    )


# --- the PSK never leaks ------------------------------------------------------------

PSK = "Top-Secret-Key-4711"


def all_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    if isinstance(exc, JobRejected):
        parts += [exc.message, exc.field, exc.value, exc.allowed]
        parts += [f"{p.field} {p.value} {p.reason} {p.allowed}" for p in exc.problems]
    return "\n".join(parts)


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(lambda p: p["ikev2"].update(psk=PSK + " x"), id="psk-with-space"),
        pytest.param(lambda p: p["ikev2"].update(psk=PSK + "\u00e9"), id="psk-non-ascii"),
        pytest.param(lambda p: p["ikev2"].update(psk=PSK * 60), id="psk-too-long"),
        pytest.param(lambda p: p["ikev2"].update(psk=[PSK]), id="psk-list"),
        pytest.param(lambda p: p["ikev2"].update(psk=47114711), id="psk-int"),
        pytest.param(lambda p: p["ikev2"].update(psk={"v": PSK}), id="psk-object"),
        pytest.param(lambda p: p["ikev2"].pop("role"), id="missing-sibling-field"),
        pytest.param(lambda p: p.update(ikev2=PSK), id="ikev2-is-the-psk"),
        pytest.param(
            lambda p: p["ikev2"].update({"remote-device-id": PSK + " @x"}), id="psk-pasted-into-id"
        ),
        pytest.param(lambda p: p["peer"].update(urls=[f"https://{PSK}"]), id="psk-pasted-into-url"),
    ],
)
def test_psk_never_appears_in_rejections(mutation: Any) -> None:
    params = with_psk(example_params(), PSK)
    mutation(params)
    exc = rejection(params)
    text = all_text(exc)
    for secret in (PSK, "47114711"):
        assert secret not in text
    # Raised outside the pydantic except block: no chained ValidationError holds the input.
    assert exc.__cause__ is None and exc.__context__ is None


def test_pydantic_errors_alone_do_not_show_the_psk() -> None:
    params = with_psk(example_params(), 47114711)
    params["tunnel-id"] = "x"
    with pytest.raises(ValidationError) as info:
        AddTunnelParams.model_validate(params)
    assert "47114711" not in str(info.value)


def test_model_holds_the_psk_as_secret() -> None:
    model = AddTunnelParams.model_validate(with_psk(example_params(), PSK))
    assert isinstance(model.ikev2.psk, Secret)
    assert PSK not in repr(model) and PSK not in str(model.model_dump())


def test_short_psk_is_accepted_with_a_warning_that_omits_it() -> None:
    with capture_logs() as logs:
        spec = normalize_add_tunnel(with_psk(example_params(), "Abcdef12!"), POLICY)
    assert spec.psk.reveal() == "Abcdef12!"
    warnings = [e for e in logs if e["event"] == "psk_shorter_than_recommended"]
    assert warnings == [
        {
            "event": "psk_shorter_than_recommended",
            "log_level": "warning",
            "tunnel_id": 7,
            "length": 9,
            "recommended_min": 20,
        }
    ]
    with capture_logs() as logs:
        normalize_add_tunnel(with_psk(example_params(), PSK + "-long"), POLICY)
    assert not [e for e in logs if e["event"] == "psk_shorter_than_recommended"]


# --- remove-tunnel / modify-tunnel -------------------------------------------------------


@pytest.mark.parametrize("tunnel_id", [7, "7"])
def test_remove_tunnel(tunnel_id: int | str) -> None:
    assert normalize_remove_tunnel({"tunnel-id": tunnel_id, "extra": 1}) == RemoveRequest(7)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "tunnel-id: (missing): required field; allowed: 1-65535"),
        ({"tunnel-id": "seven"}, f"tunnel-id: 'seven': {NOT_INT}"),
        ({"tunnel-id": -1}, "tunnel-id: -1: out of range; allowed: 1-65535"),
        ({"tunnel-id": None}, f"tunnel-id: null: {NOT_INT}"),
    ],
)
def test_remove_tunnel_rejections(params: dict[str, Any], message: str) -> None:
    with pytest.raises(JobRejected) as info:
        normalize_remove_tunnel(params)
    assert info.value.message == message


def test_modify_tunnel() -> None:
    request = normalize_modify_tunnel(
        {"tunnel-id": "7", "peer": {"ips": ["1.1.1.1", "9.9.9.9"], "urls": ["Probe.Example.net"]}}
    )
    assert request == ModifyRequest(
        7, (IPv4Address("1.1.1.1"), IPv4Address("9.9.9.9")), ("probe.example.net",)
    )
    assert normalize_modify_tunnel({"tunnel-id": 7, "peer": {}}) == ModifyRequest(7, (), ())


def test_modify_tunnel_rejections() -> None:
    with pytest.raises(JobRejected) as info:
        normalize_modify_tunnel(
            {"tunnel-id": 7, "peer": {"ips": ["1.1.1"], "urls": ["http://x.example"]}}
        )
    assert info.value.message == (
        "peer.ips[0]: '1.1.1': not an IPv4 address; allowed: a dotted-quad IPv4 address"
        " | peer.urls[0]: 'http://x.example': a URL, not a host name; allowed: a bare host name"
        " such as monitoring.example.com (no scheme, path or port)"
    )
    with pytest.raises(JobRejected) as info:
        normalize_modify_tunnel({"tunnel-id": 7})
    assert info.value.message == "peer: (missing): required field"


# --- aggregated / sync-device ---------------------------------------------------------------


def add_request(tunnel_id: int, last_octet: int, psk: str = PSK) -> dict[str, Any]:
    request = example_request()
    params = with_psk(request["params"], psk)
    params["tunnel-id"] = tunnel_id
    params["dst"] = f"203.0.113.{last_octet}"
    params["peer"]["addr"] = f"10.100.0.{2 * tunnel_id}/31"
    return request


def test_aggregated_with_nested_requests() -> None:
    params = {
        "requests": [
            {"entity": "agent", "message": "remove-tunnel", "params": {"tunnel-id": 7}},
            add_request(7, 20),
            {
                "entity": "agent",
                "message": "modify-tunnel",
                "params": {"tunnel-id": "9", "peer": {"ips": ["1.1.1.1"]}},
            },
        ]
    }
    out = normalize_aggregated(params, POLICY)
    assert out[0] == RemoveRequest(7)
    assert isinstance(out[1], AddRequest)
    assert (out[1].tunnel_id, out[1].spec.dst) == (7, IPv4Address("203.0.113.20"))
    assert out[2] == ModifyRequest(9, (IPv4Address("1.1.1.1"),), ())
    assert normalize_aggregated({"requests": []}, POLICY) == []


def test_aggregated_reports_every_bad_request_with_its_path() -> None:
    bad_psk = add_request(8, 21, psk="tiny")
    no_peer = add_request(9, 22)
    del no_peer["params"]["peer"]
    params = {
        "requests": [
            add_request(7, 20),
            bad_psk,
            {"entity": "agent", "message": "aggregated", "params": {"requests": []}},
            {"entity": "system", "message": "remove-tunnel", "params": {"tunnel-id": 7}},
            no_peer,
            {"entity": "agent", "message": "remove-tunnel", "params": {"tunnel-id": "x"}},
            add_request(7, 23),
        ]
    }
    with pytest.raises(JobRejected) as info:
        normalize_aggregated(params, POLICY)
    assert [str(p) for p in info.value.problems] == [
        "requests[1].params.ikev2.psk: 4 bytes: too short; allowed: 8-1024 printable ASCII "
        "characters without whitespace",
        "requests[2].message: 'aggregated': not supported in aggregated; "
        "allowed: add-tunnel, remove-tunnel, modify-tunnel",
        "requests[3].entity: 'system': unknown entity; allowed: agent",
        "requests[4].params.peer: (missing): add-tunnel without peer is not supported: this agent "
        "runs peer tunnels only; allowed: an add-tunnel with peer and ikev2",
        "requests[5].params.tunnel-id: 'x': not an integer; allowed: an integer (JSON number or "
        "string of digits)",
        "requests: tunnel-id 7: added twice in one job; allowed: one add-tunnel per tunnel-id",
    ]
    assert PSK not in all_text(info.value)


def test_aggregated_masks_a_psk_pasted_into_another_request() -> None:
    leaking = add_request(8, 21)
    leaking["params"]["ikev2"]["remote-device-id"] = f"x {PSK}"
    with pytest.raises(JobRejected) as info:
        normalize_aggregated(
            {"requests": [add_request(7, 20, psk=PSK + "-other"), leaking]}, POLICY
        )
    assert info.value.field == "requests[1].params.ikev2.remote-device-id"
    assert PSK not in all_text(info.value)


def test_aggregated_shape_errors() -> None:
    with pytest.raises(JobRejected) as info:
        normalize_aggregated({"requests": [{"entity": "agent"}, "add-tunnel"]}, POLICY)
    assert info.value.message == (
        "requests[0].message: (missing): required field; allowed: add-tunnel, remove-tunnel, "
        "modify-tunnel | requests[1]: a string: not an object; allowed: a JSON object"
    )


def test_sync_device_returns_the_desired_specs() -> None:
    specs = normalize_sync_device({"requests": [add_request(7, 20), add_request(8, 21)]}, POLICY)
    assert [(s.tunnel_id, str(s.dst), str(s.addr)) for s in specs] == [
        (7, "203.0.113.20", "10.100.0.14/31"),
        (8, "203.0.113.21", "10.100.0.16/31"),
    ]
    assert normalize_sync_device({"requests": []}, POLICY) == []


def test_sync_device_rejections() -> None:
    params = {
        "requests": [
            add_request(7, 20),
            {"entity": "agent", "message": "remove-tunnel", "params": {"tunnel-id": 3}},
            add_request(7, 21),
        ]
    }
    with pytest.raises(JobRejected) as info:
        normalize_sync_device(params, POLICY)
    assert info.value.message == (
        "requests[1].message: 'remove-tunnel': not supported in sync-device; allowed: add-tunnel"
        " | requests: tunnel-id 7: added twice in one job; allowed: one add-tunnel per tunnel-id"
    )
    with pytest.raises(JobRejected) as info:
        normalize_sync_device({}, POLICY)
    assert info.value.message == (
        "requests: (missing): required field; allowed: a list of {entity, message, params}"
    )
