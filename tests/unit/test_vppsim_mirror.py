"""vppsim's Linux mirror of a shared route (strongSwan backend): which tunnels it uses."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from agent.lab.vppsim.ike_strongswan.dataplane import _forwarding
from agent.lab.vppsim.state import SimState


def tunnels() -> tuple[SimState, int, int]:
    state = SimState([("GigabitEthernet0/3/0", "192.168.1.10/24")])
    made = [state.ipip_add({"instance": n, "src": IPv4Address("192.168.1.10"),
                            "dst": IPv4Address(f"203.0.113.{n}"), "table_id": 0,
                            "flags": 0, "mode": 0, "dscp": 0}) for n in (1, 2)]
    return state, made[0], made[1]


def path(sw: int, preference: int) -> dict[str, Any]:
    return {"sw_if_index": sw, "preference": preference, "weight": 1}


def test_the_best_preference_among_the_tunnels_that_are_up_carries_the_route() -> None:
    state, primary, backup = tunnels()
    paths = [path(primary, 10), path(backup, 20)]
    assert _forwarding(paths, state) == {primary, backup}  # none up: VPP drops, so do TUNs
    for sw in (primary, backup):
        state.set_flags(sw, 1)
    assert _forwarding(paths, state) == {primary}
    state.set_flags(primary, 0)  # the primary's SA went: VPP's IKE sets its tunnel down
    assert _forwarding(paths, state) == {backup}
    state.set_flags(primary, 1)
    assert _forwarding([path(primary, 10), path(backup, 10)], state) == {primary, backup}
