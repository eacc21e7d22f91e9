"""The fast IPv4 texts are exactly what `str()` writes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

from hypothesis import given
from hypothesis import strategies as st

from agent.iptext import interface_text, ip_text, network_text

ADDRESSES = st.integers(0, 2**32 - 1)
LENGTHS = st.integers(0, 32)


@given(ADDRESSES, LENGTHS)
def test_texts_are_what_str_writes(value: int, length: int) -> None:
    assert ip_text(IPv4Address(value)) == str(IPv4Address(value))
    iface = IPv4Interface((value, length))
    assert interface_text(iface) == str(iface)
    net = iface.network
    assert network_text(net) == str(net)
