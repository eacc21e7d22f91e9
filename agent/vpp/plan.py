"""Peer connection spec -> ordered VPP operations, each with its undo. Pure code.

The executor runs the list; when a step fails it runs the undos of the steps
already done, newest first. Values VPP assigns at run time (the tunnel's
sw_if_index) travel as `Ref`s that the executor resolves from earlier replies,
so undo lists can re-create objects that get new indexes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from agent.peers.spec import IdType, PeerSpec, TrafficSelector
from agent.secret import Secret

AUTH_SHARED_KEY_MIC = 2
LCP_HOST_TUN = 1
MSS_DIR_RX_TX = 3
ADMIN_UP = 1
LIVENESS_PERIOD = 10
LIVENESS_RETRIES = 3


class CapabilityError(Exception):
    """The connected VPP cannot do what the job asks; the message says why."""


@dataclass(frozen=True)
class Ref:
    """A value known only once an earlier step ran (e.g. a tunnel's sw_if_index)."""

    name: str


@dataclass(frozen=True)
class Op:
    """One VPP write. `undo` reverses it; `produces` names the reply's `produces_field`
    (the sw_if_index of a new interface, the acl_index of a new ACL)."""

    message: str
    args: Mapping[str, Any]
    what: str
    undo: tuple[Op, ...] = ()
    produces: str | None = None
    tunnel_id: int | None = None
    produces_field: str = "sw_if_index"


@dataclass(frozen=True)
class VppFacts:
    """What the plan needs to know about the connected VPP."""

    wan_sw_if_index: int
    optional_messages: frozenset[str] = frozenset()
    has_lcp: bool = True
    has_mss_clamp: bool = True


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    warnings: tuple[str, ...] = field(default=())


def tunnel_ref(tunnel_id: int) -> Ref:
    return Ref(f"tun:{tunnel_id}")


def tunnel_instance(tunnel_id: int) -> int:
    """ipip<tunnel-id>: the operator sees the controller's tunnel number in VPP's names."""
    return tunnel_id


def host_if_name(tunnel_id: int) -> str:
    return f"peer{tunnel_id}"


def identity_bytes(kind: IdType, value: str) -> bytes:
    """VPP wants ip4-addr IDs as the 4 packed bytes, others as text."""
    if kind == IdType.IP4_ADDR:
        return IPv4Address(value).packed
    return value.encode("ascii")


def covering_prefixes(start: IPv4Address, end: IPv4Address) -> list[IPv4Network]:
    """The fewest prefixes that cover exactly start..end."""
    return list(ipaddress.summarize_address_range(start, end))


def route_prefixes(spec: PeerSpec, extra: Iterable[IPv4Address] = ()) -> list[IPv4Network]:
    """Prefixes routed into the tunnel: monitor /32s, plus the remote selector if policy-based."""
    prefixes: dict[IPv4Network, None] = {}
    for ip in (*spec.monitor_ips, *extra):
        prefixes[IPv4Network(f"{ip}/32")] = None
    if not spec.route_based:
        for net in covering_prefixes(spec.remote_ts.start_addr, spec.remote_ts.end_addr):
            prefixes[net] = None
    return sorted(prefixes, key=lambda n: (int(n.network_address), n.prefixlen))


def _ts_args(ts: TrafficSelector, is_local: bool) -> dict[str, Any]:
    return {
        "sa_index": 0,
        "child_sa_index": 0,
        "is_local": is_local,
        "protocol_id": ts.protocol,
        "start_port": ts.start_port,
        "end_port": ts.end_port,
        "start_addr": ts.start_addr,
        "end_addr": ts.end_addr,
    }


def route_op(spec_id: int, prefix: IPv4Network, is_add: bool) -> Op:
    """Add or remove this tunnel's path of `prefix`.

    Multipath add/remove: tunnels that route the same prefix (two peers monitoring
    8.8.8.8, a redundant pair to one remote subnet) each own one path of the shared
    VPP route, so removing one tunnel leaves the others' paths and the last removal
    deletes the route. The monitor sends each tunnel's probes out of the tunnel's own
    Linux interface, so probes never depend on which path VPP picks.
    """
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
                    {"sw_if_index": ref, "table_id": 0, "weight": 1, "preference": 0,
                     "type": 0, "flags": 0, "proto": 0, "n_labels": 0,
                     # papi packs this fixed array only when all 16 entries are given
                     "label_stack": [{}] * 16}
                ],
            },
        }

    verb = "add" if is_add else "delete"
    reverse = Op("ip_route_add_del", args(not is_add),
                 f"tunnel {spec_id}: {'delete' if is_add else 'add'} route {prefix}",
                 tunnel_id=spec_id)
    return Op("ip_route_add_del", args(is_add), f"tunnel {spec_id}: {verb} route {prefix}",
              undo=(reverse,), tunnel_id=spec_id)


def check_capabilities(spec: PeerSpec, facts: VppFacts) -> tuple[str, ...]:
    """Refuse what VPP would silently do differently; return warnings for benign gaps."""
    warnings: list[str] = []
    if spec.role == "responder":
        # VPP as responder picks from the peer's proposals whatever it implements,
        # ignoring the profile's transforms, and never rekeys (the peer does).
        warnings.append(
            f"tunnel {spec.tunnel_id}: as responder VPP accepts any proposal it implements, "
            "not only the configured IKE/ESP transforms, and never rekeys: the peer's "
            "proposals and lifetimes decide (configure them as exported)")
        if spec.pfs:
            # ...and it accepts a key exchange in the peer's rekeys: PFS is the peer's to do.
            warnings.append(
                f"tunnel {spec.tunnel_id}: PFS happens only if the peer proposes the DH group "
                "in its rekeys (VPP as responder accepts it but cannot require it)")
    elif spec.pfs and "ikev2_set_pfs" not in facts.optional_messages:
        raise CapabilityError(
            f"tunnel {spec.tunnel_id}: ikev2.pfs is true, but this VPP has no ikev2_set_pfs "
            "(stock VPP rekeys child SAs without a key exchange, so PFS would silently be off); "
            "set pfs to false or use a VPP build with PFS support"
        )
    if "ikev2_set_ike_lifetime" not in facts.optional_messages:
        warnings.append(
            f"tunnel {spec.tunnel_id}: VPP cannot set the IKE SA lifetime "
            f"(ike_lifetime {spec.ike_lifetime} s is not applied; VPP keeps its own IKE SA "
            "until it is deleted, the peer's lifetime decides IKE rekeys)"
        )
    if spec.tcp_mss_clamp and not facts.has_mss_clamp:
        raise CapabilityError(
            f"tunnel {spec.tunnel_id}: peer.tcp-mss-clamp {spec.tcp_mss_clamp} asked, but VPP "
            "lacks mss_clamp_enable_disable (is mss_clamp_plugin.so enabled?)"
        )
    return tuple(warnings)


def _paired(message: str, on: dict[str, Any], off: dict[str, Any], what_on: str,
            what_off: str, tid: int) -> Op:
    """An op whose undo is the same message with the opposite arguments."""
    undo = Op(message, off, f"tunnel {tid}: {what_off}", tunnel_id=tid)
    return Op(message, on, f"tunnel {tid}: {what_on}", undo=(undo,), tunnel_id=tid)


def address_op(tid: int, prefix: IPv4Interface, is_add: bool) -> Op:
    def args(add: bool) -> dict[str, Any]:
        return {"sw_if_index": tunnel_ref(tid), "is_add": add, "del_all": False,
                "prefix": prefix}

    add, delete = f"add address {prefix}", f"delete address {prefix}"
    return _paired("sw_interface_add_del_address", args(is_add), args(not is_add),
                   add if is_add else delete, delete if is_add else add, tid)


def lcp_op(tid: int, name: str, is_add: bool) -> Op:
    def args(add: bool) -> dict[str, Any]:
        return {"is_add": add, "sw_if_index": tunnel_ref(tid), "host_if_name": name,
                "host_if_type": LCP_HOST_TUN, "netns": ""}

    add, delete = f"create Linux interface {name}", f"delete Linux interface {name}"
    return _paired("lcp_itf_pair_add_del_v2", args(is_add), args(not is_add),
                   add if is_add else delete, delete if is_add else add, tid)


def mss_op(tid: int, mss: int) -> Op:
    """Clamp to `mss`; 0 disables the clamp (the undo of a clamp)."""
    def args(value: int) -> dict[str, Any]:
        return {"sw_if_index": tunnel_ref(tid), "ipv4_mss": value, "ipv6_mss": 0,
                "ipv4_direction": MSS_DIR_RX_TX if value else 0, "ipv6_direction": 0}

    return _paired("mss_clamp_enable_disable", args(mss), args(0),
                   f"clamp TCP MSS to {mss}" if mss else "disable MSS clamp",
                   "disable MSS clamp", tid)


def delete_tunnel_op(tid: int) -> Op:
    return Op("ipip_del_tunnel", {"sw_if_index": tunnel_ref(tid)},
              f"tunnel {tid}: delete ipip tunnel", tunnel_id=tid)


def delete_profile_op(tid: int, name: str, what: str = "") -> Op:
    return Op("ikev2_profile_add_del", {"name": name, "is_add": False},
              f"tunnel {tid}: {what or f'delete IKEv2 profile {name}'}", tunnel_id=tid)


def admin_up_op(tid: int) -> Op:
    ref = tunnel_ref(tid)
    return _paired("sw_interface_set_flags", {"sw_if_index": ref, "flags": ADMIN_UP},
                   {"sw_if_index": ref, "flags": 0}, "set admin-up", "set admin-down", tid)


def tunnel_ops(spec: PeerSpec, facts: VppFacts) -> list[Op]:
    """The route-based tunnel interface: ipip, /31, MTU, admin-up, MSS clamp, Linux side."""
    tid = spec.tunnel_id
    ref = tunnel_ref(tid)
    ops: list[Op] = [Op(
        "ipip_add_tunnel",
        {"tunnel": {"instance": tunnel_instance(tid), "src": spec.src, "dst": spec.dst,
                    "table_id": 0, "flags": 0, "mode": 0, "dscp": 0}},
        f"tunnel {tid}: create ipip tunnel {spec.src} -> {spec.dst}",
        undo=(delete_tunnel_op(tid),), produces=ref.name, tunnel_id=tid,
    )]
    if spec.mtu:
        ops.append(Op("sw_interface_set_mtu", {"sw_if_index": ref, "mtu": [spec.mtu, 0, 0, 0]},
                      f"tunnel {tid}: set MTU {spec.mtu}", tunnel_id=tid))
    ops.append(address_op(tid, spec.addr, True))
    ops.append(admin_up_op(tid))
    if spec.tcp_mss_clamp:
        ops.append(mss_op(tid, spec.tcp_mss_clamp))
    if facts.has_lcp:
        ops.append(lcp_op(tid, host_if_name(tid), True))
    return ops


def profile_ops(spec: PeerSpec, facts: VppFacts, *, initiate: bool = True) -> list[Op]:
    """The IKEv2 profile bound to the tunnel, and the initiation when we are initiator."""
    tid = spec.tunnel_id
    name = spec.profile_name
    ref = tunnel_ref(tid)

    def op(message: str, args: dict[str, Any], what: str) -> Op:
        return Op(message, {"name": name, **args}, f"tunnel {tid}: {what}", tunnel_id=tid)

    ops = [
        Op("ikev2_profile_add_del", {"name": name, "is_add": True},
           f"tunnel {tid}: create IKEv2 profile {name}", undo=(delete_profile_op(tid, name),),
           tunnel_id=tid),
        op("ikev2_profile_set_auth",
           {"auth_method": AUTH_SHARED_KEY_MIC, "is_hex": False,
            "data_len": len(spec.psk.reveal().encode()), "data": spec.psk},
           "set PSK authentication"),
    ]
    for is_local, ident in ((True, spec.local_id), (False, spec.remote_id)):
        data = identity_bytes(ident.type, ident.value)
        side = "local" if is_local else "remote"
        ops.append(op("ikev2_profile_set_id",
                      {"is_local": is_local, "id_type": int(ident.type), "data_len": len(data),
                       "data": data},
                      f"set {side} ID {ident.type.name.lower().replace('_', '-')} {ident.value}"))
    ops.append(op("ikev2_profile_set_ts", {"ts": _ts_args(spec.local_ts, True)},
                  "set local traffic selector"))
    ops.append(op("ikev2_profile_set_ts", {"ts": _ts_args(spec.remote_ts, False)},
                  "set remote traffic selector"))
    ike = spec.ike
    ops.append(op("ikev2_set_ike_transforms",
                  {"tr": {"crypto_alg": ike.crypto_alg, "crypto_key_size": ike.crypto_key_size,
                          "integ_alg": ike.integ_alg, "prf_alg": ike.prf_alg,
                          "dh_group": ike.dh_group}},
                  "set IKE transforms"))
    esp = spec.esp
    ops.append(op("ikev2_set_esp_transforms",
                  {"tr": {"crypto_alg": esp.crypto_alg, "crypto_key_size": esp.crypto_key_size,
                          "integ_alg": esp.integ_alg}},
                  "set ESP transforms"))
    lifetime, jitter, handover = child_sa_lifetime(spec.child_lifetime)
    ops.append(op("ikev2_set_sa_lifetime",
                  {"lifetime": lifetime, "lifetime_jitter": jitter,
                   "handover": handover, "lifetime_maxdata": 0},
                  f"set child SA lifetime {spec.child_lifetime} s (rekey after "
                  f"{lifetime}-{lifetime + jitter} s, retried every {handover} s)"))
    if "ikev2_set_ike_lifetime" in facts.optional_messages:
        ops.append(op("ikev2_set_ike_lifetime", {"lifetime": spec.ike_lifetime},
                      f"set IKE SA lifetime {spec.ike_lifetime} s"))
    if spec.pfs and "ikev2_set_pfs" in facts.optional_messages:
        ops.append(op("ikev2_set_pfs", {"dh_group": spec.esp.dh_group}, "enable PFS"))
    if spec.udp_encap:
        ops.append(op("ikev2_profile_set_udp_encap", {}, "force UDP encapsulation"))
    ops.append(op("ikev2_set_tunnel_interface", {"sw_if_index": ref}, "bind the tunnel interface"))
    ops.append(op("ikev2_set_responder",
                  {"responder": {"sw_if_index": facts.wan_sw_if_index, "addr": spec.dst}},
                  f"set responder {spec.dst}"))
    if initiate and spec.role == "initiator":
        ops.append(op("ikev2_initiate_sa_init", {}, f"initiate IKE SA to {spec.dst}"))
    return ops


def child_sa_lifetime(lifetime: int) -> tuple[int, int, int]:
    """(lifetime, lifetime_jitter, handover) to program for a configured child SA lifetime.

    VPP (as initiator) rekeys at `lifetime` + random(0..`lifetime_jitter`) and retries
    a rekey every `handover` seconds. So the jitter (spreading the rekeys of many
    tunnels) and one retry interval are taken off the configured lifetime: the first
    rekey and its first retry both happen before the SA reaches that lifetime.
    """
    jitter = min(lifetime // 10, 300)
    handover = max(1, min(lifetime // 20, 60))
    return lifetime - jitter - handover, jitter, handover


def plan_add_ops(
    spec: PeerSpec, facts: VppFacts, extra_routes: Iterable[IPv4Address] = ()
) -> list[Op]:
    ops = tunnel_ops(spec, facts) + profile_ops(spec, facts)
    ops += [route_op(spec.tunnel_id, p, True) for p in route_prefixes(spec, extra_routes)]
    return ops


def plan_add(spec: PeerSpec, facts: VppFacts) -> Plan:
    warnings = check_capabilities(spec, facts)
    return Plan(tuple(plan_add_ops(spec, facts)), warnings)


def inverse(ops: Sequence[Op]) -> list[Op]:
    """The steps that take `ops` away, newest first, each undone by re-running its group.

    A group is an op with an undo plus the setters after it that have none (they
    live and die with their parent: the MTU with the tunnel, the PSK with the
    profile), so re-creating a deleted parent re-applies its setters too.
    """
    groups: list[list[Op]] = []
    for op in ops:
        if op.undo or not groups:
            groups.append([op])
        else:
            groups[-1].append(op)
    out: list[Op] = []
    for group in reversed(groups):
        parent = group[0]
        for u in parent.undo:
            out.append(Op(u.message, u.args, u.what, undo=tuple(group), tunnel_id=u.tunnel_id))
    return out


def plan_remove(spec: PeerSpec, facts: VppFacts,
                extra_routes: Iterable[IPv4Address] = ()) -> Plan:
    """Remove exactly what plan_add created (and the routes to resolved monitor
    names); each step's undo re-creates its part."""
    return Plan(tuple(inverse(plan_add_ops(spec, facts, extra_routes))))


def plan_cleanup(
    tunnel_id: int,
    tunnel_sw_if_index: int | None,
    *,
    profile: str | None,
    routes: Iterable[IPv4Network] = (),
    addresses: Iterable[IPv4Interface] = (),
    mss: bool = False,
    lcp_name: str | None = None,
) -> list[Op]:
    """Delete what VPP shows of a tunnel the agent owns but no longer wants (reconcile).

    Only the route deletions keep their undo; the rest is not re-created when a
    cleanup fails half-way (it is simply tried again).
    """
    tid = tunnel_id
    routes_off: list[Op] = []
    rest: list[Op] = []
    if tunnel_sw_if_index is not None:
        routes_off = [route_op(tid, p, False) for p in routes]
    if profile is not None:
        rest.append(delete_profile_op(tid, profile))
    if tunnel_sw_if_index is not None:
        if lcp_name is not None:
            rest.append(lcp_op(tid, lcp_name, False))
        if mss:
            rest.append(mss_op(tid, 0))
        rest += [address_op(tid, a, False) for a in addresses]
        rest.append(delete_tunnel_op(tid))
    return routes_off + [replace(op, undo=()) for op in rest]


def plan_routes(
    tunnel_id: int, before: Iterable[IPv4Network], after: Iterable[IPv4Network]
) -> Plan:
    """Only the route changes between two sets of prefixes through one tunnel."""
    old, new = set(before), set(after)
    key = lambda n: (int(n.network_address), n.prefixlen)  # noqa: E731
    ops = [route_op(tunnel_id, p, False) for p in sorted(old - new, key=key)]
    ops += [route_op(tunnel_id, p, True) for p in sorted(new - old, key=key)]
    return Plan(tuple(ops))


def liveness_op(period: int = LIVENESS_PERIOD, retries: int = LIVENESS_RETRIES) -> Op:
    """Global in VPP: one setting for every profile."""
    return Op("ikev2_profile_set_liveness", {"period": period, "max_retries": retries},
              f"set IKE liveness {period} s x {retries}")


# Values resolve() returns as they are; checked by exact type first, because the
# abstract-class isinstance checks below dominate the cost of applying many peers.
_ATOMS = frozenset({int, str, bool, bytes, float, type(None), IPv4Address, IPv4Interface,
                    IPv4Network})


def resolve(value: Any, refs: Mapping[str, int]) -> Any:
    """Replace Refs by their values and Secrets by their bytes, recursively."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        atoms = _ATOMS
        return {k: v if type(v) in atoms else resolve(v, refs) for k, v in value.items()}
    if isinstance(value, Ref):
        try:
            return refs[value.name]
        except KeyError:
            raise KeyError(f"no value yet for {value.name}") from None
    if isinstance(value, Secret):
        return value.reveal().encode()
    if isinstance(value, Mapping):
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value
