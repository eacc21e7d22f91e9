"""Static routes (`add-route`) through peer tunnels: which tunnel each one enters. Pure.

flexiManage routes a prefix through a peer with `via` = the peer's end of the
tunnel's /31 (it finds such routes by either /31 address to build its jobs).
A route whose `via` is in a peer tunnel's subnet is programmed into VPP as one path
via that tunnel, like the monitor /32s; any other route is recorded only (the
device's other next hops are not this agent's to program).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from agent.jobs.validation.problems import Problem, render
from agent.peers.spec import PeerSpec


def peer_static_routes(items: Mapping[str, tuple[str, Any]], specs: Iterable[PeerSpec]
                       ) -> tuple[dict[int, tuple[IPv4Network, ...]], list[Problem]]:
    """Each peer tunnel's static routes from the recorded `route:` items (the dispatcher's
    `Items`), and the problems
    of routes through a peer that cannot be programmed (named by their item)."""
    tunnel_of: dict[IPv4Network, int] = {s.addr.network: s.tunnel_id for s in specs}
    lengths = sorted({n.prefixlen for n in tunnel_of}, reverse=True)
    found: dict[int, set[IPv4Network]] = {}
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
        addr = params.get("addr")
        try:
            net = IPv4Network(str(addr))
        except ValueError as e:
            problems.append(Problem("add-route.addr", render(addr),
                                    f"not an IPv4 prefix ({e}), via {via} of peer tunnel {tid}",
                                    "a.b.c.d/m"))
            continue
        found.setdefault(tid, set()).add(net)
    return ({tid: tuple(sorted(nets, key=lambda n: (int(n.network_address), n.prefixlen)))
             for tid, nets in found.items()}, problems)
