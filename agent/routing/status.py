"""Per-peer routing state for `peerctl show routing`, from FRR's JSON (pure).

For each peer of the model: its protocol, the far end of its /31, the state FRR
has with it (OSPF neighbor state on the tunnel interface, e.g. `Full/-`; BGP
session state with the far-end address), the routes learned through it (routes
FRR selected whose next hop is that interface or address) and the routes
advertised to it (BGP: `pfxSnt`; OSPF: the AS-external LSAs this router
originates, i.e. what it redistributes; the same for every OSPF peer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from typing import Any

from agent.routing.model import PeerRouting, RoutingModel


@dataclass(frozen=True)
class PeerRoutingStatus:
    tunnel_id: int
    interface: str
    protocol: str  # "ospf" | "bgp"
    neighbor: str  # the third party's end of the /31
    state: str  # "" when FRR has no session/adjacency with it
    learned: int
    advertised: int | None  # None: not known (no BGP session entry)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def far_end(p: PeerRouting) -> IPv4Address:
    net = p.addr.network
    return next(a for a in (net.network_address, net.broadcast_address) if a != p.addr.ip)


def peer_statuses(model: RoutingModel, *, ospf_neighbors: dict[str, Any],
                  bgp_summary: dict[str, Any], routes: dict[str, Any],
                  ospf_self_external: dict[str, Any]) -> list[PeerRoutingStatus]:
    """`show ip ospf neighbor json`, `show bgp summary json`, `show ip route json` and
    `show ip ospf database external self-originate json` -> one status per peer."""
    bgp_peers = (bgp_summary.get("ipv4Unicast") or {}).get("peers") or {}
    externals = len(ospf_self_external.get("AS External Link States") or {})
    out = []
    for p in model.peers:
        far = str(far_end(p))
        learned = _learned(routes, p.routing, p.interface, far)
        if p.routing == "ospf":
            state = next((str(n.get("nbrState") or n.get("state") or "")
                          for entries in (ospf_neighbors.get("neighbors") or {}).values()
                          for n in entries
                          if str(n.get("ifaceName", "")).split(":")[0] == p.interface), "")
            advertised: int | None = externals
        else:
            session = bgp_peers.get(far) or {}
            state = str(session.get("state", ""))
            advertised = int(session["pfxSnt"]) if "pfxSnt" in session else None
        out.append(PeerRoutingStatus(p.tunnel_id, p.interface, p.routing, far, state,
                                     learned, advertised))
    return out


def _learned(routes: dict[str, Any], protocol: str, interface: str, far: str) -> int:
    count = 0
    for entries in routes.values():
        for r in entries if isinstance(entries, list) else ():
            if r.get("protocol") != protocol or not r.get("selected"):
                continue
            if any(h.get("interfaceName") == interface or h.get("ip") == far
                   for h in r.get("nexthops") or ()):
                count += 1
    return count


def format_table(statuses: list[dict[str, Any]]) -> str:
    """`peerctl show routing`: one line per peer."""
    if not statuses:
        return "no peer routing configured\n"
    rows = [("tunnel", "interface", "protocol", "neighbor", "state", "learned", "advertised")]
    for s in statuses:
        advertised = s.get("advertised")
        rows.append((str(s["tunnel_id"]), s["interface"], s["protocol"], s["neighbor"],
                     s["state"] or "down", str(s["learned"]),
                     "-" if advertised is None else str(advertised)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in rows)
