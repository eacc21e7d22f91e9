"""The desired routing of the device: plain data the renderer turns into FRR lines.

The controller's routing messages (section 12 of the protocol reference) arrive as
JSON params; `from_params` builds this model from what a store recorded, so the
caller needs to know nothing of FRR. Parsing is strict: a value FRR would refuse
(a bad prefix, an ASN that is not a number) is a `RoutingModelError` naming the
field, raised before anything is applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from agent.secret import Secret

SEND_COMMUNITIES = ("all", "both", "extended", "large", "standard", "")
DEFAULT_AREA = "0.0.0.0"


class RoutingModelError(ValueError):
    """A routing parameter that cannot become FRR configuration; names the field."""


@dataclass(frozen=True)
class PeerRouting:
    """One peer tunnel's routing, from `add-tunnel`'s `peer` object."""

    tunnel_id: int
    interface: str  # the tunnel's Linux interface (the linux-cp TUN, `peer<N>`)
    addr: IPv4Interface  # device end of the /31
    routing: str = "ospf"  # "ospf" | "bgp"
    ospf_cost: int | None = None
    ospf_area: str = DEFAULT_AREA  # dotted quad; see README "Routing over peers"


@dataclass(frozen=True)
class OspfSettings:
    """`add-ospf`: router id and redistribution (`custom` is not applied, as in flexiagent)."""

    router_id: IPv4Address | None = None
    redistribute_bgp: bool = False


@dataclass(frozen=True)
class BgpNeighbor:
    ip: IPv4Address
    remote_asn: int
    password: Secret = field(default_factory=lambda: Secret(""))
    inbound_filter: str = ""
    outbound_filter: str = ""
    keepalive_interval: int | None = None
    hold_interval: int | None = None
    send_community: str = "all"
    multi_hop: int = 1


@dataclass(frozen=True)
class BgpSettings:
    """`add-routing-bgp` / `modify-routing-bgp`."""

    local_asn: int
    router_id: IPv4Address | None = None
    redistribute_ospf: bool = False
    best_path_multipath_relax: bool = False
    neighbors: tuple[BgpNeighbor, ...] = ()
    networks: tuple[IPv4Network, ...] = ()


@dataclass(frozen=True)
class FilterRule:
    route: IPv4Network
    action: str  # "allow" | "deny"
    next_hop: IPv4Address | None = None
    priority: int = 0


@dataclass(frozen=True)
class RoutingFilter:
    """`add-routing-filter`: a route-map and its access-lists; the 0.0.0.0/0 rule is the default."""

    name: str
    description: str = ""
    rules: tuple[FilterRule, ...] = ()


@dataclass(frozen=True)
class StaticRoute:
    """`add-route`: FRR only sees it through the redistribution access-lists."""

    addr: IPv4Network
    via: IPv4Address
    redistribute_ospf: bool = False
    redistribute_bgp: bool = False


@dataclass(frozen=True)
class OspfNetwork:
    """An interface (`add-interface` with `routing: ['OSPF']`) whose subnet OSPF
    advertises, as flexiagent's `network <subnet> area <area>`."""

    network: IPv4Network
    area: str = "0.0.0.0"


@dataclass(frozen=True)
class RoutingModel:
    peers: tuple[PeerRouting, ...] = ()
    ospf_networks: tuple[OspfNetwork, ...] = ()
    ospf: OspfSettings | None = None
    bgp: BgpSettings | None = None
    filters: tuple[RoutingFilter, ...] = ()
    routes: tuple[StaticRoute, ...] = ()


# -- parsing the controller's params ---------------------------------------------------------


def peer_routing(tunnel_id: int, peer: Mapping[str, Any], interface: str | None = None
                 ) -> PeerRouting:
    """From `add-tunnel` params' `peer` object; the interface defaults to `peer<N>`."""
    where = f"add-tunnel {tunnel_id} peer"
    routing = str(peer.get("routing") or "ospf")
    if routing not in ("ospf", "bgp"):
        raise RoutingModelError(f"{where}.routing: {routing!r} is not ospf or bgp")
    # flexiManage sends its OSPF fields for BGP peers too; flexiagent reads them only
    # for OSPF (fwtranslate_add_tunnel.py), so a BGP peer's are no reason to fail
    ospf = routing == "ospf"
    cost = peer.get("ospf-cost") if ospf else None
    return PeerRouting(
        tunnel_id=tunnel_id,
        interface=interface or f"peer{tunnel_id}",
        addr=_interface(f"{where}.addr", peer.get("addr")),
        routing=routing,
        ospf_cost=None if cost in (None, "") else _int(f"{where}.ospf-cost", cost, 1, 65535),
        ospf_area=ospf_area(f"{where}.ospf-area", peer.get("ospf-area") if ospf else None),
    )


def ospf_area(where: str, value: object) -> str:
    """An OSPF area as FRR prints it (dotted quad); absent or empty is the backbone."""
    if value in (None, ""):
        return DEFAULT_AREA
    text = str(value).strip()
    if text.isdigit():
        number = int(text)
        if number > 0xFFFFFFFF:
            raise RoutingModelError(f"{where}: {text} is not an OSPF area id")
        return str(IPv4Address(number))
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise RoutingModelError(f"{where}: {text!r} is not an OSPF area id") from None


def ospf_network(params: Mapping[str, Any]) -> OspfNetwork | None:
    """The OSPF network of an `add-interface` with `routing` holding "OSPF" and a static
    address; None otherwise (a DHCP address is not known when the job comes)."""
    routing = params.get("routing") or ()
    if isinstance(routing, str):
        routing = [routing]
    if not any(str(r).upper() == "OSPF" for r in routing):
        return None
    where = f"add-interface {params.get('dev_id')}"
    addr = params.get("addr")
    if addr in (None, ""):
        return None
    try:
        network = IPv4Interface(str(addr)).network
    except ValueError:
        raise RoutingModelError(f"{where}.addr: {addr!r} is not an IPv4 address/prefix") \
            from None
    ospf = params.get("ospf")
    area = ospf.get("area") if isinstance(ospf, Mapping) else None
    return OspfNetwork(network, ospf_area(f"{where}.ospf.area", area))


def ospf_settings(params: Mapping[str, Any]) -> OspfSettings:
    return OspfSettings(
        router_id=_opt_address("add-ospf.routerId", params.get("routerId")),
        redistribute_bgp=bool(params.get("redistributeBgp", False)),
    )


def bgp_settings(params: Mapping[str, Any]) -> BgpSettings:
    where = "add-routing-bgp"
    neighbors = []
    for i, n in enumerate(params.get("neighbors") or ()):
        w = f"{where}.neighbors[{i}]"
        raw = n.get("sendCommunity")
        community = "all" if raw is None else str(raw)
        if community not in SEND_COMMUNITIES:
            raise RoutingModelError(f"{w}.sendCommunity: {community!r} is not one of "
                                    + ", ".join(repr(c) for c in SEND_COMMUNITIES))
        keepalive = n.get("keepaliveInterval")
        hold = n.get("holdInterval")
        neighbors.append(BgpNeighbor(
            ip=_address(f"{w}.ip", n.get("ip")),
            remote_asn=_int(f"{w}.remoteAsn", n.get("remoteAsn"), 1, 0xFFFFFFFF),
            password=_password(f"{w}.password", n.get("password")),
            inbound_filter=_name(f"{w}.inboundFilter", n.get("inboundFilter") or ""),
            outbound_filter=_name(f"{w}.outboundFilter", n.get("outboundFilter") or ""),
            keepalive_interval=None if keepalive in (None, "")
            else _int(f"{w}.keepaliveInterval", keepalive, 0, 65535),
            hold_interval=None if hold in (None, "")
            else _int(f"{w}.holdInterval", hold, 0, 65535),
            send_community=community,
            multi_hop=_int(f"{w}.multiHop", n.get("multiHop") or 1, 1, 255),
        ))
    ips = [n.ip for n in neighbors]
    if len(set(ips)) != len(ips):
        raise RoutingModelError(f"{where}.neighbors: an ip appears twice")
    return BgpSettings(
        local_asn=_int(f"{where}.localAsn", params.get("localAsn"), 1, 0xFFFFFFFF),
        router_id=_opt_address(f"{where}.routerId", params.get("routerId")),
        redistribute_ospf=bool(params.get("redistributeOspf", False)),
        best_path_multipath_relax=bool(params.get("bestPathMultipathRelax", False)),
        neighbors=tuple(neighbors),
        networks=tuple(_network(f"{where}.networks[{i}].ipv4", n.get("ipv4"))
                       for i, n in enumerate(params.get("networks") or ())),
    )


MODIFY_BGP_KEYS = ("localAsn", "neighbors", "networks", "redistributeOspf")


def merge_modify_bgp(stored: Mapping[str, Any], modify: Mapping[str, Any]) -> dict[str, Any]:
    """The `add-routing-bgp` params after a `modify-routing-bgp`, which carries only
    {localAsn, neighbors, networks, redistributeOspf}; the rest stays as stored."""
    return {**stored, **{k: modify[k] for k in MODIFY_BGP_KEYS if k in modify}}


def routing_filter(params: Mapping[str, Any]) -> RoutingFilter:
    name = _name("add-routing-filter.name", params.get("name"))
    if not name:
        raise RoutingModelError("add-routing-filter.name: missing")
    rules = []
    for i, r in enumerate(params.get("rules") or ()):
        w = f"add-routing-filter {name}.rules[{i}]"
        action = str(r.get("action"))
        if action not in ("allow", "deny"):
            raise RoutingModelError(f"{w}.action: {action!r} is not allow or deny")
        rules.append(FilterRule(
            route=_network(f"{w}.route", r.get("route")),
            action=action,
            next_hop=_opt_address(f"{w}.nextHop", r.get("nextHop")),
            priority=_int(f"{w}.priority", r.get("priority", 0), -(2**31), 2**31),
        ))
    if not any(r.route.prefixlen == 0 for r in rules):
        raise RoutingModelError(f"add-routing-filter {name}.rules: the 0.0.0.0/0 rule "
                                "(the default action) is missing")
    # FRR joins the description's words with single spaces (lib/routemap_cli.c); so does
    # the agent, or the read-back would never match (and no newline reaches vtysh -f)
    description = " ".join(str(params.get("description") or "").split())
    return RoutingFilter(name=name, description=description,
                         rules=tuple(rules))


def static_route(params: Mapping[str, Any]) -> StaticRoute:
    return StaticRoute(
        addr=_network("add-route.addr", params.get("addr")),
        via=_address("add-route.via", params.get("via")),
        redistribute_ospf=bool(params.get("redistributeViaOSPF", False)),
        redistribute_bgp=bool(params.get("redistributeViaBGP", False)),
    )


def from_params(*, peers: Iterable[PeerRouting] = (),
                ospf: Mapping[str, Any] | None = None,
                bgp: Mapping[str, Any] | None = None,
                filters: Iterable[Mapping[str, Any]] = (),
                routes: Iterable[Mapping[str, Any]] = (),
                interfaces: Iterable[Mapping[str, Any]] = ()) -> RoutingModel:
    """The whole desired routing from the recorded params of each message kind."""
    networks = {n: None for i in interfaces if (n := ospf_network(i)) is not None}
    return RoutingModel(
        peers=tuple(sorted(peers, key=lambda p: p.tunnel_id)),
        ospf_networks=tuple(sorted(networks, key=lambda n: (int(n.network.network_address),
                                                             n.network.prefixlen, n.area))),
        ospf=None if ospf is None else ospf_settings(ospf),
        bgp=None if bgp is None else bgp_settings(bgp),
        filters=tuple(routing_filter(f) for f in filters),
        routes=tuple(static_route(r) for r in routes),
    )


# -- field helpers ---------------------------------------------------------------------------


def _int(where: str, value: object, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RoutingModelError(f"{where}: {value!r} is not an integer") from None
    if not low <= number <= high:
        raise RoutingModelError(f"{where}: {number} is outside {low}..{high}")
    return number


def _address(where: str, value: object) -> IPv4Address:
    try:
        return IPv4Address(str(value))
    except ValueError:
        raise RoutingModelError(f"{where}: {value!r} is not an IPv4 address") from None


def _opt_address(where: str, value: object) -> IPv4Address | None:
    return None if value in (None, "") else _address(where, value)


def _interface(where: str, value: object) -> IPv4Interface:
    try:
        return IPv4Interface(str(value))
    except ValueError:
        raise RoutingModelError(f"{where}: {value!r} is not an IPv4 address/prefix") from None


def _network(where: str, value: object) -> IPv4Network:
    """A prefix with host bits cleared, as FRR stores and prints it."""
    try:
        return IPv4Network(str(value), strict=False)
    except ValueError:
        raise RoutingModelError(f"{where}: {value!r} is not an IPv4 prefix") from None


def _password(where: str, value: object) -> Secret:
    """FRR's `neighbor ... password WORD`: one word; the text itself is never shown."""
    text = str(value or "")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise RoutingModelError(f"{where}: contains blanks or control characters "
                                "(FRR takes one word)")
    return Secret(text)


def _name(where: str, value: object) -> str:
    """Route-map and access-list names become FRR words: no blanks."""
    text = str(value)
    if any(c.isspace() for c in text):
        raise RoutingModelError(f"{where}: {text!r} contains blanks")
    return text
