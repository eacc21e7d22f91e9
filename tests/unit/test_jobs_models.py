"""Controller job models and their normalization into PeerSpec and the manager's changes."""

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
    JobNotSupported,
    JobRejected,
    ValidationPolicy,
    normalize_add_tunnel,
    normalize_modify_tunnel,
    normalize_remove_tunnel,
)
from agent.peers.changes import ModifyTargets, RemovePeer
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
        ospf_cost="100",
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
    # in a job whose requests share the weak choice, every tunnel is logged
    shared: dict[Any, Any] = {}
    with capture_logs() as logs:
        for tid in (8, 9):
            normalize_add_tunnel(params() | {"tunnel-id": tid}, WEAK_OK, shared=shared)
    assert [(e["tunnel_id"], e["fields"]) for e in logs
            if e["event"] == "weak_crypto_accepted_by_policy"] == [
        (8, ["ikev2.ike.dh-group", "ikev2.esp.dh-group"]),
        (9, ["ikev2.ike.dh-group", "ikev2.esp.dh-group"])]


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


def test_ike_null_encryption_is_refused_even_with_weak_policy() -> None:
    """RFC 7296 does not allow ENCR_NULL for IKE, and VPP 26.06 would divide by its
    block size of 0 when padding an IKE_AUTH."""
    with pytest.raises(JobRejected, match="null is for ESP only, not IKE"):
        transforms({"crypto-alg": "null"}, {}, policy=WEAK_OK)


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
        "peer.mtu: 100: out of range; allowed: 500-9000"
        " | ikev2.role: 'boss': unknown role; allowed: initiator, responder"
        " | ikev2.ike_lifetime: 1: out of range; allowed: 300-604800 seconds"
    )
    assert (exc.field, exc.value, exc.allowed) == ("peer.mtu", "100", "500-9000")


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
        pytest.param(lambda p: p["ikev2"].update(psk=PSK + "\u0007"), id="psk-control-char"),
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
    assert normalize_remove_tunnel({"tunnel-id": tunnel_id, "extra": 1}) == RemovePeer(7)


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
    assert request == ModifyTargets(
        7, (IPv4Address("1.1.1.1"), IPv4Address("9.9.9.9")), ("probe.example.net",)
    )
    # a list the REST caller left out is absent: None keeps the stored value
    assert normalize_modify_tunnel({"tunnel-id": 7, "peer": {}}) == ModifyTargets(7, None, None)
    assert normalize_modify_tunnel({"tunnel-id": 7, "peer": {"urls": []}}) == ModifyTargets(
        7, None, ())


def test_modify_tunnel_with_thresholds_and_no_peer() -> None:
    """flexiManage's second modify-tunnel shape (per-tunnel alert thresholds)."""
    settings = {"Link/Tunnel round trip time": {"warningThreshold": 300,
                                                "criticalThreshold": 600, "thresholdUnit": "ms"},
                "Link/Tunnel default drop rate": {"warningThreshold": 5.5,
                                                  "criticalThreshold": 20, "thresholdUnit": "%"}}
    request = normalize_modify_tunnel({"notificationsSettings": settings, "tunnel-id": 7})
    assert request == ModifyTargets(7, None, None) and request.empty


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
        normalize_modify_tunnel({"tunnel-id": 7, "notificationsSettings": {"x": 5}})
    assert info.value.message == (
        "notificationsSettings.x: a number: not an object; allowed: "
        "{warningThreshold, criticalThreshold, ...}")


# --- aggregated / sync-device ---------------------------------------------------------------


@pytest.mark.parametrize("peer, expected", [
    ({"mtu": 500, "tcp-mss-clamp": 310}, (500, 310, "100")),  # flexiManage's smallest
    ({"mtu": 1500, "tcp-mss-clamp": 1310, "ospf-cost": "10.5"}, (1500, 1310, "10.5")),
    ({"ospf-cost": "70000"}, (1500, 1310, "70000")),
    ({"ospf-cost": 100}, (1500, 1310, "100")),
])
def test_peer_values_flexiManage_sends_are_accepted(
        peer: dict[str, Any], expected: tuple[Any, ...]) -> None:
    params = example_request()["params"]
    params["peer"].update(peer)
    spec = normalize_add_tunnel(params, POLICY)
    assert (spec.mtu, spec.tcp_mss_clamp, spec.ospf_cost) == expected


def test_a_short_psk_is_a_policy_choice() -> None:
    params = example_request()["params"]
    params["ikev2"]["psk"] = "Sh0rt"
    with pytest.raises(JobRejected) as info:
        normalize_add_tunnel(params, POLICY)
    assert "[security] psk_min_length = 8" in info.value.message
    spec = normalize_add_tunnel(params, ValidationPolicy(psk_min_length=1))
    assert spec.psk.reveal() == "Sh0rt"
