"""IPv4 text both ways, without ipaddress's Python-level parsing and formatting (several
microseconds an address): a 1000-peer job parses thousands of addresses when it is
validated and formats some 15,000 for its plan's step descriptions and its stored
peer rows. Results equal the library's (`IPv4Address(text)`, `str(addr)`)."""

from __future__ import annotations

import functools
import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import inet_aton, inet_ntoa

# What IPv4Address accepts, as one pattern: four decimal octets 0-255, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def parse_ipv4(text: str) -> IPv4Address:
    """IPv4Address(text), with a fast path for dotted quads, and the last addresses
    parsed remembered: a job repeats its WAN address and selectors in every request."""
    if type(text) is str:
        return _parse_text(text)
    return IPv4Address(text)


@functools.lru_cache(maxsize=256)
def _parse_text(text: str) -> IPv4Address:  # IPv4Address is immutable: safe to share
    if _DOTTED_QUAD.fullmatch(text):
        return IPv4Address(inet_aton(text))
    return IPv4Address(text)


def parse_ipv4_interface(text: str) -> IPv4Interface:
    """IPv4Interface(text), with the same fast path for "a.b.c.d/nn" as `parse_ipv4`."""
    if isinstance(text, str):
        ip, sep, plen = text.partition("/")
        if sep and plen.isascii() and plen.isdigit() and len(plen) <= 2 \
                and _DOTTED_QUAD.fullmatch(ip):
            return IPv4Interface((int.from_bytes(inet_aton(ip), "big"), int(plen)))
    return IPv4Interface(text)


def ip_text(addr: IPv4Address) -> str:
    return inet_ntoa(addr.packed)


def interface_text(iface: IPv4Interface) -> str:
    return f"{inet_ntoa(iface.packed)}/{iface.network.prefixlen}"


def network_text(net: IPv4Network) -> str:
    return f"{inet_ntoa(net.network_address.packed)}/{net.prefixlen}"
