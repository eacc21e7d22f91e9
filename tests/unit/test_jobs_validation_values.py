"""The fast address checks agree with the ipaddress library they stand in for."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.iptext import parse_ipv4
from agent.jobs.validation.values import _dns_name_reason, dns_name_problem, is_unicast


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
                                  "169.255.0.1", "169.253.255.255", "126.255.255.255",
                                  "128.0.0.0", "0.0.0.1", "1.1.1.1", "223.255.255.255"])
def test_the_edges_of_each_refused_range(edge: str) -> None:
    assert is_unicast(parse_ipv4(edge)) == _library_unicast(IPv4Address(edge))


_LABEL = st.text(alphabet="abcXYZ019-_.é ", min_size=0, max_size=70)
_NAMES = (st.lists(_LABEL, min_size=1, max_size=5).map(".".join)
          | st.lists(st.sampled_from(["a" * 63, "b" * 64, "x-y", "-x", "x-", "123"]),
                     min_size=1, max_size=5).map(".".join))


@given(_NAMES)
def test_the_one_match_host_name_check_agrees_with_the_label_walk(name: str) -> None:
    """The fast path only ever accepts what the label-by-label walk accepts, and every
    refusal keeps the walk's reason."""
    assert dns_name_problem(name) == _dns_name_reason(name)
