"""The fast address checks agree with the ipaddress library they stand in for."""

from __future__ import annotations

from ipaddress import AddressValueError, IPv4Address, IPv4Interface

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.jobs.validation.values import is_unicast, parse_ipv4, parse_ipv4_interface


def _library_unicast(a: IPv4Address) -> bool:
    return not (a.is_unspecified or a.is_loopback or a.is_multicast or a.is_reserved
                or a.is_link_local)


@given(st.integers(0, 2**32 - 1))
def test_every_address_parses_and_classifies_as_the_library_does(value: int) -> None:
    addr = IPv4Address(value)
    assert parse_ipv4(str(addr)) == addr
    assert is_unicast(addr) == _library_unicast(addr)


@pytest.mark.parametrize("edge", ["0.0.0.0", "127.0.0.1", "224.0.0.1", "239.255.255.255",
                                  "240.0.0.0", "255.255.255.255", "169.254.1.1",
                                  "169.255.0.1", "1.1.1.1", "223.255.255.255"])
def test_the_edges_of_each_refused_range(edge: str) -> None:
    assert is_unicast(parse_ipv4(edge)) == _library_unicast(IPv4Address(edge))


@given(st.text(alphabet="0123456789.x/ \n\uff11", max_size=18))
def test_text_the_library_refuses_is_refused(text: str) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(text)
    except AddressValueError:
        expected = None
    if expected is None:
        with pytest.raises(AddressValueError):
            parse_ipv4(text)
    else:
        assert parse_ipv4(text) == expected


@given(st.integers(0, 2**32 - 1), st.integers(0, 40), st.sampled_from(["", "0"]))
def test_interfaces_parse_as_the_library_parses_them(value: int, plen: int, pad: str) -> None:
    text = f"{IPv4Address(value)}/{pad}{plen}"
    try:
        expected: IPv4Interface | None = IPv4Interface(text)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            parse_ipv4_interface(text)
    else:
        got = parse_ipv4_interface(text)
        assert (got, got.network) == (expected, expected.network)


@pytest.mark.parametrize("text", ["10.0.0.1", "10.0.0.1/", "10.0.0.1/3a", "10.0.0.01/31",
                                  "10.0.0.1/\u00b3", "10.0.0.1/31/1", "::1/127"])
def test_malformed_interfaces_are_refused_as_the_library_refuses_them(text: str) -> None:
    try:
        IPv4Interface(text)
        refused = False
    except ValueError:
        refused = True
    if refused:
        with pytest.raises(ValueError):
            parse_ipv4_interface(text)
    else:
        assert parse_ipv4_interface(text) == IPv4Interface(text)
