"""The lab's pure parts (no root needed): VPP profile -> strongSwan connection,
charon's failure lines -> VPP SA states, the delay responder's packets."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.lab.responder import checksum, echo_reply
from agent.lab.vppsim.ike_strongswan import (
    classify_failure,
    connection_for,
    initiated_uid,
    strongswan_conf,
)
from agent.lab.vppsim.main import parse_args
from agent.lab.vppsim.state import (
    AUTH_FAILED,
    NO_PROPOSAL_CHOSEN,
    TS_UNACCEPTABLE,
    Profile,
)

FULL = {"protocol_id": 0, "start_port": 0, "end_port": 65535,
        "start_addr": IPv4Address("0.0.0.0"), "end_addr": IPv4Address("255.255.255.255")}


def profile(**changes: Any) -> Profile:
    """A profile as the agent programs the protocol document's tunnel 7."""
    p = Profile(
        index=0, name="peer-7", auth_method=2, auth_data=b"S3cr3tPSK",
        loc_id=(1, IPv4Address("198.51.100.7").packed), rem_id=(2, b"gw.cloud.example"),
        loc_ts=dict(FULL), rem_ts=dict(FULL),
        responder_sw_if_index=1, responder_addr=IPv4Address("203.0.113.10"),
        ike={"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12, "prf_alg": 5,
             "dh_group": 14},
        esp={"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12},
        lifetime=3600, lifetime_jitter=300, handover=60,
    )
    for k, v in changes.items():
        setattr(p, k, v)
    return p


def test_the_documents_profile_becomes_the_same_connection() -> None:
    conn = connection_for(profile(), "192.0.2.10", dpd_delay=10)
    assert conn["local_addrs"] == ["192.0.2.10"] and conn["remote_addrs"] == ["203.0.113.10"]
    assert conn["proposals"] == ["aes256-sha256-prfsha256-modp2048"]
    assert conn["local"] == {"auth": "psk", "id": "198.51.100.7"}
    assert conn["remote"] == {"auth": "psk", "id": "fqdn:gw.cloud.example"}
    assert conn["encap"] == "no" and conn["dpd_delay"] == "10s"
    child = conn["children"]["peer-7"]
    assert child["esp_proposals"] == ["aes256-sha256"]  # no DH: no PFS, as VPP
    assert child["local_ts"] == ["0.0.0.0/0"] and child["remote_ts"] == ["0.0.0.0/0"]
    # VPP 26.06: rekey at lifetime + random(0..jitter); handover spaces the retries
    assert (child["life_time"], child["rekey_time"], child["rand_time"]) == ("4080", "3600", "300")
    assert child["start_action"] == "none"
    assert "S3cr3tPSK" not in repr(conn)  # the PSK travels separately (load-shared)


@pytest.mark.parametrize(("ike", "esp", "want_ike", "want_esp"), [
    ({"crypto_alg": 20, "crypto_key_size": 256, "integ_alg": 0, "prf_alg": 5, "dh_group": 19},
     {"crypto_alg": 20, "crypto_key_size": 128, "integ_alg": 0},
     "aes256gcm16-prfsha256-ecp256", "aes128gcm16"),
    ({"crypto_alg": 12, "crypto_key_size": 128, "integ_alg": 2, "prf_alg": 2, "dh_group": 14},
     {"crypto_alg": 12, "crypto_key_size": 128, "integ_alg": 2},
     "aes128-sha1-prfsha1-modp2048", "aes128-sha1"),
    ({"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 13, "prf_alg": 6, "dh_group": 20},
     {"crypto_alg": 13, "crypto_key_size": 256, "integ_alg": 14},
     "aes256-sha384-prfsha384-ecp384", "aes256ctr-sha512"),
])
def test_iana_transforms_map_to_strongswan_keywords(
        ike: dict[str, int], esp: dict[str, int], want_ike: str, want_esp: str) -> None:
    conn = connection_for(profile(ike=ike, esp=esp), "192.0.2.10")
    assert conn["proposals"] == [want_ike]
    assert conn["children"]["peer-7"]["esp_proposals"] == [want_esp]


def test_ids_selectors_and_encapsulation() -> None:
    narrowed = dict(FULL, protocol_id=6, start_port=443, end_port=443,
                    start_addr=IPv4Address("10.100.0.16"), end_addr=IPv4Address("10.100.0.17"))
    odd_range = dict(FULL, start_addr=IPv4Address("198.51.100.1"),
                     end_addr=IPv4Address("198.51.100.6"))
    conn = connection_for(profile(loc_id=(3, b"edge@branch.example"), loc_ts=narrowed,
                                  rem_ts=odd_range, udp_encap=True), "192.0.2.10")
    assert conn["local"]["id"] == "rfc822:edge@branch.example"
    assert conn["encap"] == "yes"
    child = conn["children"]["peer-7"]
    assert child["local_ts"] == ["10.100.0.16/31[6/443]"]
    # a range that is no prefix becomes the fewest prefixes covering exactly it
    assert child["remote_ts"] == ["198.51.100.1/32", "198.51.100.2/31", "198.51.100.4/31",
                                  "198.51.100.6/32"]


def test_a_transform_strongswan_cannot_name_is_refused() -> None:
    with pytest.raises(ValueError, match="encryption algorithm 99"):
        connection_for(profile(ike={"crypto_alg": 99, "crypto_key_size": 0, "integ_alg": 0,
                                    "prf_alg": 0, "dh_group": 14}), "192.0.2.10")


@pytest.mark.parametrize(("lines", "state"), [
    (["parsed IKE_AUTH response 1 [ N(AUTH_FAILED) ]",
      "received AUTHENTICATION_FAILED notify error"], AUTH_FAILED),
    (["received NO_PROPOSAL_CHOSEN notify error"], NO_PROPOSAL_CHOSEN),
    (["authentication of 'gw.cloud.example' with pre-shared key successful",
      "received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built"], NO_PROPOSAL_CHOSEN),
    (["received TS_UNACCEPTABLE notify, no CHILD_SA built"], TS_UNACCEPTABLE),
    (["authentication of 'gw.cloud.example' with pre-shared key failed"], AUTH_FAILED),
    (["constraint check failed: identity 'x' required"], AUTH_FAILED),
    (["giving up after 3 retransmits", "establishing CHILD_SA 'peer-7' failed"], None),
])
def test_charon_failures_map_to_vpp_states(lines: list[str], state: int | None) -> None:
    assert classify_failure(lines) == state


def test_a_successful_authentication_is_no_failure() -> None:
    assert classify_failure(["authentication of 'gw' with pre-shared key successful"]) is None


def test_the_private_strongswan_conf() -> None:
    conf = strongswan_conf(Path("/tmp/x/charon.vici"), Path("/tmp/x/charon.log"), 4242)
    assert "socket = unix:///tmp/x/charon.vici" in conf
    assert "path = /tmp/x/charon.log" in conf
    for plugin in ("kdf", "kernel-libipsec", "vici", "socket-default", "openssl"):
        assert f" {plugin} " in conf or f" {plugin}\n" in conf
    # routes of kernel-libipsec go to a table whose rule matches a mark nothing sets
    assert "routing_table = 4242" in conf and "fwmark = 0x1092" in conf
    assert "install_routes = no" in conf


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     IPv4Address("10.100.0.16").packed, IPv4Address("198.51.100.101").packed)
    return ip + icmp


def test_the_responder_answers_an_echo_request_exactly() -> None:
    reply = echo_reply(_echo_request(0x1234, 7, b"cookie-and-payload"))
    assert reply is not None
    data, dst = reply
    assert dst == "10.100.0.16"
    kind, code, _, ident, seq = struct.unpack("!BBHHH", data[:8])
    assert (kind, code, ident, seq, data[8:]) == (0, 0, 0x1234, 7, b"cookie-and-payload")
    assert checksum(data) == 0  # a valid checksum sums to zero


def test_the_responder_ignores_what_is_no_echo_request() -> None:
    packet = bytearray(_echo_request(1, 1, b"x"))
    packet[20] = 0  # an echo reply
    assert echo_reply(bytes(packet)) is None
    assert echo_reply(b"\x45" + b"\0" * 10) is None


def test_vppsim_offers_the_strongswan_backend() -> None:
    args = parse_args(["--socket", "/tmp/api.sock", "--ike", "strongswan"])
    assert args.ike == "strongswan"
    assert parse_args(["--socket", "/tmp/api.sock"]).ike == "model"
    with pytest.raises(SystemExit):
        parse_args(["--socket", "/tmp/api.sock", "--ike", "racoon"])


def test_the_initiated_ike_sa_is_read_from_charons_lines() -> None:
    lines = ["initiating IKE_SA peer-7[12] to 203.0.113.10", "IKE_SA peer-7[12] established"]
    assert initiated_uid("peer-7", lines) == "12"
    assert initiated_uid("peer-7", ["initiating IKE_SA peer-70[3] to 203.0.113.10"]) is None
    assert initiated_uid("peer-7", ["establishing CHILD_SA peer-7{4}"]) is None
