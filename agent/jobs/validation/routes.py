"""Static routes (`add-route`) through peer tunnels: which tunnel each one enters. Pure.

flexiManage routes a prefix through a peer with `via` = the peer's end of the
tunnel's /31 (it finds such routes by either /31 address to build its jobs).
A route whose `via` is in a peer tunnel's subnet is programmed into VPP as one path
via that tunnel, like the monitor /32s; any other route is recorded only (the
device's other next hops are not this agent's to program).

The route's `metric` orders the tunnels that route one prefix, as the kernel's metric
orders flexiagent's routes: VPP forwards over the best-preference paths that are up,
so the lowest metric is the primary and a higher one takes over while the primary's
tunnel is down (no SA); equal metrics share the traffic. The path's preference is
the metric itself (what `show ip fib` then shows) while every metric of the prefix
fits VPP's u8; otherwise each gets its metric's rank among them, so the order is kept
exactly either way. Only then does one tunnel's metric move other tunnels' paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.jobs.validation.problems import Problem, render
from agent.peers.spec import PeerSpec, StaticRoute


def peer_static_routes(items: Mapping[str, tuple[str, Any]], specs: Iterable[PeerSpec]
                       ) -> tuple[dict[int, tuple[StaticRoute, ...]], list[Problem]]:
    """Each peer tunnel's static routes from the recorded `route:` items (the dispatcher's
    `Items`), and the problems of routes through a peer that cannot be programmed."""
    tunnel_of: dict[IPv4Network, int] = {s.addr.network: s.tunnel_id for s in specs}
    lengths = sorted({n.prefixlen for n in tunnel_of}, reverse=True)
    metrics: dict[tuple[int, IPv4Network], int] = {}  # a tunnel's best for each prefix
    problems: list[Problem] = []
    for key, (_, params) in sorted(items.items()):
        if not key.startswith("route:") or not isinstance(params, Mapping):
            continue
        try:
            via = IPv4Address(str(params.get("via")))
        except ValueError:
            continue  # not through a peer: recorded only
        tid = next((t for n in lengths
                    if (t := tunnel_of.get(IPv4Network((int(via), n), strict=False)))
                    is not None), None)
        if tid is None:
            continue
        addr, metric = params.get("addr"), _metric(params.get("metric"))
        try:
            net = IPv4Network(str(addr))
        except ValueError as e:
            problems.append(Problem("add-route.addr", render(addr),
                                    f"not an IPv4 prefix ({e}), via {via} of peer tunnel {tid}",
                                    "a.b.c.d/m"))
            continue
        if metric is None:
            problems.append(Problem("add-route.metric", render(params.get("metric")),
                                    f"not a metric, route {net} via {via} of peer tunnel {tid}",
                                    "an integer >= 0, or none (0)"))
            continue
        metrics[tid, net] = min(metric, metrics.get((tid, net), metric))
    of_prefix: dict[IPv4Network, set[int]] = {}
    for (_, net), metric in metrics.items():
        of_prefix.setdefault(net, set()).add(metric)
    order = {net: sorted(ms) for net, ms in of_prefix.items()}
    found: dict[int, list[StaticRoute]] = {}
    for (tid, net), metric in metrics.items():
        if order[net][-1] <= MAX_PREFERENCE:
            preference = metric
        else:  # the rank; past 256 distinct metrics, they share the last preference
            preference = min(order[net].index(metric), MAX_PREFERENCE)
        found.setdefault(tid, []).append(StaticRoute(net, preference))
    return ({tid: tuple(sorted(rs, key=lambda r: (int(r.net.network_address), r.net.prefixlen)))
             for tid, rs in found.items()}, problems)


MAX_PREFERENCE = 255  # vl_api_fib_path_t.preference is a u8


def _metric(value: object) -> int | None:
    """flexiManage sends the metric as an integer (sync-device: `parseInt`) or as the
    route's text (add-route); absent or empty is 0, as flexiagent reads it."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None
