"""Read VPP's state back into plain values, for reconcile, supervision and the CLI."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from agent.vpp import kinds
from agent.vpp.cli_compat import shows_sa_details
from agent.vpp.client import VppClient, decode_ikev2_id
from agent.vpp.errors import VppApiError, VppError, vnet_error_name
from agent.vpp.kinds.base import (
    NO_INDEX,
    InterfaceInfo,
    Observed,
    read_address_list,
    read_addresses,
    read_interfaces,
)
from agent.vpp.kinds.profile import ProfileInfo, profile_info
from agent.vpp.kinds.route import (
    default_next_hops,
    gateways_of,
    path_next_hops,
    routes_via_tunnels,
)
from agent.vpp.kinds.tunnel import TunnelInfo

__all__ = [
    "NO_INDEX",
    "InterfaceInfo",
    "Observed",
    "ProfileInfo",
    "TunnelInfo",
    "default_next_hops",
    "profile_info",
    "read_address_list",
    "read_addresses",
    "read_default_paths",
    "read_gateways",
    "read_interfaces",
    "read_observed",
    "routes_via_tunnels",
]
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


DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


async def read_default_paths(vpp: VppClient) -> list[Any]:
    """The paths of table 0's default route, looked up alone: with 1000 peers the whole
    table is 5000 routes, half a second to dump and decode for this one entry. VPP
    always has the entry (a drop path when no default route is configured); any other
    error is raised: the route guard must not take a failed read for "no gateway"."""
    try:
        reply = await vpp.call("ip_route_lookup", table_id=0, exact=1, prefix=DEFAULT_ROUTE)
    except VppApiError as e:
        if vnet_error_name(e.retval) == "NO_SUCH_ENTRY":
            return []
        raise
    route = reply.route
    return list(route.paths[: int(route.n_paths)])


async def read_gateways(vpp: VppClient) -> set[IPv4Address]:
    """The next hops of the default routes of table 0."""
    return gateways_of(await read_default_paths(vpp))


async def read_observed(vpp: VppClient) -> Observed:
    """Everything reconcile compares: every kind read back (`agent.vpp.kinds.observe`)."""
    return await kinds.observe(vpp)


@dataclass(frozen=True)
class SaInfo:
    """One IKE SA as `ikev2_sa_dump` (v1) and `ikev2_child_sa_dump` show it, keys left out.

    v1 carries neither the profile nor the state, but it is the only SA dump that
    does not index the profile table: v2/v3 (and `show ikev2 sa details`) dereference
    profile ~0 for the half-open SA any incoming IKE_SA_INIT creates, and take
    VPP down. The state is derived (see `derive_state`).
    """

    sa_index: int
    state: str
    ispi: int
    rspi: int
    iaddr: IPv4Address | None
    raddr: IPv4Address | None
    i_id: tuple[int, str]
    r_id: tuple[int, str]
    children: int
    child_spis: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ChildInfo:
    i_spi: int
    r_spi: int
    keyed: bool  # VPP derived its keys: it installed the child SA


# What VPP logs (vlib_log, level err: kept by default) when IKE_AUTH fails authentication.
_AUTH_FAILED_LOG = re.compile(
    r"(?:authentication failed, no matching profile found|shared key mismatch|"
    r"cert verification failed)! ispi ([0-9a-f]+)")


def derive_state(children: list[ChildInfo], i_id_type: int, auth_failed: bool = False) -> str:
    """VPP's IKE SA state, as far as v1 + the child dump tell it.

    An initiator's SA always carries its first child from the initiation on: the
    responder's SPI appears once the peer accepted a proposal, the keys once VPP
    installed the child. A responder's half-open SA has no child and no peer ID yet.
    """
    if any(c.r_spi and c.keyed for c in children):
        return "AUTHENTICATED"
    if any(c.r_spi for c in children):
        # the peer chose a proposal but VPP did not install it: it narrowed the selectors
        return "TS_UNACCEPTABLE"
    if children:
        return "AUTH_FAILED" if auth_failed else "SA_INIT"
    return "SA_INIT" if i_id_type == 0 else "NO_CHILD"


def _addr(a: Any) -> IPv4Address | None:
    try:
        return IPv4Address(str(a))
    except ValueError:
        return None


async def cli_crash_refusal(vpp: VppClient, cmd: str) -> str | None:
    """Why `cmd` must not reach VPP now, or None: `show ikev2 sa details` while a
    half-open SA exists (see `shows_sa_details`). An IKE_SA_INIT arriving between
    this read and the command is not covered."""
    if not shows_sa_details(cmd):
        return None
    half_open = [sa for sa in await read_sas(vpp) if sa.i_id[0] == 0]
    if not half_open:
        return None
    sources = ", ".join(sorted({str(sa.iaddr) for sa in half_open}))
    return (f"not sent to VPP: {len(half_open)} half-open IKE SA(s) without a profile (from "
            f"{sources}) would make VPP 26.06's 'show ikev2 sa details' crash it; "
            "'show ikev2 sa' without details is safe, and 'peerctl show peers' shows "
            "each tunnel's SA")


async def read_sas(vpp: VppClient) -> list[SaInfo]:
    """Every IKE SA with its child SAs; VPP's log names authentication failures."""
    sas = await vpp.dump("ikev2_sa_dump")
    child_dumps = await asyncio.gather(
        *(vpp.dump("ikev2_child_sa_dump", sa_index=int(s.sa.sa_index)) for s in sas))
    kids: list[list[ChildInfo]] = []
    for ch in child_dumps:
        kids.append([ChildInfo(int(c.child_sa.i_spi), int(c.child_sa.r_spi),
                               bool(int(c.child_sa.keys.sk_ei_len)
                                    or int(c.child_sa.keys.sk_ai_len))) for c in ch])
    auth_failed: set[int] = set()
    if any(k and not any(c.r_spi for c in k) for k in kids):
        auth_failed = await _auth_failures(vpp)
    out = []
    for s, children in zip(sas, kids, strict=True):
        sa = s.sa
        ispi = int(sa.ispi)
        i_id = decode_ikev2_id(sa.i_id)
        out.append(SaInfo(
            sa_index=int(sa.sa_index),
            state=derive_state(children, i_id[0], ispi in auth_failed),
            ispi=ispi, rspi=int(sa.rspi), iaddr=_addr(sa.iaddr), raddr=_addr(sa.raddr),
            i_id=i_id, r_id=decode_ikev2_id(sa.r_id), children=sum(
                1 for c in children if c.r_spi and c.keyed),
            child_spis=tuple((c.i_spi, c.r_spi) for c in children if c.r_spi and c.keyed),
        ))
    return out


async def _auth_failures(vpp: VppClient) -> set[int]:
    """ispis VPP logged an authentication failure for (the only place it says so)."""
    try:
        text = await vpp.cli("show logging")
    except VppError:  # the log is a refinement; the SA state stands without it
        return set()
    return {int(m.group(1), 16) for m in _AUTH_FAILED_LOG.finditer(text)}


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
    # the preference of that default route's path: what linux-cp makes of the kernel
    # route's metric on a flexiEdge, and so the WAN's metric for the controller
    metric: int = 0


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
    gateways: dict[int, str] = {}
    metrics: dict[int, int] = {}
    paths = await read_default_paths(vpp)
    for path, (sw, nh) in zip(paths, path_next_hops(paths), strict=True):
        if sw not in metrics or int(path.preference) < metrics[sw]:
            gateways[sw], metrics[sw] = nh, int(path.preference)
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
                            sw_if_index=sw, metric=metrics.get(sw, 0)))
    return out


async def read_tunnel_indexes(vpp: VppClient) -> dict[int, int]:
    """ipip instance (= controller tunnel id) -> sw_if_index."""
    tunnels = await vpp.dump("ipip_tunnel_dump", sw_if_index=NO_INDEX)
    return {int(t.tunnel.instance): int(t.tunnel.sw_if_index) for t in tunnels}
