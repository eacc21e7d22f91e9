"""Readers: what VPP's dumps and lookups mean, decided without VPP."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network
from typing import Any

import pytest

from agent.vpp.errors import VppApiError
from agent.vpp.readers import ChildInfo, derive_state, read_gateways, routes_via_tunnels


def test_the_sa_state_is_derived_from_v1_and_the_child_dump() -> None:
    keyed, unkeyed, offered = ChildInfo(1, 2, True), ChildInfo(1, 2, False), ChildInfo(1, 0, False)
    assert derive_state([keyed], 2) == "AUTHENTICATED"
    assert derive_state([unkeyed], 2) == "TS_UNACCEPTABLE"
    assert derive_state([offered], 2) == "SA_INIT"
    assert derive_state([offered], 2, auth_failed=True) == "AUTH_FAILED"
    assert derive_state([], 0) == "SA_INIT"  # a responder's half-open SA
    assert derive_state([], 2) == "NO_CHILD"


def test_reconcile_sees_only_routes_a_client_could_have_added() -> None:
    n = IPv4Network
    dump = [(3, n("10.100.0.16/31"), 0, 0),  # connected: VPP's, from the tunnel address
            (3, n("10.100.0.17/32"), 0, 0),  # the peer's host route inside it
            (3, n("10.100.0.16/32"), 1, 0),  # local
            (3, n("198.51.100.100/32"), 0, 0),  # a monitor route the agent added
            (4, n("192.0.2.0/24"), 0, 2)]  # a backup path (preference 2)
    got = routes_via_tunnels(dump, {3: {IPv4Interface("10.100.0.16/31")}})
    assert got == {3: {n("198.51.100.100/32"): 0}, 4: {n("192.0.2.0/24"): 2}}


class _RefusingLookup:
    """A VPP whose ip_route_lookup answers with `retval`."""

    def __init__(self, retval: int) -> None:
        self.retval = retval

    async def call(self, name: str, /, **fields: Any) -> Any:
        raise VppApiError(name, self.retval)


async def test_no_default_route_entry_means_no_gateway_but_other_errors_are_raised() -> None:
    """NO_SUCH_ENTRY is an answer (no gateway); any other error must not read as one,
    or the route guard would let a route to the real gateway through."""
    assert await read_gateways(_RefusingLookup(-6)) == set()  # type: ignore[arg-type]
    with pytest.raises(VppApiError, match="NO_SUCH_FIB"):
        await read_gateways(_RefusingLookup(-3))  # type: ignore[arg-type]
