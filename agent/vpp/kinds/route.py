"""Routes into the tunnel: the monitor's /32s, the controller's static routes via the
peer (`add-route` with `via` in the tunnel's /31), and the remote selector's prefixes
when the tunnel is policy-based.

Multipath add/remove: tunnels that route the same prefix (two peers monitoring
8.8.8.8, a redundant pair to one remote subnet) each own one path of the shared
VPP route, so removing one tunnel leaves the others' paths and the last removal
deletes the route. The monitor sends each tunnel's probes out of the tunnel's own
Linux interface, so probes never depend on which path VPP picks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

from agent.iptext import network_text
from agent.peers.spec import PeerSpec
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.kinds.tunnel import tunnel_ref
from agent.vpp.ops import Op, VppFacts, add_del

if TYPE_CHECKING:
    from agent.vpp.client import VppClient

FIB_PATH_TYPE_NORMAL = 0


def covering_prefixes(start: IPv4Address, end: IPv4Address) -> list[IPv4Network]:
    """The fewest prefixes that cover exactly start..end."""
    return list(ipaddress.summarize_address_range(start, end))


def _key(n: IPv4Network) -> tuple[int, int]:
    return int(n.network_address), n.prefixlen


RoutePath = tuple[IPv4Network, int]  # (prefix, VPP path preference: 0 is best)


def route_paths(spec: PeerSpec, extra: Iterable[IPv4Address] = ()) -> list[RoutePath]:
    """This tunnel's path of each prefix routed into it: monitor /32s and the remote
    selector if policy-based at preference 0, static routes via the peer at the
    preference their metric gives (a prefix in both: the better one).
    Not those inside the tunnel's own subnet (a monitor IP that is the peer's tunnel
    address): VPP's connected route already sends them there, and `routes_via_tunnels`
    leaves VPP's routes in that subnet out, so an added one would look missing at
    every reconcile and be left behind by a removal."""
    own = spec.addr.network
    paths: dict[IPv4Network, int] = {}
    for ip in (*spec.monitor_ips, *extra):
        if ip not in own:
            paths[IPv4Network((int(ip), 32))] = 0  # no text to format and parse
    nets = [(r.net, r.preference) for r in spec.static_routes]
    if not spec.route_based:
        nets += [(n, 0) for n in covering_prefixes(spec.remote_ts.start_addr,
                                                   spec.remote_ts.end_addr)]
    for net, preference in nets:
        if not net.subnet_of(own):
            paths[net] = min(preference, paths.get(net, preference))
    return sorted(paths.items(), key=lambda p: _key(p[0]))


def route_op(spec_id: int, prefix: IPv4Network, is_add: bool, preference: int = 0) -> Op:
    """Add or remove this tunnel's path of `prefix` (see the module doc). VPP tells
    paths apart without their preference: a removal matches whatever it is, and an
    add of a path already there keeps the old preference. A removal carries the
    preference the path had, for its undo."""
    ref = tunnel_ref(spec_id)

    def args(add: bool) -> dict[str, Any]:
        return {
            "is_add": add,
            "is_multipath": True,
            "route": {
                "table_id": 0,
                "prefix": prefix,
                "n_paths": 1,
                "paths": [
                    {"sw_if_index": ref, "table_id": 0, "weight": 1,
                     "preference": preference,
                     "type": 0, "flags": 0, "proto": 0, "n_labels": 0,
                     # papi packs this fixed array only when all 16 entries are given
                     "label_stack": [{}] * 16}
                ],
            },
        }

    text = network_text(prefix)
    shown = f" preference {preference}" if preference else ""
    return add_del("ip_route_add_del", args, is_add, f"add route {text}{shown}",
                   f"delete route {text}", spec_id)


def route_changes(tunnel_id: int, before: Iterable[RoutePath],
                  after: Iterable[RoutePath]) -> list[Op]:
    """Only the path changes between two sets of paths through one tunnel, removals
    first: a new preference is a removal and an add, since VPP's add keeps the old."""
    old, new = set(before), set(after)
    ops = [route_op(tunnel_id, p, False, pref) for p, pref in sorted(old - new, key=_path_key)]
    ops += [route_op(tunnel_id, p, True, pref) for p, pref in sorted(new - old, key=_path_key)]
    return ops


def _path_key(path: RoutePath) -> tuple[int, int, int]:
    return (*_key(path[0]), path[1])


def routes_via_tunnels(
    routes: list[tuple[int, IPv4Network, int, int]],
    addresses: Mapping[int, set[IPv4Interface]],
) -> dict[int, dict[IPv4Network, int]]:
    """The routes via each tunnel that a client could have added, with their path's
    preference: `ip_route_dump` also lists what VPP derives from the tunnel's own
    address (the connected network, the peer's host route in it, the local /32 with a
    local path); those are VPP's, never reconciled away nor re-added by an undo."""
    out: dict[int, dict[IPv4Network, int]] = {}
    for via, prefix, path_type, preference in routes:
        if path_type != FIB_PATH_TYPE_NORMAL:
            continue
        if any(prefix.subnet_of(a.network) for a in addresses.get(via, ())):
            continue
        out.setdefault(via, {})[prefix] = preference
    return out


def path_next_hops(paths: Iterable[Any]) -> list[tuple[int, str]]:
    """(sw_if_index, IPv4 next hop) of each path of a `vl_api_ip_route_t`; "" for a path
    without one (on-link, or the drop path of VPP's default entry)."""
    out = []
    for path in paths:
        nh = str(getattr(path.nh.address, "ip4", "") or "")
        out.append((int(path.sw_if_index), "" if nh == "0.0.0.0" else nh))
    return out


def gateways_of(paths: Iterable[Any]) -> set[IPv4Address]:
    """The next hops of a default route's paths (the WAN gateways, wherever they lie: an
    on-link gateway of a /32 or cloud address is outside every WAN subnet)."""
    return {IPv4Address(nh) for _, nh in path_next_hops(paths) if nh}


def default_next_hops(routes: Iterable[Any]) -> set[IPv4Address]:
    """The next hops of the 0.0.0.0/0 routes among `ip_route_details` messages."""
    return {gw for r in routes if str(r.route.prefix) == "0.0.0.0/0"
            for gw in gateways_of(r.route.paths[: int(r.route.n_paths)])}


class RouteKind(Kind):
    name = "route"
    stage = 1  # which paths go via a tunnel needs the tunnels' indexes

    def create(self, spec: PeerSpec, facts: VppFacts,
               extra_routes: Sequence[IPv4Address]) -> list[Op]:
        return [route_op(spec.tunnel_id, p, True, pref)
                for p, pref in route_paths(spec, extra_routes)]

    async def read(self, vpp: VppClient, obs: Observed) -> Any:
        return await vpp.dump("ip_route_dump", table={"table_id": 0, "is_ip6": False, "name": ""})

    def absorb(self, raw: Any, obs: Observed) -> None:
        # after the addresses: VPP's own routes from a tunnel's address are told apart
        tunnel_indexes = {t.sw_if_index for t in obs.tunnels.values()}
        via_tunnels: list[tuple[int, IPv4Network, int, int]] = []
        for r in raw:
            route = r.route
            for path in route.paths[:int(route.n_paths)]:  # shared route: a path per tunnel
                via = int(path.sw_if_index)
                if via in tunnel_indexes:
                    via_tunnels.append((via, IPv4Network(str(route.prefix)), int(path.type),
                                        int(path.preference)))
        obs.route_preferences = routes_via_tunnels(via_tunnels, obs.addresses)
        obs.gateways = default_next_hops(raw)

    def repair(self, spec: PeerSpec, facts: VppFacts, obs: Observed, sw: int,
               extra_routes: Sequence[IPv4Address]) -> tuple[list[Op], str | None]:
        # Routes via the tunnel the agent does not expect are left alone: a routing
        # protocol may have installed them.
        have = obs.route_preferences.get(sw, {})
        want = route_paths(spec, extra_routes)
        missing = [(p, pref) for p, pref in want if p not in have]
        moved = [(p, pref) for p, pref in want if p in have and have[p] != pref]
        if not missing and not moved:
            return [], None
        ops = [route_op(spec.tunnel_id, p, False, have[p]) for p, _ in moved]  # undo: as was
        ops += [route_op(spec.tunnel_id, p, True, pref) for p, pref in (*moved, *missing)]
        why = [f"{len(missing)} route(s) missing: adding"] if missing else []
        why += [f"{len(moved)} route(s) with another preference: re-adding"] if moved else []
        return ops, "; ".join(why)

    def delete(self, tid: int, sw: int | None, obs: Observed) -> list[Op]:
        # The only cleanup steps that keep their undo; the rest is not re-created when
        # a cleanup fails half-way (it is simply tried again).
        if sw is None:
            return []
        have = obs.route_preferences.get(sw, {})
        return [route_op(tid, p, False, have[p])
                for p in sorted(have, key=lambda n: int(n.network_address))]


KIND = RouteKind()
