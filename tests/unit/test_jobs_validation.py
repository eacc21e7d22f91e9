"""Bad add-tunnel inputs, each a mutation of the protocol document's example.

Every case asserts the exact operator-facing message (field, rendered value,
reason, allowed values), so a change in wording is a deliberate test change.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.jobs.validation import JobRejected, ValidationPolicy, normalize_add_tunnel
from tests.fixtures import example_request

DELETE = object()

STRONG_DH = (
    "modp-2048, modp-3072, modp-4096, modp-6144, modp-8192, ecp-256, ecp-384, ecp-521, "
    "modp-2048-256"
)
HMACS = "sha1-96, hmac-sha2-256-128, hmac-sha2-384-192, hmac-sha2-512-256"
IKE_CIPHERS = "aes-cbc, aes-gcm-16, chacha20-poly1305"
ESP_CIPHERS = "aes-cbc, aes-ctr, aes-gcm-16, chacha20-poly1305, null"
DNS = (
    "a DNS name: dot-separated labels of 1-63 letters, digits or hyphens "
    "(no hyphen at either end), at most 253 characters"
)
HOST = "a bare host name such as monitoring.example.com (no scheme, path or port)"
UNICAST = "a unicast IPv4 address (not 0.0.0.0, loopback, multicast, broadcast or 240/4)"
PSK = "1-1024 characters without whitespace or control characters"
NOT_INT = "not an integer; allowed: an integer (JSON number or string of digits)"
WEAK = ("weak, refused by the device's security policy "
        "([security] allow_weak_crypto = false)")
NOT_IN_VPP = "not implemented by VPP 26.06's IKEv2 plugin (refused even with allow_weak_crypto)"
SLASH31 = "an IPv4 /31 interface address such as 10.100.0.16/31"


def example_params() -> dict[str, Any]:
    """The params of the document's complete add-tunnel example, parsed from the document."""
    params: dict[str, Any] = example_request()["params"]
    return params


def mutate(params: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply {"a.b.c": value} changes (DELETE removes the key) to a deep copy."""
    out = copy.deepcopy(params)
    for path, value in changes.items():
        *parents, leaf = path.split("/")
        node = out
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return out


# (id, {path: value}, expected message). Paths use "/" because field names contain dots.
CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "encryption-mode",
        {"encryption-mode": "psk"},
        "encryption-mode: 'psk': not supported for peer tunnels; allowed: ikev2",
    ),
    ("tunnel-id-zero", {"tunnel-id": 0}, "tunnel-id: 0: out of range; allowed: 1-65535"),
    ("tunnel-id-text", {"tunnel-id": "7a"}, f"tunnel-id: '7a': {NOT_INT}"),
    ("tunnel-id-bool", {"tunnel-id": True}, f"tunnel-id: true: {NOT_INT}"),
    ("tunnel-id-float", {"tunnel-id": 7.5}, f"tunnel-id: 7.5: {NOT_INT}"),
    (
        "dev-id-empty",
        {"dev_id": ""},
        "dev_id: '': not an interface id; allowed: the non-empty dev_id of a WAN interface",
    ),
    (
        "src-bad-octet",
        {"src": "192.168.1.300"},
        "src: '192.168.1.300': not an IPv4 address; allowed: a dotted-quad IPv4 address",
    ),
    (
        "src-ipv6",
        {"src": "2001:db8::1"},
        "src: '2001:db8::1': IPv6 is not supported; allowed: an IPv4 address",
    ),
    (
        "dst-multicast",
        {"dst": "224.0.0.5"},
        f"dst: '224.0.0.5': not a unicast address; allowed: {UNICAST}",
    ),
    (
        "dst-equals-src",
        {"dst": "192.168.1.10"},
        "dst: '192.168.1.10': same as src; allowed: the peer's public IPv4 address",
    ),
    ("src-port-range", {"srcPort": "70000"}, "srcPort: 70000: out of range; allowed: 0-65535"),
    (
        "peer-addr-no-prefix",
        {"peer/addr": "10.100.0.16"},
        f"peer.addr: '10.100.0.16': no prefix length; allowed: {SLASH31}",
    ),
    (
        "peer-addr-30",
        {"peer/addr": "10.100.0.16/30"},
        f"peer.addr: '10.100.0.16/30': prefix length /30; allowed: {SLASH31}",
    ),
    (
        "peer-addr-garbage",
        {"peer/addr": "10.100.0.300/31"},
        f"peer.addr: '10.100.0.300/31': not an IPv4 interface address; allowed: {SLASH31}",
    ),
    (
        "peer-addr-contains-dst",
        {"peer/addr": "203.0.113.11/31"},
        "peer.addr: '203.0.113.11/31': the /31 contains dst 203.0.113.10; "
        "allowed: a /31 not containing src or dst",
    ),
    (
        "peer-routing",
        {"peer/routing": "rip"},
        "peer.routing: 'rip': unknown routing; allowed: ospf, bgp",
    ),
    ("peer-mtu-small", {"peer/mtu": 499}, "peer.mtu: 499: out of range; allowed: 500-9000"),
    ("peer-mtu-text", {"peer/mtu": "jumbo"}, f"peer.mtu: 'jumbo': {NOT_INT}"),
    (
        "peer-mss-above-mtu",
        {"peer/tcp-mss-clamp": 1461},
        "peer.tcp-mss-clamp: 1461: out of range; allowed: 200-1460",
    ),
    ("peer-ospf-cost", {"peer/ospf-cost": 0},
     "peer.ospf-cost: '0': not a positive number; allowed: a number > 0, e.g. '100'"),
    ("peer-ospf-cost-text", {"peer/ospf-cost": "cheap"},
     "peer.ospf-cost: 'cheap': not a positive number; allowed: a number > 0, e.g. '100'"),
    (
        "peer-ospf-area",
        {"peer/ospf-area": "backbone"},
        "peer.ospf-area: 'backbone': not an OSPF area id; "
        "allowed: an integer 0-4294967295 or a dotted quad",
    ),
    (
        "peer-ospf-area-bool",
        {"peer/ospf-area": True},
        "peer.ospf-area: true: not a string or an integer; allowed: a string or an integer",
    ),
    (
        "monitor-ip-short",
        {"peer/ips": ["8.8.8"]},
        "peer.ips[0]: '8.8.8': not an IPv4 address; allowed: a dotted-quad IPv4 address",
    ),
    (
        "monitor-ip-loopback",
        {"peer/ips": ["8.8.8.8", "127.0.0.1"]},
        f"peer.ips[1]: '127.0.0.1': not a unicast address; allowed: {UNICAST}",
    ),
    (
        "monitor-ips-not-list",
        {"peer/ips": "8.8.8.8"},
        "peer.ips: a string: not a list; allowed: a JSON list",
    ),
    (
        "monitor-url-scheme",
        {"peer/urls": ["https://monitoring.example.com"]},
        f"peer.urls[0]: 'https://monitoring.example.com': a URL, not a host name; allowed: {HOST}",
    ),
    (
        "monitor-url-path",
        {"peer/urls": ["monitoring.example.com/health"]},
        f"peer.urls[0]: 'monitoring.example.com/health': contains a path; allowed: {HOST}",
    ),
    (
        "monitor-url-port",
        {"peer/urls": ["monitoring.example.com:443"]},
        f"peer.urls[0]: 'monitoring.example.com:443': contains a port; allowed: {HOST}",
    ),
    (
        "monitor-url-hyphen",
        {"peer/urls": ["-bad.example.com"]},
        "peer.urls[0]: '-bad.example.com': not a valid host name "
        f"(label '-bad' starts or ends with a hyphen); allowed: {HOST}",
    ),
    (
        "monitor-url-long-label",
        {"peer/urls": ["a" * 64 + ".com"]},
        f"peer.urls[0]: '{'a' * 64}...': not a valid host name "
        f"(label of 64 characters, more than 63); allowed: {HOST}",
    ),
    (
        "monitor-url-ip",
        {"peer/urls": ["8.8.4.4"]},
        "peer.urls[0]: '8.8.4.4': not a valid host name "
        f"(numeric top-level label (an IP address is not a DNS name)); allowed: {HOST}",
    ),
    (
        "multilink-label",
        {"peer/multilink": {"labels": ["has space"]}},
        "peer.multilink.labels[0]: 'has space': not a path-label id; "
        "allowed: non-empty ids without whitespace",
    ),
    (
        "role",
        {"ikev2/role": "both"},
        "ikev2.role: 'both': unknown role; allowed: initiator, responder",
    ),
    (
        "mode",
        {"ikev2/mode": "cert"},
        "ikev2.mode: 'cert': not supported for peer tunnels; allowed: psk",
    ),
    ("psk-short", {"ikev2/psk": "Sh0rt!"},
     "ikev2.psk: 6 bytes: too short for the device's security policy ([security] "
     "psk_min_length = 8); allowed: at least 8 bytes"),
    (
        "psk-space",
        {"ikev2/psk": "has a space in it"},
        f"ikev2.psk: 17 bytes: contains whitespace; allowed: {PSK}",
    ),
    ("psk-long", {"ikev2/psk": "x" * 1025}, f"ikev2.psk: 1025 bytes: too long; allowed: {PSK}"),
    (
        "psk-control-char",
        {"ikev2/psk": "passwort\u0007geheim"},
        f"ikev2.psk: 15 bytes: contains control characters; allowed: {PSK}",
    ),
    ("psk-number", {"ikev2/psk": 12345678}, f"ikev2.psk: a number: not a string; allowed: {PSK}"),
    ("psk-missing", {"ikev2/psk": DELETE}, f"ikev2.psk: (missing): required field; allowed: {PSK}"),
    (
        "local-id-type",
        {"ikev2/local-device-id-type": "ip6-addr"},
        "ikev2.local-device-id-type: 'ip6-addr': unknown ID type; allowed: fqdn, ip4-addr, rfc822",
    ),
    (
        "local-id-ip4",
        {"ikev2/local-device-id": "198.51.100"},
        "ikev2.local-device-id: '198.51.100': not an IPv4 address; "
        "allowed: a dotted-quad IPv4 address",
    ),
    (
        "remote-id-fqdn-with-a-blank",
        {"ikev2/remote-device-id": "gw 1.example"},
        "ikev2.remote-device-id: 'gw 1.example': not a usable fqdn identity (empty, or "
        "blanks, control or non-ASCII characters); allowed: printable ASCII without blanks, "
        "e.g. vpn.example.com",
    ),
    (
        "remote-id-longer-than-vpp-takes",
        {"ikev2/remote-device-id": "a" * 1025},
        f"ikev2.remote-device-id: '{'a' * 64}...': 1025 bytes, longer than VPP takes; "
        "allowed: at most 1024 bytes",
    ),
    (
        "remote-id-rfc822-no-at",
        {"ikev2/remote-device-id-type": "rfc822"},
        "ikev2.remote-device-id: 'gw.cloud.example': not an rfc822 identity (no local@domain); "
        "allowed: local@domain, e.g. tunnel@example.com",
    ),
    (
        "remote-id-rfc822-domain",
        {"ikev2/remote-device-id-type": "rfc822", "ikev2/remote-device-id": "t1@-x.example"},
        "ikev2.remote-device-id: 't1@-x.example': invalid domain of rfc822 identity "
        "(label '-x' starts or ends with a hyphen); allowed: local@domain, e.g. tunnel@example.com",
    ),
    (
        "child-lifetime",
        {"ikev2/lifetime": 100},
        "ikev2.lifetime: 100: out of range; allowed: 300-86400 seconds",
    ),
    (
        "ike-lifetime",
        {"ikev2/ike_lifetime": 700000},
        "ikev2.ike_lifetime: 700000: out of range; allowed: 300-604800 seconds",
    ),
    (
        "pfs-string",
        {"ikev2/pfs": "false"},
        "ikev2.pfs: 'false': not a boolean; allowed: true or false",
    ),
    (
        "ike-aes-ctr",
        {"ikev2/ike/crypto-alg": "aes-ctr"},
        "ikev2.ike.crypto-alg: 'aes-ctr': aes-ctr is for ESP only, not IKE; "
        f"allowed: {IKE_CIPHERS}",
    ),
    (
        "ike-blowfish",
        {"ikev2/ike/crypto-alg": "blowfish"},
        "ikev2.ike.crypto-alg: 'blowfish': not supported by VPP's IKEv2 plugin; "
        f"allowed: {IKE_CIPHERS}",
    ),
    (
        "ike-unknown-cipher",
        {"ikev2/ike/crypto-alg": "rot13"},
        f"ikev2.ike.crypto-alg: 'rot13': unknown encryption algorithm; allowed: {IKE_CIPHERS}",
    ),
    (
        "ike-3des",
        {"ikev2/ike/crypto-alg": "3des"},
        f"ikev2.ike.crypto-alg: '3des': {NOT_IN_VPP}; allowed: {IKE_CIPHERS}",
    ),
    (
        "ike-null",
        {"ikev2/ike/crypto-alg": "null"},
        f"ikev2.ike.crypto-alg: 'null': null is for ESP only, not IKE; allowed: {IKE_CIPHERS}",
    ),
    (
        "ike-key-size",
        {"ikev2/ike/key-size": 512},
        "ikev2.ike.key-size: 512: not a key size of aes-cbc; allowed: 128, 192, 256",
    ),
    (
        "ike-key-size-missing",
        {"ikev2/ike/key-size": DELETE},
        "ikev2.ike.key-size: (missing): required with aes-cbc; allowed: 128, 192, 256",
    ),
    (
        "ike-chacha-128",
        {"ikev2/ike/crypto-alg": "chacha20-poly1305", "ikev2/ike/key-size": 128},
        "ikev2.ike.key-size: 128: not a key size of chacha20-poly1305; allowed: 256",
    ),
    (
        "ike-alias-conflict",
        {"ikev2/ike/crypto-alg": "aes-cbc-128"},
        "ikev2.ike.key-size: 256: conflicts with 'aes-cbc-128' which implies 128; allowed: 128",
    ),
    (
        "ike-integ-none",
        {"ikev2/ike/integ-alg": "none"},
        "ikev2.ike.integ-alg: 'none': an integrity algorithm is required with aes-cbc; "
        f"allowed: {HMACS}",
    ),
    (
        "ike-integ-md5",
        {"ikev2/ike/integ-alg": "md5-96"},
        f"ikev2.ike.integ-alg: 'md5-96': {NOT_IN_VPP}; allowed: {HMACS}",
    ),
    (
        "ike-integ-gmac",
        {"ikev2/ike/integ-alg": "aes-128-gmac"},
        f"ikev2.ike.integ-alg: 'aes-128-gmac': AES-GMAC is for ESP only, not IKE; allowed: {HMACS}",
    ),
    (
        "ike-integ-xcbc",
        {"ikev2/ike/integ-alg": "aes-xcbc-96"},
        "ikev2.ike.integ-alg: 'aes-xcbc-96': not supported by VPP's IKEv2 plugin; "
        f"allowed: {HMACS}",
    ),
    (
        "ike-dh-empty",
        {"ikev2/ike/dh-group": ""},
        f"ikev2.ike.dh-group: '': a DH group is required for IKE; allowed: {STRONG_DH}",
    ),
    (
        "ike-dh-none",
        {"ikev2/ike/dh-group": "none"},
        f"ikev2.ike.dh-group: 'none': a DH group is required for IKE; allowed: {STRONG_DH}",
    ),
    (
        "ike-dh-unknown",
        {"ikev2/ike/dh-group": "modp-9999"},
        f"ikev2.ike.dh-group: 'modp-9999': unknown DH group; allowed: {STRONG_DH}",
    ),
    (
        "ike-dh-ecp192",
        {"ikev2/ike/dh-group": "ecp-192"},
        f"ikev2.ike.dh-group: 'ecp-192': {WEAK}; allowed: {STRONG_DH}",
    ),
    (
        "ike-dh-modp1024",
        {"ikev2/ike/dh-group": "modp-1024"},
        f"ikev2.ike.dh-group: 'modp-1024': {WEAK}; allowed: {STRONG_DH}",
    ),
    (
        "ike-not-object",
        {"ikev2/ike": "aes-cbc"},
        "ikev2.ike: a string: not an object; allowed: a JSON object",
    ),
    (
        "esp-gcm-with-hmac",
        {"ikev2/esp/crypto-alg": "aes-gcm-16"},
        "ikev2.esp.integ-alg: 'hmac-sha2-256-128': must be none with AEAD cipher aes-gcm-16; "
        "allowed: none",
    ),
    (
        "esp-null-with-hmac",
        {"ikev2/esp/crypto-alg": "null"},
        "ikev2.esp.integ-alg: 'hmac-sha2-256-128': null encryption needs AES-GMAC integrity; "
        "allowed: aes-128-gmac, aes-192-gmac, aes-256-gmac",
    ),
    (
        "esp-gmac-with-cbc",
        {"ikev2/esp/integ-alg": "aes-256-gmac"},
        "ikev2.esp.integ-alg: 'aes-256-gmac': AES-GMAC integrity only with null encryption; "
        f"allowed: {HMACS}",
    ),
    (
        "esp-integ-none",
        {"ikev2/esp/integ-alg": "none"},
        "ikev2.esp.integ-alg: 'none': an integrity algorithm is required with aes-cbc; "
        f"allowed: {HMACS}",
    ),
    (
        "esp-des",
        {"ikev2/esp/crypto-alg": "des"},
        f"ikev2.esp.crypto-alg: 'des': {NOT_IN_VPP}; allowed: {ESP_CIPHERS}",
    ),
    ("esp-key-size-text", {"ikev2/esp/key-size": "abc"}, f"ikev2.esp.key-size: 'abc': {NOT_INT}"),
    (
        "esp-dh-without-pfs",
        {"ikev2/esp/dh-group": "modp-2048"},
        "ikev2.esp.dh-group: 'modp-2048': a PFS group with pfs false; "
        "allowed: '' or none unless pfs is true",
    ),
    (
        "esp-dh-none-with-pfs",
        {"ikev2/pfs": True, "ikev2/esp/dh-group": "none"},
        "ikev2.esp.dh-group: 'none': pfs is true but the group is none; "
        "allowed: '' (the IKE group) or a DH group",
    ),
    (
        "esp-pfs-weak-group",
        {"ikev2/pfs": True, "ikev2/esp/dh-group": "modp-768"},
        f"ikev2.esp.dh-group: 'modp-768': {WEAK}; allowed: {STRONG_DH}",
    ),
    (
        "ts-protocol",
        {"ikev2/local-ts/protocol": "sctp"},
        "ikev2.local-ts.protocol: 'sctp': unknown protocol; allowed: any, icmp, tcp, udp",
    ),
    (
        "ts-any-with-ports",
        {"ikev2/local-ts/start-port": "80"},
        "ikev2.local-ts.protocol: 'any': protocol any cannot restrict ports (80-65535); "
        "allowed: ports 0-65535 with protocol any; tcp, udp or icmp for a port range",
    ),
    (
        "ts-ports-reversed",
        {
            "ikev2/remote-ts/protocol": "tcp",
            "ikev2/remote-ts/start-port": "100",
            "ikev2/remote-ts/end-port": "50",
        },
        "ikev2.remote-ts.end-port: 50: lower than start-port 100; allowed: end-port >= start-port",
    ),
    (
        "ts-port-range",
        {"ikev2/remote-ts/end-port": "65536"},
        "ikev2.remote-ts.end-port: 65536: out of range; allowed: 0-65535",
    ),
    (
        "ts-addrs-reversed",
        {"ikev2/remote-ts/start-addr": "10.0.0.10", "ikev2/remote-ts/end-addr": "10.0.0.1"},
        "ikev2.remote-ts.end-addr: '10.0.0.1': lower than start-addr 10.0.0.10; "
        "allowed: end-addr >= start-addr",
    ),
    (
        "ts-addr-ipv6",
        {"ikev2/remote-ts/start-addr": "::"},
        "ikev2.remote-ts.start-addr: '::': IPv6 is not supported; allowed: an IPv4 address",
    ),
    (
        "dst-missing",
        {"dst": DELETE},
        "dst: (missing): required field; allowed: the peer's public IPv4 address",
    ),
]


def test_table_is_large_enough_and_ids_unique() -> None:
    assert len(CASES) >= 45
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_exact_message(changes: dict[str, Any], expected: str) -> None:
    params = mutate(example_params(), changes)
    with pytest.raises(JobRejected) as info:
        normalize_add_tunnel(params, ValidationPolicy())
    exc = info.value
    assert exc.message == expected
    assert str(exc) == expected
    assert len(exc.problems) == 1
    # The structured parts match the message: the controller path comes first.
    assert expected.startswith(f"{exc.field}: {exc.value}: ")
    assert expected.endswith(f"; allowed: {exc.allowed}")
    assert "S3cr3tPSK" not in exc.message


EDGES = [0, 1, 2, 0x7EFFFFFF, 0x7F000000, 0x7FFFFFFF, 0x80000000, 0xA9FDFFFF, 0xA9FE0000,
         0xA9FEFFFF, 0xA9FF0000, 0xDFFFFFFF, 0xE0000000, 0xEFFFFFFF, 0xF0000000, 0xFFFFFFFE,
         0xFFFFFFFF]


@given(st.sampled_from(EDGES) | st.integers(0, 2**32 - 1), st.data())
def test_a_slash_31_is_judged_as_the_ipaddress_library_would(n: int,
                                                              data: st.DataObject) -> None:
    """The integer checks of peer.addr agree with ipaddress on every /31."""
    from ipaddress import IPv4Address, IPv4Interface

    from agent.jobs.validation.problems import Problems
    from agent.jobs.validation.tunnel import _peer_addr

    text = f"{IPv4Address(n)}/31"
    outer = IPv4Address(data.draw(st.sampled_from([n, n ^ 1, n ^ 2, (n + 7) % 2**32])))
    net = IPv4Interface(text).network
    bad = any(a.is_unspecified or a.is_loopback or a.is_multicast or a.is_reserved
              or a.is_link_local for a in net) or outer in net
    assert (_peer_addr(Problems(), text, None, outer) is None) == bad


def _psk_verdict_walking_every_character(psk: str) -> str:
    if any(ch.isspace() for ch in psk):
        return "contains whitespace"
    if any("\ud800" <= ch <= "\udfff" for ch in psk):
        return "not valid Unicode text (a lone surrogate)"
    if not psk.isprintable():
        return "contains control characters"
    return ""


PSK_CHARACTERS = st.characters() | st.sampled_from(
    ["\ud800", "\udfff", " ", "\t", "\x07", "\x85", "\u00a0", "\u2028", "\u200b", "\ufeff"])


@given(st.text(PSK_CHARACTERS, min_size=8, max_size=40))
def test_the_psk_characters_are_judged_as_a_walk_over_each_would(psk: str) -> None:
    """The fast path for a printable PSK without a space changes no verdict."""
    from agent.jobs.validation.crypto import check_psk
    from agent.jobs.validation.problems import Problems

    p = Problems()
    ok = check_psk(p, psk, 1, ValidationPolicy(psk_min_length=1))
    expected = _psk_verdict_walking_every_character(psk)
    assert ok == (expected == "")
    assert [item.reason for item in p.items] == ([expected] if expected else [])


_IKE_VARIANTS = [  # valid, weak (allowed or refused by the policy), wrong
    {}, {"ikev2/ike/crypto-alg": "aes-gcm-16", "ikev2/ike/integ-alg": "none"},
    {"ikev2/ike/dh-group": "modp-1024"}, {"ikev2/ike/key-size": 100},
    {"ikev2/ike/integ-alg": "md5"},
]
_ESP_VARIANTS = [{}, {"ikev2/pfs": True, "ikev2/esp/dh-group": "modp-2048"},
                 {"ikev2/esp/integ-alg": "sha1-96"}, {"ikev2/esp/crypto-alg": "des"}]
_TS_VARIANTS = [{}, {"ikev2/remote-ts/start-addr": "10.9.0.0",
                     "ikev2/remote-ts/end-addr": "10.9.255.255"},
                {"ikev2/local-ts/start-port": "80", "ikev2/local-ts/end-port": "70"},
                {"ikev2/remote-ts": DELETE}]


def _outcome(params: dict[str, Any], policy: ValidationPolicy,
             shared: dict[Any, Any] | None) -> object:
    try:
        return normalize_add_tunnel(params, policy, shared=shared)
    except JobRejected as e:
        return [(p.field, p.value, p.reason) for p in e.problems]


@given(st.lists(st.tuples(st.sampled_from(_IKE_VARIANTS), st.sampled_from(_ESP_VARIANTS),
                          st.sampled_from(_TS_VARIANTS)), min_size=1, max_size=6),
       st.booleans())
def test_a_job_shares_its_common_parts_with_the_verdicts_of_each_alone(
        requests: list[tuple[dict[str, Any], ...]], weak_ok: bool) -> None:
    """Transforms and selectors that a job's requests have in common are checked once;
    every request still gets exactly its own spec or its own problems."""
    policy = ValidationPolicy(allow_weak_crypto=weak_ok)
    shared: dict[Any, Any] = {}
    for n, variants in enumerate(requests):
        params = mutate(example_params(), {k: v for c in variants for k, v in c.items()})
        params["tunnel-id"] = n + 1
        assert _outcome(params, policy, shared) == _outcome(params, policy, None)


CLOUDFLARE_STYLE_ID = f"{'0123456789abcdef' * 2}.{'fedcba9876543210' * 2}.ipsec.cloudflare.com"


@pytest.mark.parametrize("fqdn", ["my_gw", "100.100.100.100", "GW-1.Example.", CLOUDFLARE_STYLE_ID])
def test_fqdn_identities_are_opaque_strings(fqdn: str) -> None:
    """flexiManage checks an fqdn ID for blanks only (its own API example uses an IP
    address), and VPP takes up to 1024 bytes: such IDs must not loop sync-device."""
    params = example_request()["params"]
    params["ikev2"]["local-device-id-type"] = "fqdn"
    params["ikev2"]["local-device-id"] = fqdn
    spec = normalize_add_tunnel(params, ValidationPolicy())
    assert spec.local_id.value == fqdn
    assert len(CLOUDFLARE_STYLE_ID) > 63  # longer than VPP's dumps show
