"""What vppsim holds beyond the agent's acknowledged state: leaked or missing objects."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Network

from agent.lab.vppsim.server import VppSim
from agent.peers.spec import PeerSpec
from agent.vpp.plan import host_if_name, route_paths


def differences(sim: VppSim, desired: Mapping[int, PeerSpec],
                dynamic: Mapping[int, tuple] | None = None) -> list[str]:
    """Every way VPP differs from `desired` in tunnels, profiles, addresses, Linux pairs and
    routes through tunnels (empty: VPP is exactly the acknowledged state)."""
    st = sim.state
    out: list[str] = []
    names = {i: itf.name for i, itf in st.interfaces.items()}
    tunnels = {i: n for i, n in names.items() if n.startswith("ipip")}
    want_tunnels = {f"ipip{t}" for t in desired}
    if set(tunnels.values()) != want_tunnels:
        out.append(f"tunnels {sorted(set(tunnels.values()) ^ want_tunnels)} differ")
    profiles = set(st.profiles) if hasattr(st, "profiles") else set()
    want_profiles = {f"peer-{t}" for t in desired}
    if profiles != want_profiles:
        out.append(f"profiles {sorted(profiles ^ want_profiles)} differ")
    by_name = {n: i for i, n in tunnels.items()}
    want_routes: set[tuple[IPv4Network, int]] = set()
    for t, spec in desired.items():
        sw = by_name.get(f"ipip{t}")
        if sw is None:
            continue
        extra = (dynamic or {}).get(t, ())
        want_routes |= {(p, sw) for p, _ in route_paths(spec, extra)}
        addrs = {str(a) for a in st.addresses.get(sw, [])}
        if addrs != {str(spec.addr)}:
            out.append(f"ipip{t} addresses {sorted(addrs)}")
        lcp = st.lcp.get(sw)
        if lcp is not None and lcp["host_if_name"] != host_if_name(t):
            out.append(f"ipip{t} linux pair {lcp['host_if_name']}")
    have_routes: set[tuple[IPv4Network, int]] = set()
    for route in st.routes.values():
        for p in route.paths:
            sw = p["sw_if_index"]
            if sw in tunnels or (sw not in names and sw != 0xFFFFFFFF):
                have_routes.add((IPv4Network(str(route.prefix)), sw))
    if have_routes != want_routes:
        out.append(f"routes leaked {sorted(map(str, have_routes - want_routes))[:5]} "
                   f"missing {sorted(map(str, want_routes - have_routes))[:5]}")
    stray_addrs = [i for i in st.addresses if i not in names and st.addresses[i]]
    if stray_addrs:
        out.append(f"addresses on deleted interfaces {stray_addrs}")
    return out
