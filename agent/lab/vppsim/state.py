"""VPP-like state of one vppsim instance, and its operations (no I/O).

Every operation validates first and changes nothing when it fails, raising
ApiError with VPP's own VNET_API_ERROR code (vnet/api_errno.h).
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.peers.spec import IdType

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NO_INDEX = 0xFFFFFFFF
IPSEC_UDP_PORT_NONE = 0xFFFF

# vnet/api_errno.h
UNSPECIFIED = -1
INVALID_SW_IF_INDEX = -2
NO_SUCH_FIB = -3
NO_SUCH_ENTRY = -6
INVALID_VALUE = -7
INVALID_REGISTRATION = -31
NO_PATHS_IN_ROUTE = -52
ADDRESS_NOT_FOUND_FOR_INTERFACE = -60
IF_ALREADY_EXISTS = -79
ADDRESS_IN_USE = -105
INSTANCE_IN_USE = -147

ADMIN_UP = 1
LINK_UP = 2

# ikev2_state enum
SA_INIT, AUTH_FAILED, AUTHENTICATED = 1, 3, 4
TS_UNACCEPTABLE, NO_PROPOSAL_CHOSEN = 6, 7
STATE_NAMES = {
    0: "UNKNOWN",
    1: "SA_INIT",
    2: "DELETED",
    3: "AUTH_FAILED",
    4: "AUTHENTICATED",
    5: "NOTIFY_AND_DELETE",
    6: "TS_UNACCEPTABLE",
    7: "NO_PROPOSAL_CHOSEN",
}
# VPP's names of the IKE ID types (the agent's, and IPv6 which it does not use)
ID_TYPES = {int(t): t.label for t in IdType} | {5: "ip6-addr"}

# vlib's log levels, most severe first (src/vlib/log.h), and its ring size.
LOG_LEVELS = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug", "disabled")
LOG_SIZE = 512
# What VPP 26.06's IKEv2 plugin logs (level err) when IKE_AUTH fails authentication.
AUTH_FAILED_LOG = "authentication failed, no matching profile found! ispi {ispi:x}"

# Key lengths in bytes as IKEv2 derives them (RFC 7296 2.14): PRF output size for
# SK_d/SK_p (VPP's default PRF is hmac-sha2-256), the integrity key size for SK_a,
# the cipher key plus a 4-byte salt for AES-GCM (IANA 20) for an IKE SA's SK_e; a
# child SA's SK_e is the key alone (VPP keeps its salt apart: ikev2.c, child keys).
_PRF_BYTES = {1: 16, 2: 20, 4: 16, 5: 32, 6: 48, 7: 64, 8: 16}
_INTEG_BYTES = {1: 16, 2: 20, 5: 16, 12: 32, 13: 48, 14: 64}
_AES_GCM_16 = 20


def _encr_key_bytes(t: dict[str, Any]) -> int:
    size = (t.get("crypto_key_size", 0) or 0) // 8
    return size + 4 if size and t.get("crypto_alg") == _AES_GCM_16 else size


def ike_sa_keys(ike: dict[str, Any]) -> dict[str, bytes]:
    """Random SK_* of the lengths an IKE SA with these transforms has."""
    prf = _PRF_BYTES.get(ike.get("prf_alg") or 5, 32)
    integ = _INTEG_BYTES.get(ike.get("integ_alg") or 0, 0)
    encr = _encr_key_bytes(ike) or 32
    sizes = {"sk_d": prf, "sk_ai": integ, "sk_ar": integ, "sk_ei": encr, "sk_er": encr,
             "sk_pi": prf, "sk_pr": prf}
    return {k: secrets.token_bytes(n) for k, n in sizes.items()}


class VppCrash(Exception):
    """What kills real VPP 26.06 (SIGSEGV); vppsim then behaves as a crashed and
    restarted VPP: every client is dropped and all state is lost."""


class ApiError(Exception):
    """A request failed with a VNET_API_ERROR code."""

    def __init__(self, retval: int, why: str, **reply: Any) -> None:
        super().__init__(why)
        self.retval = retval
        self.reply = reply


@dataclass
class Interface:
    sw_if_index: int
    name: str
    kind: str  # "local", "ethernet", "ipip"
    admin_up: bool = False
    link_mtu: int = 1500
    mtu: list[int] = field(default_factory=lambda: [1500, 0, 0, 0])
    mac: bytes = b"\x00" * 6
    dev_type: str = ""

    @property
    def flags(self) -> int:
        # No carrier to model: link follows admin (as VPP does for tunnels).
        if self.kind == "local" or not self.admin_up:
            return 0
        return ADMIN_UP | LINK_UP


@dataclass
class Tunnel:
    sw_if_index: int
    instance: int
    src: IpAddress
    dst: IpAddress
    table_id: int
    flags: int
    mode: int
    dscp: int


@dataclass
class Profile:
    index: int
    name: str
    auth_method: int = 0
    auth_hex: bool = False
    auth_data: bytes = b""
    loc_id: tuple[int, bytes] = (0, b"")
    rem_id: tuple[int, bytes] = (0, b"")
    loc_ts: dict[str, Any] | None = None
    rem_ts: dict[str, Any] | None = None
    responder_sw_if_index: int = NO_INDEX
    responder_addr: IpAddress | None = None
    responder_hostname: str = ""
    ike: dict[str, int] | None = None
    esp: dict[str, int] | None = None
    lifetime: int = 0
    lifetime_jitter: int = 0
    handover: int = 0
    lifetime_maxdata: int = 0
    tun_itf: int = NO_INDEX
    udp_encap: bool = False
    natt_disabled: bool = False
    ipsec_over_udp_port: int = IPSEC_UDP_PORT_NONE

    def snapshot(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "auth": {"method": self.auth_method, "hex": self.auth_hex, "data": self.auth_data},
            "loc_id": self.loc_id,
            "rem_id": self.rem_id,
            "loc_ts": self.loc_ts,
            "rem_ts": self.rem_ts,
            "responder": (self.responder_sw_if_index, self.responder_addr, self.responder_hostname),
            "ike": self.ike,
            "esp": self.esp,
            "lifetime": (
                self.lifetime,
                self.lifetime_jitter,
                self.handover,
                self.lifetime_maxdata,
            ),
            "tun_itf": self.tun_itf,
            "udp_encap": self.udp_encap,
            "natt_disabled": self.natt_disabled,
            "ipsec_over_udp_port": self.ipsec_over_udp_port,
        }


@dataclass
class ChildSa:
    index: int
    i_spi: int
    r_spi: int
    encr: tuple[int, int]  # (alg, key bits)
    integ: int
    created: float
    tsi: dict[str, Any] | None
    tsr: dict[str, Any] | None
    keys: dict[str, bytes]


@dataclass
class IkeSa:
    index: int
    profile: str
    state: int
    ispi: int
    rspi: int
    iaddr: IpAddress
    raddr: IpAddress
    i_id: tuple[int, bytes]
    r_id: tuple[int, bytes]
    ike: dict[str, int]
    created: float
    auth_time: float = 0.0
    children: list[ChildSa] = field(default_factory=list)
    n_rekey: int = 0
    keys: dict[str, bytes] = field(default_factory=dict)
    nonces: tuple[bytes, bytes] = (b"", b"")
    next_child: int = 0
    # VPP 26.06: an initiation is in no dump (and cannot be deleted by SPI) until the
    # peer's first answer; unanswered, it is retransmitted until its profile goes
    hidden: bool = False


@dataclass
class Route:
    table_id: int
    prefix: IpNetwork
    paths: list[dict[str, Any]]


def _path_identity(path: dict[str, Any]) -> tuple[Any, ...]:
    """What tells two paths apart in VPP 26.06 (fib_path_cmp_w_route_path): everything
    but the preference."""
    return tuple(sorted((k, str(v)) for k, v in path.items() if k != "preference"))


InterfaceListener = Callable[[int, int, bool], None]


def swap64(v: int) -> int:
    return int.from_bytes(v.to_bytes(8, "big"), "little")


def swap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "big"), "little")


class SimState:
    """Interfaces, addresses, tunnels, routes, IKEv2, linux-cp and MSS clamp."""

    def __init__(self, wan: list[tuple[str, str]], clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.boot = clock()
        self.interfaces: dict[int, Interface] = {}
        self._max_index = -1
        self.addresses: dict[int, list[IpInterface]] = {}
        # (version, prefixlen) -> network as int -> [(sw_if_index, address)]: VPP finds
        # overlapping interface prefixes through its FIB, not by scanning every interface
        self._by_net: dict[tuple[int, int], dict[int, list[tuple[int, IpInterface]]]] = {}
        self._tunnel_keys: dict[tuple[Any, Any, int, int], int] = {}
        self._instances: set[int] = set()
        self.unnumbered: dict[int, int] = {}
        self.tunnels: dict[int, Tunnel] = {}
        self.tables: dict[tuple[bool, int], str] = {
            (False, 0): "ipv4-VRF:0",
            (True, 0): "ipv6-VRF:0",
        }
        self.routes: dict[tuple[int, IpNetwork], Route] = {}
        self.profiles: dict[str, Profile] = {}
        self.next_profile_index = 0
        self.sas: dict[int, IkeSa] = {}
        self.next_sa_index = 0
        self.liveness = (30, 3)
        self.lcp: dict[int, dict[str, Any]] = {}
        self.mss: dict[int, tuple[int, int, int, int]] = {}
        # VPP 26.06 logs IKE through vlib's log classes (`show logging`); a message
        # is kept only when its level is at or above its class's level (default notice).
        self.log_levels: dict[str, int] = {}
        self.log_entries: list[tuple[float, int, str, str]] = []  # unix time, level, class, text
        self.listeners: list[InterfaceListener] = []
        self._add_interface(Interface(0, "local0", "local", link_mtu=0, mtu=[0, 0, 0, 0]))
        for name, cidr in wan:
            idx = len(self.interfaces)
            mac = bytes([0x02, 0xFE, 0, 0, 0, idx])
            itf = Interface(idx, name, "ethernet", admin_up=True, mac=mac, dev_type="dpdk")
            self._add_interface(itf)
            self._addr_add(idx, ipaddress.ip_interface(cidr))

    # -- helpers ---------------------------------------------------------
    def _add_interface(self, itf: Interface) -> None:
        self.interfaces[itf.sw_if_index] = itf
        self.addresses[itf.sw_if_index] = []
        self._max_index = max(self._max_index, itf.sw_if_index)
        for listener in list(self.listeners):  # VPP: API_SW_INTERFACE_ADD_EVENT
            listener(itf.sw_if_index, itf.flags, False)

    def _next_index(self) -> int:
        """VPP's interface pool hands out the lowest free index (a deleted tunnel's
        sw_if_index is reused by the next one)."""
        idx = 0
        while idx in self.interfaces:
            idx += 1
        return idx

    def _del_interface(self, sw_if_index: int) -> None:
        self._addr_clear(sw_if_index)
        del self.interfaces[sw_if_index]
        del self.addresses[sw_if_index]
        if sw_if_index == self._max_index:
            self._max_index = max(self.interfaces, default=-1)

    def _addr_add(self, sw_if_index: int, a: IpInterface) -> None:
        self.addresses[sw_if_index].append(a)
        nets = self._by_net.setdefault((a.version, a.network.prefixlen), {})
        nets.setdefault(int(a.network.network_address), []).append((sw_if_index, a))

    def _addr_remove(self, sw_if_index: int, a: IpInterface) -> None:
        self.addresses[sw_if_index].remove(a)
        nets = self._by_net[(a.version, a.network.prefixlen)]
        start = int(a.network.network_address)
        nets[start].remove((sw_if_index, a))
        if not nets[start]:
            del nets[start]

    def _addr_clear(self, sw_if_index: int) -> None:
        for a in list(self.addresses.get(sw_if_index, [])):
            self._addr_remove(sw_if_index, a)

    def _overlapping(self, sw_if_index: int, prefix: IpInterface) -> tuple[int, IpInterface] | None:
        """An address on the same FIB whose prefix overlaps `prefix`, other than a
        second address of the same subnet on the same interface."""
        v, bits = prefix.version, prefix.max_prefixlen
        length, n = prefix.network.prefixlen, int(prefix.network.network_address)
        end = n + (1 << (bits - length))
        for (kv, plen), nets in self._by_net.items():
            if kv != v or not nets:
                continue
            if plen <= length:  # a prefix containing the new one
                start = (n >> (bits - plen)) << (bits - plen) if plen else 0
                for other, a in nets.get(start, ()):
                    if not (other == sw_if_index and plen == length):
                        return other, a
            else:  # prefixes inside the new one
                for start, entries in nets.items():
                    if n <= start < end and entries:
                        return entries[0]
        return None

    def log(self, text: str, level: str = "debug", cls: str = "ikev2") -> None:
        """vlib_log: keep `text` if `cls` logs at `level` (IKE events are debug in VPP)."""
        n = LOG_LEVELS.index(level)
        if n <= self.log_levels.get(cls, LOG_LEVELS.index("notice")):
            self.log_entries.append((time.time(), n, cls, text))
            del self.log_entries[:-LOG_SIZE]

    def interface(self, sw_if_index: int, retval: int = INVALID_SW_IF_INDEX) -> Interface:
        itf = self.interfaces.get(sw_if_index)
        if itf is None:
            raise ApiError(retval, f"no interface with sw_if_index {sw_if_index}")
        return itf

    def set_admin(self, sw_if_index: int, up: bool) -> None:
        itf = self.interface(sw_if_index)
        before = itf.flags
        itf.admin_up = up
        if itf.flags != before:
            for listener in list(self.listeners):
                listener(sw_if_index, itf.flags, False)

    def profile(self, name: str) -> Profile:
        p = self.profiles.get(name)
        if p is None:
            raise ApiError(UNSPECIFIED, f"unknown profile {name!r}")
        return p

    # -- interfaces --------------------------------------------------------
    def set_flags(self, sw_if_index: int, flags: int) -> None:
        self.interface(sw_if_index)
        self.set_admin(sw_if_index, bool(flags & ADMIN_UP))

    def set_mtu(self, sw_if_index: int, mtu: list[int]) -> None:
        itf = self.interface(sw_if_index)
        if itf.kind == "local":
            raise ApiError(INVALID_VALUE, "local0 has no MTU")
        for value in mtu[:4]:
            if itf.kind == "ethernet" and value > 9216:
                raise ApiError(INVALID_VALUE, f"mtu {value} above the hardware maximum")
        for i, value in enumerate(mtu[:4]):
            if value:
                itf.mtu[i] = value

    def add_del_address(
        self, sw_if_index: int, is_add: bool, del_all: bool, prefix: IpInterface
    ) -> None:
        self.interface(sw_if_index)
        mine = self.addresses[sw_if_index]
        if del_all:
            self._addr_clear(sw_if_index)
            return
        if is_add:
            if prefix in mine:
                # VPP 26.06 refuses the same address twice
                raise ApiError(ADDRESS_IN_USE, f"{prefix} already on {sw_if_index}")
            clash = self._overlapping(sw_if_index, prefix)
            if clash is not None:
                raise ApiError(ADDRESS_IN_USE, f"{prefix} conflicts with {clash[1]} on {clash[0]}")
            self._addr_add(sw_if_index, prefix)
        else:
            if prefix not in mine:
                raise ApiError(ADDRESS_NOT_FOUND_FOR_INTERFACE, f"{prefix} not on {sw_if_index}")
            self._addr_remove(sw_if_index, prefix)

    def set_unnumbered(self, sw_if_index: int, unnumbered: int, is_add: bool) -> None:
        self.interface(sw_if_index)
        self.interface(unnumbered, -10)  # INVALID_SW_IF_INDEX_2
        if is_add:
            self.unnumbered[unnumbered] = sw_if_index
        else:
            self.unnumbered.pop(unnumbered, None)

    # -- ipip ---------------------------------------------------------------
    def ipip_add(self, t: dict[str, Any]) -> int:
        src, dst = t["src"], t["dst"]
        if src.version != dst.version:
            raise ApiError(INVALID_VALUE, "src and dst address families differ")
        key = (src, dst, t["table_id"], t["mode"])
        existing = self._tunnel_keys.get(key)
        if existing is not None:
            raise ApiError(IF_ALREADY_EXISTS, "tunnel exists", sw_if_index=existing)
        if (t["table_id"] != 0) and (src.version == 6, t["table_id"]) not in self.tables:
            raise ApiError(NO_SUCH_FIB, f"no table {t['table_id']}")
        used = self._instances
        instance = t["instance"]
        if instance == NO_INDEX:
            instance = 0
            while instance in used:
                instance += 1
        elif instance in used:
            raise ApiError(INSTANCE_IN_USE, f"instance {instance} in use")
        idx = self._next_index()
        self._add_interface(
            # VPP 26.06: an ipip tunnel's link MTU is 65516, its L3 MTU 9000
            Interface(idx, f"ipip{instance}", "ipip", link_mtu=65516, mtu=[9000, 0, 0, 0])
        )
        self.tunnels[idx] = Tunnel(
            idx, instance, src, dst, t["table_id"], t["flags"], t["mode"], t["dscp"]
        )
        self._tunnel_keys[key] = idx
        self._instances.add(instance)
        return idx

    def ipip_del(self, sw_if_index: int) -> None:
        if sw_if_index not in self.tunnels:
            raise ApiError(NO_SUCH_ENTRY, f"no ipip tunnel {sw_if_index}")
        if self.interfaces[sw_if_index].admin_up:
            self.set_admin(sw_if_index, False)
        tun = self.tunnels.pop(sw_if_index)
        self._tunnel_keys.pop((tun.src, tun.dst, tun.table_id, tun.mode), None)
        self._instances.discard(tun.instance)
        self._del_interface(sw_if_index)
        self._drop_lcp(sw_if_index)
        self.mss.pop(sw_if_index, None)
        for listener in list(self.listeners):
            listener(sw_if_index, 0, True)

    # -- ip -----------------------------------------------------------------
    def table_add_del(self, is_add: bool, is_ip6: bool, table_id: int, name: str) -> None:
        key = (is_ip6, table_id)
        if is_add:
            if key not in self.tables:
                self.tables[key] = name or f"ipv{6 if is_ip6 else 4}-VRF:{table_id}"
            return
        if table_id == 0:
            return  # the default table cannot go
        if key not in self.tables:
            raise ApiError(NO_SUCH_FIB, f"no table {table_id}")
        del self.tables[key]
        for rk in [
            k for k in self.routes if k[0] == table_id and k[1].version == (6 if is_ip6 else 4)
        ]:
            del self.routes[rk]

    def route_add_del(
        self,
        is_add: bool,
        is_multipath: bool,
        table_id: int,
        prefix: IpNetwork,
        paths: list[dict[str, Any]],
    ) -> None:
        if (prefix.version == 6, table_id) not in self.tables:
            raise ApiError(NO_SUCH_FIB, f"no table {table_id}")
        for p in paths:
            if p["sw_if_index"] != NO_INDEX and p["sw_if_index"] not in self.interfaces:
                raise ApiError(INVALID_SW_IF_INDEX, f"no interface {p['sw_if_index']}")
        key = (table_id, prefix)
        route = self.routes.get(key)
        if is_add:
            if not paths:
                raise ApiError(NO_PATHS_IN_ROUTE, "no paths")
            if route is None or not is_multipath:
                self.routes[key] = Route(table_id, prefix, list(paths))
            else:  # a path already there keeps its preference
                have = {_path_identity(p) for p in route.paths}
                route.paths.extend(p for p in paths if _path_identity(p) not in have)
            return
        if route is None:
            return  # VPP 26.06 answers 0 to deleting a route that is not there
        if is_multipath and paths:
            gone = {_path_identity(p) for p in paths}
            remaining = [p for p in route.paths if _path_identity(p) not in gone]
            if remaining:
                route.paths = remaining
                return
        del self.routes[key]

    # -- linux-cp / mss -------------------------------------------------
    def lcp_add_del(
        self, is_add: bool, sw_if_index: int, host_if_name: str, host_type: int, netns: str
    ) -> int:
        itf = self.interface(sw_if_index)
        if not is_add:
            if sw_if_index not in self.lcp:
                raise ApiError(INVALID_SW_IF_INDEX, f"no pair for {sw_if_index}")
            self._drop_lcp(sw_if_index)
            return NO_INDEX
        if sw_if_index in self.lcp:
            raise ApiError(-81, f"pair exists for {sw_if_index}")  # VALUE_EXIST
        if itf.kind == "ipip" and host_type == 0:
            raise ApiError(INVALID_VALUE, "TAP is not possible for a tunnel interface")
        host_idx = self._next_index()
        # The host-side interface (tap/tun) becomes a VPP interface too.
        self._add_interface(
            Interface(host_idx, f"tap{host_idx}" if host_type == 0 else f"tun{host_idx}", "virtio")
        )
        self.lcp[sw_if_index] = {
            "host_sw_if_index": host_idx,
            "host_if_name": host_if_name,
            "host_if_type": host_type,
            "netns": netns,
            "vif_index": 100 + host_idx,
        }
        return host_idx

    def _drop_lcp(self, sw_if_index: int) -> None:
        """linux-cp deletes the host tap/tun it created together with the pair."""
        pair = self.lcp.pop(sw_if_index, None)
        if pair is None:
            return
        host = pair["host_sw_if_index"]
        if host in self.interfaces:
            self._del_interface(host)

    def mss_set(self, sw_if_index: int, v4: int, v6: int, d4: int, d6: int) -> None:
        self.interface(sw_if_index)
        if d4 == 0 and d6 == 0:
            self.mss.pop(sw_if_index, None)
        else:
            self.mss[sw_if_index] = (v4, v6, d4, d6)

    # -- ikev2 ----------------------------------------------------------------
    def profile_add_del(self, name: str, is_add: bool) -> list[IkeSa]:
        if is_add:
            if name in self.profiles:
                raise ApiError(UNSPECIFIED, f"profile {name!r} exists")
            self.profiles[name] = Profile(self.next_profile_index, name)
            self.next_profile_index += 1
            return []
        self.profile(name)
        removed = [sa for sa in self.sas.values() if sa.profile == name]
        for sa in removed:
            self.remove_sa(sa.index)
        del self.profiles[name]
        return removed

    def set_auth(self, name: str, method: int, is_hex: bool, data: bytes) -> None:
        if not 0 < len(data) <= 1024:
            raise ApiError(INVALID_VALUE, "auth data must be 1..1024 bytes")
        p = self.profile(name)
        if method not in (1, 2):
            raise ApiError(UNSPECIFIED, f"unsupported auth method {method}")
        p.auth_method, p.auth_hex, p.auth_data = method, is_hex, bytes(data)

    def set_id(self, name: str, is_local: bool, id_type: int, data: bytes) -> None:
        if not 0 < len(data) <= 255:
            raise ApiError(INVALID_VALUE, "id data must be 1..255 bytes")
        p = self.profile(name)
        if id_type not in ID_TYPES:
            raise ApiError(UNSPECIFIED, f"unsupported identity type {id_type}")
        if (id_type == 1 and len(data) != 4) or (id_type == 5 and len(data) != 16):
            raise ApiError(UNSPECIFIED, "address identity has the wrong length")
        if is_local:
            p.loc_id = (id_type, bytes(data))
        else:
            p.rem_id = (id_type, bytes(data))

    def set_ts(self, name: str, ts: dict[str, Any]) -> None:
        p = self.profile(name)
        if ts["start_addr"].version != ts["end_addr"].version:
            raise ApiError(UNSPECIFIED, "IP address version mismatch")
        clean = {
            k: ts[k] for k in ("protocol_id", "start_port", "end_port", "start_addr", "end_addr")
        }
        if ts["is_local"]:
            p.loc_ts = clean
        else:
            p.rem_ts = clean

    def set_responder(
        self, name: str, sw_if_index: int, addr: IpAddress, hostname: str = ""
    ) -> None:
        p = self.profile(name)  # VPP 26.06 does not check sw_if_index here
        p.responder_sw_if_index, p.responder_addr, p.responder_hostname = (
            sw_if_index,
            addr,
            hostname,
        )

    def set_tunnel(self, name: str, sw_if_index: int) -> None:
        self.interface(sw_if_index)
        self.profile(name).tun_itf = sw_if_index

    def first_address(self, sw_if_index: int, version: int) -> IpAddress | None:
        for a in self.addresses.get(sw_if_index, []):
            if a.version == version:
                return a.ip
        return None

    def new_sa(self, p: Profile) -> IkeSa:
        """Create the SA_INIT SA of an initiation; the caller validated the profile."""
        assert p.responder_addr is not None
        iaddr = self.first_address(p.responder_sw_if_index, p.responder_addr.version)
        assert iaddr is not None
        sa = IkeSa(
            index=self.next_sa_index,
            profile=p.name,
            state=SA_INIT,
            ispi=secrets.randbits(64) | 1,
            rspi=0,
            iaddr=iaddr,
            raddr=p.responder_addr,
            i_id=p.loc_id,
            r_id=p.rem_id,
            ike=dict(p.ike or {}),
            created=self.clock(),
            nonces=(secrets.token_bytes(32), b""),
        )
        self.next_sa_index += 1
        self.sas[sa.index] = sa
        return sa

    def add_half_open(self, iaddr: IpAddress, raddr: IpAddress) -> IkeSa:
        """The SA an incoming IKE_SA_INIT leaves (a peer initiating, or any scanner):
        responder side, no IDs and no profile until IKE_AUTH, which may never come."""
        sa = IkeSa(index=self.next_sa_index, profile="", state=SA_INIT,
                   ispi=secrets.randbits(64) | 1, rspi=secrets.randbits(64) | 1,
                   iaddr=iaddr, raddr=raddr, i_id=(0, b""), r_id=(0, b""), ike={},
                   created=self.clock())
        self.next_sa_index += 1
        self.sas[sa.index] = sa
        return sa

    def add_child(self, sa: IkeSa, p: Profile) -> ChildSa:
        esp = p.esp or {}
        key_bytes = (esp.get("crypto_key_size", 0) or 0) // 8  # a child's salt is kept apart
        integ_bytes = _INTEG_BYTES.get(esp.get("integ_alg") or 0, 0)
        child = ChildSa(
            index=sa.next_child,
            i_spi=secrets.randbits(32) | 1,
            r_spi=secrets.randbits(32) | 1,
            encr=(esp.get("crypto_alg", 0), esp.get("crypto_key_size", 0)),
            integ=esp.get("integ_alg", 0),
            created=self.clock(),
            tsi=p.loc_ts,
            tsr=p.rem_ts,
            keys={
                "sk_ei": secrets.token_bytes(key_bytes),
                "sk_er": secrets.token_bytes(key_bytes),
                "sk_ai": secrets.token_bytes(integ_bytes),
                "sk_ar": secrets.token_bytes(integ_bytes),
            },
        )
        sa.next_child += 1
        sa.children.append(child)
        if p.tun_itf in self.interfaces:
            self.set_admin(p.tun_itf, True)
        return child

    def remove_child(self, sa: IkeSa, child: ChildSa) -> None:
        sa.children.remove(child)
        if not sa.children:
            self._tunnel_down(sa.profile)

    def remove_sa(self, sa_index: int) -> None:
        sa = self.sas.pop(sa_index, None)
        if sa is not None and sa.children:
            sa.children.clear()
            self._tunnel_down(sa.profile)

    def _tunnel_down(self, profile_name: str) -> None:
        p = self.profiles.get(profile_name)
        if p is None or p.tun_itf not in self.interfaces:
            return
        still_up = any(s.children for s in self.sas.values() if s.profile == profile_name)
        if not still_up:
            self.set_admin(p.tun_itf, False)

    def visible_sas(self) -> list[IkeSa]:
        """The SAs VPP's dumps and CLI show (not initiations still waiting for an answer)."""
        return [sa for sa in self.sas.values() if not sa.hidden]

    def find_sa_by_request_spi(self, ispi: int) -> IkeSa:
        want = swap64(ispi)
        for sa in self.visible_sas():
            if sa.ispi == want:
                return sa
        raise ApiError(UNSPECIFIED, "IKE SA not found")

    def find_child_by_request_spi(self, ispi: int) -> tuple[IkeSa, ChildSa]:
        want = swap32(ispi)
        for sa in self.sas.values():
            for child in sa.children:
                if child.i_spi == want:
                    return sa, child
        raise ApiError(UNSPECIFIED, "Child SA not found")

    # -- whole state ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Deterministic view for before/after equality (no SPIs/keys/times)."""
        return {
            "interfaces": {
                i: (itf.name, itf.kind, itf.flags, itf.link_mtu, tuple(itf.mtu))
                for i, itf in sorted(self.interfaces.items())
            },
            "addresses": {i: sorted(str(a) for a in v) for i, v in sorted(self.addresses.items())},
            "unnumbered": dict(sorted(self.unnumbered.items())),
            "tunnels": {
                i: (t.instance, str(t.src), str(t.dst), t.table_id, t.flags, t.mode, t.dscp)
                for i, t in sorted(self.tunnels.items())
            },
            "tables": sorted(self.tables.items()),
            "routes": sorted(
                (r.table_id, str(r.prefix), repr(r.paths)) for r in self.routes.values()
            ),
            "profiles": {n: p.snapshot() for n, p in sorted(self.profiles.items())},
            "sas": sorted(
                (sa.profile, STATE_NAMES[sa.state], len(sa.children)) for sa in self.visible_sas()
            ),
            "liveness": self.liveness,
            "lcp": dict(sorted(self.lcp.items())),
            "mss": dict(sorted(self.mss.items())),
        }
