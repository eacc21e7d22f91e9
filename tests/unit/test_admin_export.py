"""Export of the remote end's configuration: exact swanctl.conf and parameter sheet."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from agent.admin.export import (
    ExportError,
    esp_proposal,
    ike_proposal,
    render_export,
    render_sheet,
    render_swanctl,
    swan_id,
    swan_ts,
)
from agent.peers.spec import EspTransforms, Identity, IdType, IkeTransforms, TrafficSelector
from agent.secret import Secret
from tests.spec_factory import TEST_PSK, example_spec

# The protocol document's add-tunnel, as the remote administrator must mirror it.
EXAMPLE_SWANCTL = """# swanctl.conf for the remote end of peering tunnel 7 (device profile peer-7).
# Mirrored from the device's configuration: the device's remote side is your local side.
# Install as /etc/swanctl/conf.d/peer-7.conf and load with: swanctl --load-all
connections {
    peer-7 {
        version = 2
        # The device sends IKE to 203.0.113.10; behind a NAT, use your own address or %any.
        local_addrs = 203.0.113.10
        # The device's WAN address. A NAT may be in between: then use the address its packets
        # arrive from (its public address) or %any; the IKE ID still authenticates it.
        # NOTE: 192.168.1.10 is a private address: the device is most likely behind NAT,
        # so set its public address (or %any) here.
        remote_addrs = 192.168.1.10
        proposals = aes256-sha256-modp2048
        rekey_time = 86400s
        # The device checks liveness every 10 s (3 retries) and answers yours.
        dpd_delay = 30s
        mobike = no
        # The device (VPP) cannot answer IKEv2 cookie requests: in strongswan.conf keep
        # charon.cookie_threshold_ip above the number of tunnels from its address.
        local {
            auth = psk
            id = fqdn:gw.cloud.example
        }
        remote {
            auth = psk
            id = 198.51.100.7
        }
        children {
            peer-7 {
                local_ts = 0.0.0.0/0
                remote_ts = 0.0.0.0/0
                esp_proposals = aes256-sha256
                # The device rekeys before 3600 s; rekeying later here avoids rekey collisions.
                rekey_time = 3960s
                mode = tunnel
                # Route-based: the SAs are bound to an XFRM interface so that the 0.0.0.0/0
                # selectors do not capture this host's own traffic. Create it with:
                #   ip link add xfrm7 type xfrm dev <WAN interface> if_id 7
                #   ip addr add 10.100.0.17/31 dev xfrm7 && ip link set xfrm7 up
                if_id_in = 7
                if_id_out = 7
                # The device initiates: you respond.
                start_action = none
                dpd_action = clear
            }
        }
    }
}

secrets {
    ike-peer7 {
        id = 198.51.100.7
        # The pre-shared key is not shown. As root on the device run
        #   peerctl peer export 7 --format swanctl --show-secrets
        # or get it from the device's operator over a secure channel.
        secret = "PASTE-THE-PRE-SHARED-KEY-HERE"
    }
}
"""

EXAMPLE_SHEET = """Peering tunnel 7: what the remote end must configure
====================================================
IKE version                IKEv2
Who initiates              the device initiates; your side responds
Your address               203.0.113.10 (where the device sends IKE and ESP)
Device address             192.168.1.10 (private: expect the public address of its NAT)
NAT traversal              standard (UDP 500, floating to 4500 when NAT is detected)
Authentication             pre-shared key
Pre-shared key             S3cr3tPSK-test-0123456789
Your local ID              gw.cloud.example (type fqdn)
Your remote ID             198.51.100.7 (type ip4-addr) (the device)
IKE encryption             aes-cbc 256-bit key
IKE integrity              hmac-sha2-256-128
IKE PRF                    hmac-sha2-256
IKE DH group               modp-2048 (group 14)
IKE SA lifetime            86400 s
IKE proposal (strongSwan)  aes256-sha256-modp2048
ESP encryption             aes-cbc 256-bit key
ESP integrity              hmac-sha2-256-128
PFS                        no (no DH group in the ESP proposal)
Child SA lifetime          3600 s
ESP proposal (strongSwan)  aes256-sha256
ESN                        no
Mode                       tunnel, route-based
Your local selector        0.0.0.0 - 255.255.255.255 (0.0.0.0/0), any protocol, ports 0-65535
Your remote selector       0.0.0.0 - 255.255.255.255 (0.0.0.0/0), any protocol, ports 0-65535
Inside address (yours)     10.100.0.17/31
Inside address (device)    10.100.0.16/31
Tunnel MTU                 1500
TCP MSS clamp (device)     1310
Routing                    ospf cost 100 over the inside addresses
Dead peer detection        the device checks every 10 s, 3 retries; enable DPD on your side
"""


def test_example_swanctl_is_exact_and_psk_is_a_placeholder() -> None:
    text = render_swanctl(example_spec())
    assert text == EXAMPLE_SWANCTL
    assert TEST_PSK not in text


def test_example_swanctl_with_secrets_differs_only_in_the_secret() -> None:
    text = render_swanctl(example_spec(), show_secrets=True)
    expected_tail = (
        "secrets {\n"
        "    ike-peer7 {\n"
        "        id = 198.51.100.7\n"
        f'        secret = "{TEST_PSK}"\n'
        "    }\n"
        "}\n"
    )
    assert text.endswith(expected_tail)
    head = EXAMPLE_SWANCTL[: EXAMPLE_SWANCTL.index("secrets {")]
    assert text == head + expected_tail


def test_example_sheet_is_exact() -> None:
    assert render_sheet(example_spec(), show_secrets=True) == EXAMPLE_SHEET


def test_sheet_without_secrets_hides_the_psk() -> None:
    text = render_sheet(example_spec())
    assert TEST_PSK not in text
    assert "Pre-shared key             (hidden; run `peerctl peer export 7 --format text " \
        "--show-secrets` as root on the device)\n" in text


@pytest.mark.parametrize(
    ("ike", "expected"),
    [
        (IkeTransforms(20, 256, 0, 5, 19), "aes256gcm16-prfsha256-ecp256"),
        (IkeTransforms(20, 128, 0, 6, 20), "aes128gcm16-prfsha384-ecp384"),
        (IkeTransforms(12, 128, 2, 2, 14), "aes128-sha1-modp2048"),
        (IkeTransforms(12, 256, 14, 7, 21), "aes256-sha512-ecp521"),
        # a PRF other than the one strongSwan would derive from the integrity algorithm
        (IkeTransforms(12, 256, 12, 6, 15), "aes256-sha256-prfsha384-modp3072"),
        (IkeTransforms(28, 256, 0, 5, 24), "chacha20poly1305-prfsha256-modp2048s256"),
        (IkeTransforms(3, 192, 2, 2, 2), "3des-sha1-modp1024"),
    ],
)
def test_ike_proposals_in_strongswan_syntax(ike: IkeTransforms, expected: str) -> None:
    assert ike_proposal(example_spec(ike=ike)) == expected


@pytest.mark.parametrize(
    ("esp", "pfs", "expected"),
    [
        (EspTransforms(12, 256, 12, 0), False, "aes256-sha256"),
        (EspTransforms(12, 256, 12, 14), True, "aes256-sha256-modp2048"),
        (EspTransforms(20, 256, 0, 0), False, "aes256gcm16"),
        (EspTransforms(20, 128, 0, 19), True, "aes128gcm16-ecp256"),
        (EspTransforms(13, 192, 13, 0), False, "aes192ctr-sha384"),
        (EspTransforms(11, 0, 9, 0), False, "aes128gmac"),
    ],
)
def test_esp_proposals_in_strongswan_syntax(esp: EspTransforms, pfs: bool, expected: str) -> None:
    assert esp_proposal(example_spec(esp=esp, pfs=pfs)) == expected


def test_pfs_appears_in_swanctl_and_sheet() -> None:
    spec = example_spec(esp=EspTransforms(12, 256, 12, 14), pfs=True)
    assert "                esp_proposals = aes256-sha256-modp2048\n" in render_swanctl(spec)
    assert "PFS                        yes, modp-2048 (group 14)\n" in render_sheet(spec)


def test_unknown_transform_is_an_export_error() -> None:
    with pytest.raises(ExportError, match="DH group 99"):
        ike_proposal(example_spec(ike=IkeTransforms(12, 256, 12, 5, 99)))


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        (Identity(IdType.IP4_ADDR, "198.51.100.7"), "198.51.100.7"),
        (Identity(IdType.FQDN, "gw.cloud.example"), "fqdn:gw.cloud.example"),
        (Identity(IdType.RFC822, "vpn@cloud.example"), "rfc822:vpn@cloud.example"),
        (Identity(IdType.FQDN, 'odd"name'), '"fqdn:odd\\"name"'),
    ],
)
def test_identities_keep_their_type(ident: Identity, expected: str) -> None:
    assert swan_id(ident) == expected


def _ts(proto: int, p1: int, p2: int, a: str, b: str) -> TrafficSelector:
    return TrafficSelector(proto, p1, p2, IPv4Address(a), IPv4Address(b))


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (_ts(0, 0, 65535, "0.0.0.0", "255.255.255.255"), "0.0.0.0/0"),
        (_ts(0, 0, 65535, "10.1.0.0", "10.1.0.255"), "10.1.0.0/24"),
        (_ts(0, 0, 65535, "10.1.0.1", "10.1.0.5"), "10.1.0.1-10.1.0.5"),
        (_ts(6, 443, 443, "10.1.0.0", "10.1.0.255"), "10.1.0.0/24[tcp/443]"),
        (_ts(17, 1000, 2000, "10.1.0.7", "10.1.0.7"), "10.1.0.7/32[udp/1000-2000]"),
        (_ts(1, 0, 65535, "10.1.0.0", "10.1.1.255"), "10.1.0.0/23[icmp]"),
        (_ts(47, 0, 65535, "10.1.0.0", "10.1.1.255"), "10.1.0.0/23[47]"),
    ],
)
def test_traffic_selectors(ts: TrafficSelector, expected: str) -> None:
    assert swan_ts(ts) == expected


def test_policy_based_selectors_are_mirrored_without_xfrm_interface() -> None:
    local = _ts(0, 0, 65535, "10.1.0.0", "10.1.0.255")
    remote = _ts(0, 0, 65535, "172.16.0.0", "172.16.255.255")
    text = render_swanctl(example_spec(local_ts=local, remote_ts=remote))
    assert "                local_ts = 172.16.0.0/16\n" in text
    assert "                remote_ts = 10.1.0.0/24\n" in text
    assert "if_id_in" not in text
    assert "# Policy-based: VPP requires these selectors exactly (no narrowing).\n" in text


def test_device_responder_makes_the_remote_initiate() -> None:
    text = render_swanctl(example_spec(role="responder"))
    assert "                start_action = start\n" in text
    assert "                dpd_action = restart\n" in text
    assert "        keyingtries = 0\n" in text
    assert "start_action = none" not in text


def test_public_device_address_has_no_private_address_note() -> None:
    text = render_swanctl(example_spec(src=IPv4Address("198.51.100.20")))
    assert "        remote_addrs = 198.51.100.20\n" in text
    assert "private address" not in text
    assert "A NAT may be in between" in text


@pytest.mark.parametrize("psk", ['with"quote-and-more', "0xdeadbeefdeadbeef", "hash#in$key"])
def test_psk_with_interpreted_characters_is_hex_encoded(psk: str) -> None:
    text = render_swanctl(example_spec(psk=Secret(psk)), show_secrets=True)
    assert f"        secret = 0x{psk.encode().hex()}\n" in text
    assert psk not in text


def test_render_export_rejects_unknown_format() -> None:
    with pytest.raises(ExportError, match="expected one of swanctl, text"):
        render_export(example_spec(), "yaml")


def test_udp_encap_is_mirrored() -> None:
    text = render_swanctl(replace(example_spec(), udp_encap=True))
    assert "        encap = yes\n" in text


def test_a_responder_export_has_the_remote_end_rekey_and_propose_pfs() -> None:
    spec = example_spec(role="responder", pfs=True, esp=replace(example_spec().esp, dh_group=14))
    text = render_swanctl(spec)
    assert "# The device never rekeys as responder: your side does.\n" \
           "                rekey_time = 3600s" in text
    assert "esp_proposals = aes256-sha256-modp2048" in text
    assert "propose the DH group in your rekeys; the device (responder) accepts it" in text
    assert "start_action = start" in text
