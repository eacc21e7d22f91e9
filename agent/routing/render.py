"""Desired routing model -> FRR configuration lines, exactly as FRR 8.4 prints them.

Pure: no I/O. Each line is a path (block headers, then the line), so the diff can
compare it with `show running-config` as sets. The commands are those of section
12 of the protocol reference (flexiagent's), written in the canonical form FRR's
running-config shows, so that a configuration FRR already has renders to a line
it already prints and a second apply finds nothing to do:

* `neighbor X activate` is the ipv4-unicast default (not printed) and is omitted;
* `neighbor X ebgp-multihop 1` is eBGP's default TTL (not printed) and is omitted;
* `send-community` is expressed as the `no ... send-community <kind>` lines FRR
  prints for the kinds that are off (all kinds are on by default);
* prefixes have their host bits cleared and access-list entries carry their `seq`.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import groupby

from agent.routing.model import BgpNeighbor, BgpSettings, RoutingFilter, RoutingModel

Path = tuple[str, ...]

OSPF_RM = "fw-redist-ospf-rm"
OSPF_ACL = "fw-redist-ospf-acl"
BGP_RM = "fw-redist-bgp-rm"
BGP_ACL = "fw-redist-bgp-acl"
LAN_NAT_RM = "fw-redist-lan-nat-rm"
LAN_NAT_ACL = "fw-redist-lan-nat-acl"
AF_IPV4 = "address-family ipv4 unicast"

# the kinds FRR prints as switched off, per controller `sendCommunity`
_COMMUNITY_OFF = {
    "all": (),
    "both": ("large",),
    "standard": ("extended", "large"),
    "extended": ("standard", "large"),
    "large": ("standard", "extended"),
    "": ("all",),
}


def render(model: RoutingModel) -> tuple[Path, ...]:
    """Every path of the agent's FRR configuration, block headers before their lines."""
    return tuple(_render(model))


def _render(model: RoutingModel) -> Iterator[Path]:
    ospf_peers = [p for p in model.peers if p.routing == "ospf"]
    uses_ospf = model.ospf is not None or bool(ospf_peers) or bool(model.ospf_networks)
    uses_bgp = model.bgp is not None

    yield from _access_lists(model, uses_ospf, uses_bgp)
    if uses_ospf:
        yield from _route_map(OSPF_RM, OSPF_ACL)
    if uses_ospf or uses_bgp:
        yield from _route_map(LAN_NAT_RM, LAN_NAT_ACL)
    if uses_bgp:
        yield from _route_map(BGP_RM, BGP_ACL)
    for f in model.filters:
        yield from _filter_route_map(f)

    for p in ospf_peers:
        head = f"interface {p.interface}"
        yield (head,)
        yield (head, "ip ospf network point-to-point")
        if p.ospf_cost is not None:
            yield (head, f"ip ospf cost {p.ospf_cost}")

    if uses_ospf:
        head = "router ospf"
        yield (head,)
        if model.ospf is not None and model.ospf.router_id is not None:
            yield (head, f"ospf router-id {model.ospf.router_id}")
        yield (head, f"redistribute kernel route-map {OSPF_RM}")
        yield (head, f"redistribute static route-map {LAN_NAT_RM}")
        if model.ospf is not None and model.ospf.redistribute_bgp:
            yield (head, "redistribute bgp")
        networks = {f"network {p.addr.network} area {p.ospf_area}": None for p in ospf_peers}
        networks.update((f"network {n.network} area {n.area}", None)
                        for n in model.ospf_networks)
        for line in networks:
            yield (head, line)

    if model.bgp is not None:
        yield from _bgp(model.bgp)


def _access_lists(model: RoutingModel, uses_ospf: bool, uses_bgp: bool) -> Iterator[Path]:
    for f in model.filters:
        for i, (_, routes) in enumerate(_groups(f)):
            for k, route in enumerate(routes, start=1):
                yield (f"access-list {_group_acl(f.name, i)} seq {5 * k} permit {route}",)
    # sorted so the sequence numbers do not depend on the order the store lists routes in
    for acl, used, wanted in ((OSPF_ACL, uses_ospf, "ospf"), (BGP_ACL, uses_bgp, "bgp")):
        if not used:
            continue
        prefixes = sorted({r.addr for r in model.routes
                           if (r.redistribute_ospf if wanted == "ospf" else r.redistribute_bgp)})
        for k, prefix in enumerate(prefixes, start=1):
            yield (f"access-list {acl} seq {5 * k} permit {prefix}",)


def _route_map(name: str, acl: str) -> Iterator[Path]:
    head = f"route-map {name} permit 1"
    yield (head,)
    yield (head, f"match ip address {acl}")


def _group_acl(name: str, index: int) -> str:
    return f"rm_{name}_group_{index}"


def _groups(f: RoutingFilter) -> list[tuple[tuple[str, str], list[str]]]:
    """Non-default rules by priority, consecutive ones with the same (action, next hop) merged."""
    rules = sorted((r for r in f.rules if r.route.prefixlen != 0), key=lambda r: r.priority)
    return [(key, [str(r.route) for r in group])
            for key, group in groupby(rules, key=lambda r: (r.action, str(r.next_hop or "")))]


def _filter_route_map(f: RoutingFilter) -> Iterator[Path]:
    seq = 0
    for i, ((action, next_hop), _) in enumerate(_groups(f)):
        seq += 5
        head = f"route-map {f.name} {_verb(action)} {seq}"
        yield (head,)
        if f.description:
            yield (head, f"description {f.description}")
        yield (head, f"match ip address {_group_acl(f.name, i)}")
        if next_hop:
            yield (head, f"set ip next-hop {next_hop}")
    default = next(r for r in f.rules if r.route.prefixlen == 0)
    yield (f"route-map {f.name} {_verb(default.action)} {seq + 5}",)


def _verb(action: str) -> str:
    return "permit" if action == "allow" else "deny"


def _bgp(bgp: BgpSettings) -> Iterator[Path]:
    head = f"router bgp {bgp.local_asn}"
    yield (head,)
    if bgp.router_id is not None:
        yield (head, f"bgp router-id {bgp.router_id}")
    yield (head, "no bgp ebgp-requires-policy")
    yield (head, "bgp disable-ebgp-connected-route-check")
    if bgp.best_path_multipath_relax:
        yield (head, "bgp bestpath as-path multipath-relax")
    for n in bgp.neighbors:
        yield from ((head, line) for line in _neighbor(n, bgp.local_asn))
    af = (head, AF_IPV4)
    yield af
    for net in bgp.networks:
        yield (*af, f"network {net}")
    yield (*af, f"redistribute kernel route-map {BGP_RM}")
    yield (*af, f"redistribute static route-map {LAN_NAT_RM}")
    if bgp.redistribute_ospf:
        yield (*af, "redistribute ospf")
    for n in bgp.neighbors:
        if n.inbound_filter:
            yield (*af, f"neighbor {n.ip} route-map {n.inbound_filter} in")
        if n.outbound_filter:
            yield (*af, f"neighbor {n.ip} route-map {n.outbound_filter} out")
        for kind in _COMMUNITY_OFF[n.send_community]:
            word = "" if kind == "standard" else f" {kind}"
            yield (*af, f"no neighbor {n.ip} send-community{word}")


def _neighbor(n: BgpNeighbor, local_asn: int) -> Iterator[str]:
    yield f"neighbor {n.ip} remote-as {n.remote_asn}"
    if len(n.password):
        yield f"neighbor {n.ip} password {n.password.reveal()}"
    yield f"neighbor {n.ip} disable-connected-check"
    if n.multi_hop > 1 and n.remote_asn != local_asn:  # FRR ignores it for iBGP
        yield f"neighbor {n.ip} ebgp-multihop {n.multi_hop}"
    if n.keepalive_interval is not None and n.hold_interval is not None:
        yield f"neighbor {n.ip} timers {n.keepalive_interval} {n.hold_interval}"
