"""ICMP packet helpers of the probe engine (pure, no sockets)."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address

import pytest

from agent.monitor.icmp import (
    ICMP_DEST_UNREACH,
    ICMP_ECHO_REPLY,
    ProbeEngine,
    build_echo_request,
    internet_checksum,
    next_sequence,
    parse_icmp,
    quoted_echo,
)


def ip_header(src: str, dst: str, payload_len: int) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 1, 0, 64, 1, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"\x01") == 0xFEFF  # odd length is zero padded


def test_echo_request_layout_and_checksum() -> None:
    pkt = build_echo_request(0x1234, 0xBEEF, b"cookie!!" + bytes(48))
    assert pkt[:2] == b"\x08\x00"
    assert struct.unpack("!HH", pkt[4:8]) == (0x1234, 0xBEEF)
    assert len(pkt) == 64
    assert internet_checksum(pkt) == 0  # a valid packet sums to all ones


def test_parse_reply_with_ip_header_and_bad_checksum() -> None:
    icmp = bytearray(build_echo_request(7, 9, b"abcdefgh"))
    icmp[0] = ICMP_ECHO_REPLY
    icmp[2:4] = b"\x00\x00"
    icmp[2:4] = struct.pack("!H", internet_checksum(bytes(icmp)))
    datagram = ip_header("203.0.113.5", "198.51.100.1", len(icmp)) + bytes(icmp)
    parsed = parse_icmp(datagram, has_ip_header=True)
    assert parsed is not None
    assert (parsed.type, parsed.ident, parsed.seq, parsed.payload, parsed.checksum_ok) == (
        0, 7, 9, b"abcdefgh", True)
    assert parsed.source == socket.inet_aton("203.0.113.5")
    corrupt = bytearray(datagram)
    corrupt[-1] ^= 0xFF
    bad = parse_icmp(bytes(corrupt), has_ip_header=True)
    assert bad is not None and bad.checksum_ok is False
    assert parse_icmp(datagram[:25], has_ip_header=True) is None  # truncated ICMP header
    assert parse_icmp(b"\x60" + datagram[1:], has_ip_header=True) is None  # not IPv4


def test_quoted_echo_from_unreachable() -> None:
    request = build_echo_request(0xABCD, 42, b"x" * 8)
    original = ip_header("198.51.100.1", "203.0.113.9", len(request)) + request
    error = struct.pack("!BBHI", ICMP_DEST_UNREACH, 1, 0, 0) + original[:28]
    parsed = parse_icmp(error, has_ip_header=False, source=socket.inet_aton("198.51.100.254"))
    assert parsed is not None and parsed.type == ICMP_DEST_UNREACH and parsed.code == 1
    assert quoted_echo(parsed.payload) == (socket.inet_aton("203.0.113.9"), 0xABCD, 42)
    assert quoted_echo(parsed.payload[:20]) is None


def test_sequence_wraps_and_skips_outstanding() -> None:
    assert next_sequence(0xFFFE, lambda s: False) == 0xFFFF
    assert next_sequence(0xFFFF, lambda s: False) == 0
    outstanding = {0, 1, 2}
    assert next_sequence(0xFFFF, outstanding.__contains__) == 3
    with pytest.raises(RuntimeError, match="outstanding"):
        next_sequence(5, lambda s: True)


def test_engine_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="interval"):
        ProbeEngine(interval=0)
    with pytest.raises(ValueError, match="timeout"):
        ProbeEngine(timeout=-1)
    with pytest.raises(ValueError, match="payload_size"):
        ProbeEngine(payload_size=4)
    engine = ProbeEngine()
    engine.add_target("t", "192.0.2.1", lambda r: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already exists"):
        engine.add_target("t", "192.0.2.1", lambda r: None)  # type: ignore[arg-type]


def test_each_probe_socket_gets_its_own_identifier_and_gives_it_back() -> None:
    """Replies are told apart by identifier: no two bindings share one, and a removed
    binding's identifier is free again (kept in a table, not found by a scan)."""
    engine = ProbeEngine(interval=1.0, timeout=0.5)  # no loop: nothing is opened
    for n in range(300):
        engine.add_target(n, IPv4Address("192.0.2.1"), lambda _result: None, bind_device=f"peer{n}")
    idents = [b.ident for b in engine._bindings.values()]
    assert len(set(idents)) == 300
    assert engine._ident_users == dict.fromkeys(idents, 1)
    for n in range(300):
        engine.remove_target(n)
    assert engine._bindings == {} and engine._ident_users == {}
