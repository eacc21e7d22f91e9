"""The fast address checks agree with the ipaddress library they stand in for."""

from __future__ import annotations

from ipaddress import AddressValueError, IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.jobs.validation.values import is_unicast, parse_ipv4


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
