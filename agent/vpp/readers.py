"""Read VPP's state back into plain values, for reconcile, supervision and the CLI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from agent.peers.spec import EspTransforms, IkeTransforms, TrafficSelector
from agent.vpp.client import VppClient, decode_ikev2_id

NO_INDEX = 0xFFFFFFFF
IKEV2_STATES = {
    0: "UNKNOWN", 1: "SA_INIT", 2: "DELETED", 3: "AUTH_FAILED", 4: "AUTHENTICATED",
    5: "NOTIFY_AND_DELETE", 6: "TS_UNACCEPTABLE", 7: "NO_PROPOSAL_CHOSEN",
}


class DevIdError(Exception):
    pass


_PCI = re.compile(r"^pci:([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-9a-fA-F]{1,2})$")


def resolve_dev_id(dev_id: str, configured: Mapping[str, str], names: list[str]) -> str:
    """The VPP interface name of a controller dev_id.

    The configuration's [interfaces] table wins; otherwise the PCI address maps to
    VPP's naming, which prints bus/slot/function in hex: pci:0000:00:03.00 <->
    GigabitEthernet0/3/0 (any speed prefix).
    """
    if dev_id in configured:
        name = configured[dev_id]
        if name not in names:
            raise DevIdError(
                f"dev_id {dev_id}: configured interface {name} does not exist in VPP "
                f"(VPP has {', '.join(names) or 'no interfaces'})"
            )
        return name
    m = _PCI.match(dev_id)
    if not m:
        raise DevIdError(
            f"dev_id {dev_id}: unknown device; expected pci:DDDD:BB:SS.F or an entry in the "
            "agent's [interfaces] table"
        )
    bus, slot, func = (int(g, 16) for g in m.groups()[1:])
    suffix = re.compile(rf"^[A-Za-z0-9]*Ethernet{bus:x}/{slot:x}/{func:x}$")
    matches = [n for n in names if suffix.match(n)]
    if len(matches) != 1:
        raise DevIdError(
            f"dev_id {dev_id}: no VPP interface named *Ethernet{bus:x}/{slot:x}/{func:x} "
            f"(VPP has {', '.join(names) or 'no interfaces'}); map it in [interfaces]"
        )
    return matches[0]


@dataclass(frozen=True)
class InterfaceInfo:
    sw_if_index: int
    name: str
    admin_up: bool
    mtu: int


@dataclass(frozen=True)
class TunnelInfo:
    instance: int
    sw_if_index: int
    src: IPv4Address
    dst: IPv4Address


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    auth_method: int
    auth_data: bytes
    local_id: tuple[int, str]
    remote_id: tuple[int, str]
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    ike: IkeTransforms
    esp: EspTransforms
    lifetime: int
    tun_itf: int
    responder_sw_if_index: int
    responder_addr: IPv4Address | None
    udp_encap: bool


@dataclass
class Observed:
    """A consistent-enough read of what the agent manages in VPP."""

    interfaces: dict[int, InterfaceInfo] = field(default_factory=dict)
    addresses: dict[int, set[IPv4Interface]] = field(default_factory=dict)
    tunnels: dict[int, TunnelInfo] = field(default_factory=dict)  # by instance
    profiles: dict[str, ProfileInfo] = field(default_factory=dict)
    routes: dict[int, set[IPv4Network]] = field(default_factory=dict)  # via sw_if_index
    mss: dict[int, int] = field(default_factory=dict)
    lcp: dict[int, str] = field(default_factory=dict)

    def index_of(self, name: str) -> int | None:
        for info in self.interfaces.values():
            if info.name == name:
                return info.sw_if_index
        return None


def _ts(ts: Any) -> TrafficSelector:
    return TrafficSelector(int(ts.protocol_id), int(ts.start_port), int(ts.end_port),
                           IPv4Address(str(ts.start_addr)), IPv4Address(str(ts.end_addr)))


def profile_info(p: Any) -> ProfileInfo:
    addr = p.responder.addr
    return ProfileInfo(
        name=str(p.name),
        auth_method=int(p.auth.method),
        auth_data=bytes(p.auth.data),
        local_id=decode_ikev2_id(p.loc_id),
        remote_id=decode_ikev2_id(p.rem_id),
        local_ts=_ts(p.loc_ts),
        remote_ts=_ts(p.rem_ts),
        ike=IkeTransforms(int(p.ike_ts.crypto_alg), int(p.ike_ts.crypto_key_size),
                          int(p.ike_ts.integ_alg), int(p.ike_ts.prf_alg), int(p.ike_ts.dh_group)),
        esp=EspTransforms(int(p.esp_ts.crypto_alg), int(p.esp_ts.crypto_key_size),
                          int(p.esp_ts.integ_alg)),
        lifetime=int(p.lifetime),
        tun_itf=int(p.tun_itf),
        responder_sw_if_index=int(p.responder.sw_if_index),
        responder_addr=IPv4Address(str(addr)) if str(addr) not in ("", "0.0.0.0", "::") else None,
        udp_encap=bool(p.udp_encap),
    )


async def read_interfaces(vpp: VppClient) -> dict[int, InterfaceInfo]:
    details = await vpp.dump("sw_interface_dump", sw_if_index=NO_INDEX, name_filter_valid=False)
    return {
        int(d.sw_if_index): InterfaceInfo(int(d.sw_if_index), str(d.interface_name),
                                          bool(int(d.flags) & 1), int(d.mtu[0]))
        for d in details
    }


async def read_addresses(vpp: VppClient, sw_if_index: int) -> set[IPv4Interface]:
    details = await vpp.dump("ip_address_dump", sw_if_index=sw_if_index, is_ipv6=False)
    return {IPv4Interface(str(d.prefix)) for d in details}


async def read_observed(vpp: VppClient, profile_prefix: str = "peer-") -> Observed:
    """Everything reconcile compares, read with pipelined dumps."""
    obs = Observed()
    coros: list[Any] = [
        read_interfaces(vpp),
        vpp.dump("ipip_tunnel_dump", sw_if_index=NO_INDEX),
        vpp.dump("ikev2_profile_dump"),
        vpp.dump("ip_route_dump", table={"table_id": 0, "is_ip6": False, "name": ""}),
    ]
    has_mss = vpp.has("mss_clamp_get")
    has_lcp = vpp.has("lcp_itf_pair_get")
    if has_mss:
        coros.append(vpp.dump("mss_clamp_get", cursor=0, sw_if_index=NO_INDEX))
    if has_lcp:
        coros.append(vpp.dump("lcp_itf_pair_get", cursor=0))
    results = await asyncio.gather(*coros)
    obs.interfaces, tunnels, profiles, routes = results[:4]
    rest = list(results[4:])
    for t in tunnels:
        tun = t.tunnel
        obs.tunnels[int(tun.instance)] = TunnelInfo(
            int(tun.instance), int(tun.sw_if_index), IPv4Address(str(tun.src)),
            IPv4Address(str(tun.dst)))
    for p in profiles:
        if str(p.profile.name).startswith(profile_prefix):
            info = profile_info(p.profile)
            obs.profiles[info.name] = info
    tunnel_indexes = {t.sw_if_index for t in obs.tunnels.values()}
    via_tunnel: list[tuple[int, IPv4Network]] = []
    for r in routes:
        route = r.route
        for path in route.paths[:int(route.n_paths)]:  # a shared route: one path per tunnel
            via = int(path.sw_if_index)
            if via in tunnel_indexes:
                via_tunnel.append((via, IPv4Network(str(route.prefix))))
    if has_mss:
        for m in rest.pop(0):
            if int(m.ipv4_direction):
                obs.mss[int(m.sw_if_index)] = int(m.ipv4_mss)
    if has_lcp:
        for pair in rest.pop(0):
            obs.lcp[int(pair.phy_sw_if_index)] = str(pair.host_if_name)
    addrs = await asyncio.gather(*(read_addresses(vpp, i) for i in sorted(tunnel_indexes)))
    for i, a in zip(sorted(tunnel_indexes), addrs, strict=True):
        obs.addresses[i] = a
    # VPP's dump holds every route of the table, also the ones it made itself for a
    # tunnel's address (connected /31, local /32, the other end's /32): those are not
    # routes the agent or a routing protocol added, so nothing may ever delete them
    for via, prefix in via_tunnel:
        if not any(prefix.subnet_of(a.network) for a in obs.addresses.get(via, ())):
            obs.routes.setdefault(via, set()).add(prefix)
    return obs


@dataclass(frozen=True)
class SaInfo:
    sa_index: int
    profile: str
    state: str
    ispi: int
    rspi: int
    children: int
    uptime: float | None = None
    child_spis: tuple[tuple[int, int], ...] = ()


def _id_key(ident: Any) -> tuple[int, bytes]:
    return int(ident.type), bytes(ident.data)[: int(ident.data_len)]


async def read_sas(vpp: VppClient) -> list[SaInfo]:
    """IKE SAs with their child SA count; uptime when VPP offers sa_v3.

    VPP 26.06's v2/v3 SA dumps look up each SA's profile without checking it: a
    half-open SA that an incoming IKE_SA_INIT created (any scanner can make one) has
    none yet, and the dump kills VPP (SIGSEGV). So the v1 dump, which does not look,
    comes first; while it shows such an SA (no IDs yet), the SAs are read from it.
    """
    v1 = await vpp.dump("ikev2_sa_dump")
    if any(int(s.sa.i_id.data_len) == 0 or int(s.sa.r_id.data_len) == 0 for s in v1):
        return await _read_sas_v1(vpp, v1)
    v3 = vpp.has("ikev2_sa_v3_dump")
    sas = await vpp.dump("ikev2_sa_v3_dump" if v3 else "ikev2_sa_v2_dump")
    children = await asyncio.gather(
        *(vpp.dump("ikev2_child_sa_dump", sa_index=int(s.sa.sa_index)) for s in sas))
    out = []
    for s, ch in zip(sas, children, strict=True):
        sa = s.sa
        out.append(SaInfo(
            sa_index=int(sa.sa_index), profile=str(sa.profile_name),
            state=IKEV2_STATES.get(int(sa.state), str(int(sa.state))),
            ispi=int(sa.ispi), rspi=int(sa.rspi), children=len(ch),
            uptime=float(sa.uptime) if v3 else None,
            child_spis=tuple((int(c.child_sa.i_spi), int(c.child_sa.r_spi)) for c in ch),
        ))
    return out


async def _read_sas_v1(vpp: VppClient, v1: list[Any]) -> list[SaInfo]:
    """The SAs from the v1 dump: no state and no profile name there, so the profile is
    the first whose IDs match (as VPP chooses it) and an SA with a child SA counts as
    established; half-open SAs (no IDs) belong to no peer yet and are left out."""
    profiles = [(str(p.profile.name), _id_key(p.profile.loc_id), _id_key(p.profile.rem_id))
                for p in await vpp.dump("ikev2_profile_dump")]
    named = []
    for s in v1:
        ids = (_id_key(s.sa.i_id), _id_key(s.sa.r_id))
        name = next((n for n, loc, rem in profiles if ids in ((loc, rem), (rem, loc))), None)
        if name is not None and ids[0][1] and ids[1][1]:
            named.append((name, s.sa))
    children = await asyncio.gather(
        *(vpp.dump("ikev2_child_sa_dump", sa_index=int(sa.sa_index)) for _, sa in named))
    return [SaInfo(sa_index=int(sa.sa_index), profile=name,
                   state="AUTHENTICATED" if ch else "UNKNOWN", ispi=int(sa.ispi),
                   rspi=int(sa.rspi), children=len(ch),
                   child_spis=tuple((int(c.child_sa.i_spi), int(c.child_sa.r_spi))
                                    for c in ch))
            for (name, sa), ch in zip(named, children, strict=True)]


def swap_spi(value: int, size: int = 8) -> int:
    """VPP's delete/rekey requests take the SPI byte-swapped relative to its dumps."""
    return int.from_bytes(value.to_bytes(size, "big"), "little")


@dataclass(frozen=True)
class VppSummary:
    version: str
    build_date: str
    interfaces: list[tuple[InterfaceInfo, list[str]]]
    ikev2_plugin: str | None
    profiles: int
    sas: int
    missing: dict[str, str]
    optional_present: list[str]


async def read_summary(vpp: VppClient) -> VppSummary:
    """What `peering-agent vpp-info` and `peerctl show vpp` print."""
    ver = await vpp.call("show_version")
    interfaces = await read_interfaces(vpp)
    addrs = await asyncio.gather(*(read_addresses(vpp, i) for i in interfaces))
    plugin = None
    if vpp.has("ikev2_plugin_get_version"):
        r = await vpp.call("ikev2_plugin_get_version")
        plugin = f"{r.major}.{r.minor}"
    profiles = await vpp.dump("ikev2_profile_dump") if vpp.has("ikev2_profile_dump") else []
    # the v1 dump: v2/v3 kill VPP 26.06 when it holds a half-open SA (see read_sas)
    sas = await vpp.dump("ikev2_sa_dump") if vpp.has("ikev2_sa_dump") else []
    check = vpp.table_check
    return VppSummary(
        version=str(ver.version),
        build_date=str(ver.build_date),
        interfaces=[(info, [str(a) for a in sorted(a_set)])
                    for info, a_set in zip(interfaces.values(), addrs, strict=True)],
        ikev2_plugin=plugin,
        profiles=len(profiles),
        sas=len(sas),
        missing=dict(check.missing),
        optional_present=sorted(check.optional_present),
    )


@dataclass(frozen=True)
class WanFacts:
    """One controller-known interface as VPP sees it (for registration and device info)."""

    dev_id: str
    name: str  # VPP interface name
    mac: str  # aa:bb:cc:dd:ee:ff, "" when VPP reports none
    mtu: int
    link_up: bool
    addr: IPv4Interface | None  # first IPv4 address
    gateway: str  # next hop of a default route through it, "" when none
    sw_if_index: int = -1


_ETH_NAME = re.compile(r"^[A-Za-z0-9]*Ethernet([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)$")


def pci_dev_id(name: str) -> str | None:
    """The controller dev_id of a PCI NIC by VPP's naming: GigabitEthernet0/3/0 ->
    pci:0000:00:03.00 (the inverse of `resolve_dev_id`)."""
    m = _ETH_NAME.match(name)
    if not m:
        return None
    bus, slot, func = (int(g, 16) for g in m.groups())
    return f"pci:0000:{bus:02x}:{slot:02x}.{func:02x}"


async def read_wan_facts(vpp: VppClient, configured: Mapping[str, str]) -> list[WanFacts]:
    """Facts of every dev_id of the [interfaces] table that VPP has, plus the PCI NICs
    VPP names by address, in dev_id order."""
    details = await vpp.dump("sw_interface_dump", sw_if_index=NO_INDEX, name_filter_valid=False)
    by_name = {str(d.interface_name): d for d in details}
    configured = dict(configured)
    mapped = set(configured.values())
    for name in by_name:
        dev_id = pci_dev_id(name)
        if dev_id is not None and name not in mapped:
            configured.setdefault(dev_id, name)
    routes = await vpp.dump("ip_route_dump", table={"table_id": 0, "is_ip6": False, "name": ""})
    gateways: dict[int, str] = {}
    for r in routes:
        route = r.route
        if str(route.prefix) != "0.0.0.0/0" or int(route.n_paths) < 1:
            continue
        path = route.paths[0]
        nh = str(getattr(path.nh.address, "ip4", "") or "")
        gateways.setdefault(int(path.sw_if_index), "" if nh == "0.0.0.0" else nh)
    out = []
    for dev_id in sorted(configured):
        d = by_name.get(configured[dev_id])
        if d is None:
            continue
        sw = int(d.sw_if_index)
        addrs = sorted(await read_addresses(vpp, sw))
        raw_mac = bytes(getattr(d.l2_address, "packed", d.l2_address) or b"")[:6]
        mac = ":".join(f"{b:02x}" for b in raw_mac) if any(raw_mac) else ""
        out.append(WanFacts(dev_id=dev_id, name=str(d.interface_name), mac=mac,
                            mtu=int(d.mtu[0]) or int(d.link_mtu), link_up=bool(int(d.flags) & 2),
                            addr=addrs[0] if addrs else None, gateway=gateways.get(sw, ""),
                            sw_if_index=sw))
    return out


async def read_tunnel_indexes(vpp: VppClient) -> dict[int, int]:
    """ipip instance (= controller tunnel id) -> sw_if_index."""
    tunnels = await vpp.dump("ipip_tunnel_dump", sw_if_index=NO_INDEX)
    return {int(t.tunnel.instance): int(t.tunnel.sw_if_index) for t in tunnels}
