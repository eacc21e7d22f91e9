"""The fast IPv4 parsers agree with the ipaddress library, and the fast texts are exactly
what `str()` writes."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import AddressValueError, IPv4Address, IPv4Interface

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.iptext import (
    interface_text,
    ip_text,
    network_text,
    parse_ipv4,
    parse_ipv4_interface,
)

ADDRESSES = st.integers(0, 2**32 - 1)
LENGTHS = st.integers(0, 32)


@given(ADDRESSES, LENGTHS)
def test_texts_are_what_str_writes(value: int, length: int) -> None:
    assert ip_text(IPv4Address(value)) == str(IPv4Address(value))
    iface = IPv4Interface((value, length))
    assert interface_text(iface) == str(iface)
    net = iface.network
    assert network_text(net) == str(net)


def _agrees(ours: Callable[[str], object], library: Callable[[str], object], text: str,
            refusal: type[Exception] = ValueError) -> None:
    """`ours` refuses what `library` refuses (same exception type) and returns the same
    value, network included, for the rest."""
    try:
        expected = library(text)
    except refusal:
        with pytest.raises(refusal):
            ours(text)
        return
    got = ours(text)
    assert got == expected
    assert getattr(got, "network", None) == getattr(expected, "network", None)


@given(st.text(alphabet="0123456789.x/ \n\uff11", max_size=18))
def test_text_the_library_refuses_is_refused(text: str) -> None:
    _agrees(parse_ipv4, IPv4Address, text, AddressValueError)


@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.sampled_from(["", "0"]))
def test_interfaces_parse_as_the_library_parses_them(value: int, plen: int, pad: str) -> None:
    _agrees(parse_ipv4_interface, IPv4Interface, f"{IPv4Address(value)}/{pad}{plen}")


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1/", "10.0.0.1/3a", "10.0.0.01/31",
                                  "10.0.0.1/\u00b3", "10.0.0.1/31/1", "::1/127"])
def test_malformed_interfaces_are_refused_as_the_library_refuses_them(text: str) -> None:
    _agrees(parse_ipv4_interface, IPv4Interface, text)
