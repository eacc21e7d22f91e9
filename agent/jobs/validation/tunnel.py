"""The tunnel messages: add-tunnel into a `PeerSpec`, remove-tunnel and modify-tunnel
into the peer manager's changes."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Interface
from typing import Any, TypeVar

import structlog

from agent.iptext import parse_ipv4_interface
from agent.jobs.models import (
    AddTunnelParams,
    ModifyTunnelParams,
    PeerParams,
    RemoveTunnelParams,
    SelectorParams,
    describe_type,
)
from agent.jobs.validation.crypto import check_psk, esp_transforms, ike_transforms
from agent.jobs.validation.policy import (
    MSS_MIN,
    MTU_MAX,
    MTU_MIN,
    ROLES,
    ROUTINGS,
    TUNNEL_ID_MAX,
    TUNNEL_ID_MIN,
    ValidationPolicy,
)
from agent.jobs.validation.problems import (
    JobNotSupported,
    Problem,
    Problems,
    Shown,
    built,
    psk_elsewhere,
    raw_psks,
)
from agent.jobs.validation.shape import parse
from agent.jobs.validation.values import (
    identity,
    in_range,
    ipv4,
    is_ipv6,
    is_unicast,
    monitor_targets,
    selector,
)
from agent.peers.changes import ModifyTargets, RemovePeer
from agent.peers.spec import PeerSpec

log = structlog.get_logger(__name__)

_OSPF_COST = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


_T = TypeVar("_T")
# Parts of a job's requests validated once (`Shared`), by what they were made from.
Shared = dict[Hashable, Any]


def normalize_add_tunnel(params: Mapping[str, Any], policy: ValidationPolicy, *,
                         check_pasted: bool = True, shared: Shared | None = None) -> PeerSpec:
    """Validate `add-tunnel` params of a peer tunnel into a `PeerSpec`.

    Raises `JobNotSupported` for an add-tunnel without `peer` and `JobRejected`
    listing every problem otherwise. `check_pasted=False` leaves out the search for
    the PSK pasted into another field, for a caller that searches the whole job
    (`pasted_psk_problems`) and so covers this request too. `shared`: one dict for
    all of a job's requests (under one policy), so that the transforms and traffic
    selectors its peers have in common are validated once.
    """
    if isinstance(params, Mapping) and "peer" not in params:
        raise JobNotSupported(
            [
                Problem(
                    "peer",
                    "(missing)",
                    "add-tunnel without peer is not supported: this agent runs peer tunnels only",
                    "an add-tunnel with peer and ikev2",
                )
            ]
        )
    p = Problems(secrets=raw_psks(params))
    model = parse(AddTunnelParams, params, p)
    spec = None if model is None else _add_tunnel(p, model, policy, shared)
    if check_pasted:
        psk_elsewhere(p, params)
    p.raise_if_any()
    return built(spec)


def _once(p: Problems, shared: Shared | None, key: Hashable, check: Callable[[], _T]) -> _T:
    """`check()`, or what it returned for the same key earlier in the job. Only a result
    that recorded no problem and no accepted weak choice is kept: those are per field."""
    if shared is not None and (known := shared.get(key)) is not None:
        return known
    counts = len(p.items), len(p.weak_fields)
    result = check()
    if shared is not None and result is not None \
            and (len(p.items), len(p.weak_fields)) == counts:
        shared[key] = result
    return result


def _selector_key(ts: SelectorParams | None) -> Hashable:
    if ts is None:
        return ("ts",)
    return ("ts", ts.protocol, ts.start_port, ts.end_port, ts.start_addr, ts.end_addr)


def _add_tunnel(p: Problems, m: AddTunnelParams, policy: ValidationPolicy,
                shared: Shared | None = None) -> PeerSpec | None:
    if m.encryption_mode != "ikev2":
        p.add("encryption-mode", m.encryption_mode, "not supported for peer tunnels", "ikev2")
    tunnel_ok = in_range(p, "tunnel-id", m.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
    if not m.dev_id or len(m.dev_id) > 255 or not m.dev_id.isprintable() or " " in m.dev_id:
        p.add("dev_id", m.dev_id, "not an interface id", "the non-empty dev_id of a WAN interface")
    if m.src_port is not None:
        in_range(p, "srcPort", m.src_port, 0, 65535)
    src = ipv4(p, "src", m.src)
    dst = ipv4(p, "dst", m.dst)
    if src is not None and dst is not None and src == dst:
        p.add("dst", m.dst, "same as src", "the peer's public IPv4 address")
    peer = _peer(p, m.peer, src, dst)

    ik = m.ikev2
    tunnel_id = m.tunnel_id if tunnel_ok else None
    if ik.role not in ROLES:
        p.add("ikev2.role", ik.role, "unknown role", ", ".join(ROLES))
    if ik.mode != "psk":
        p.add("ikev2.mode", ik.mode, "not supported for peer tunnels", "psk")
    psk_ok = check_psk(p, ik.psk.reveal(), tunnel_id, policy)
    local_id = identity(
        p, "ikev2.local-device-id", "ikev2.local-device-id-type", ik.local_id_type, ik.local_id
    )
    remote_id = identity(
        p, "ikev2.remote-device-id", "ikev2.remote-device-id-type", ik.remote_id_type, ik.remote_id
    )
    in_range(
        p,
        "ikev2.lifetime",
        ik.lifetime,
        policy.child_lifetime_min,
        policy.child_lifetime_max,
        " seconds",
    )
    in_range(
        p,
        "ikev2.ike_lifetime",
        ik.ike_lifetime,
        policy.ike_lifetime_min,
        policy.ike_lifetime_max,
        " seconds",
    )
    t = ik.ike
    ike = _once(p, shared, ("ike", t.crypto_alg, t.integ_alg, t.dh_group, t.key_size),
                lambda: ike_transforms(p, ik.ike, policy))
    t = ik.esp
    ike_dh = None if ike is None else ike.dh_group
    esp = _once(p, shared, ("esp", t.crypto_alg, t.integ_alg, t.dh_group, t.key_size, ik.pfs,
                            ike_dh),
                lambda: esp_transforms(p, ik.esp, ik.pfs, ike_dh, policy))
    local_ts = _once(p, shared, _selector_key(ik.local_ts),
                     lambda: selector(p, "ikev2.local-ts", ik.local_ts))
    remote_ts = _once(p, shared, _selector_key(ik.remote_ts),
                      lambda: selector(p, "ikev2.remote-ts", ik.remote_ts))

    if p.items:
        return None
    if (
        tunnel_id is None or src is None or dst is None or peer is None or not psk_ok
        or local_id is None or remote_id is None or ike is None or esp is None
        or local_ts is None or remote_ts is None
    ):  # fmt: skip
        return None  # unreachable: a part is only missing when a problem was recorded
    if p.weak_fields:
        log.warning("weak_crypto_accepted_by_policy", tunnel_id=tunnel_id, fields=p.weak_fields)
    return PeerSpec(
        tunnel_id=tunnel_id,
        dev_id=m.dev_id,
        src=src,
        dst=dst,
        addr=peer.addr,
        role=ik.role,
        psk=ik.psk,
        local_id=local_id,
        remote_id=remote_id,
        ike=ike,
        esp=esp,
        local_ts=local_ts,
        remote_ts=remote_ts,
        child_lifetime=ik.lifetime,
        ike_lifetime=ik.ike_lifetime,
        pfs=ik.pfs,
        mtu=m.peer.mtu,
        tcp_mss_clamp=m.peer.tcp_mss_clamp,
        routing=m.peer.routing,
        ospf_cost=m.peer.ospf_cost,
        ospf_area=peer.ospf_area,
        labels=peer.labels,
        monitor_ips=peer.ips,
        monitor_urls=peer.urls,
    )


@dataclass(frozen=True)
class _Peer:
    addr: IPv4Interface
    ospf_area: str | None
    labels: tuple[str, ...]
    ips: tuple[IPv4Address, ...]
    urls: tuple[str, ...]


def _peer(
    p: Problems, m: PeerParams, src: IPv4Address | None, dst: IPv4Address | None
) -> _Peer | None:
    before = len(p.items)
    addr = _peer_addr(p, m.addr, src, dst)
    if m.routing not in ROUTINGS:
        p.add("peer.routing", m.routing, "unknown routing", ", ".join(ROUTINGS))
    mtu_ok = m.mtu is None or in_range(p, "peer.mtu", m.mtu, MTU_MIN, MTU_MAX)
    if m.tcp_mss_clamp is not None:
        high = m.mtu - 40 if m.mtu is not None and mtu_ok else MTU_MAX
        in_range(p, "peer.tcp-mss-clamp", m.tcp_mss_clamp, MSS_MIN, high)
    if m.ospf_cost is not None and (not _OSPF_COST.fullmatch(m.ospf_cost)
                                    or float(m.ospf_cost) <= 0):
        p.add("peer.ospf-cost", m.ospf_cost, "not a positive number", "a number > 0, e.g. '100'")
    area = None if m.ospf_area is None else _ospf_area(p, m.ospf_area)
    labels = m.multilink.labels if m.multilink is not None else []
    for i, label in enumerate(labels):
        if not label or any(ch.isspace() for ch in label) or len(label) > 64:
            p.add(
                f"peer.multilink.labels[{i}]",
                label,
                "not a path-label id",
                "non-empty ids without whitespace",
            )
    ips, urls = monitor_targets(p, "peer.", m.ips, m.urls)
    if len(p.items) != before or addr is None:
        return None
    return _Peer(addr, area, tuple(labels), ips, urls)


def _peer_addr(
    p: Problems, text: str, src: IPv4Address | None, dst: IPv4Address | None
) -> IPv4Interface | None:
    fld = "peer.addr"
    allowed = "an IPv4 /31 interface address such as 10.100.0.16/31"
    if "/" not in text:
        p.add(fld, text, "no prefix length", allowed)
        return None
    try:
        addr = parse_ipv4_interface(text)
    except ValueError:
        reason = "IPv6 is not supported" if is_ipv6(text) else "not an IPv4 interface address"
        p.add(fld, text, reason, allowed)
        return None
    if addr.network.prefixlen != 31:
        p.add(fld, text, f"prefix length /{addr.network.prefixlen}", allowed)
        return None
    low = int(addr) & ~1  # the /31's two addresses, as integers (a job has thousands)
    if not (is_unicast(low) and is_unicast(low + 1)):
        p.add(fld, text, "not a unicast /31", allowed)
        return None
    for name, outer in (("src", src), ("dst", dst)):
        if outer is not None and int(outer) & ~1 == low:
            p.add(fld, text, f"the /31 contains {name} {outer}", "a /31 not containing src or dst")
            return None
    return addr


def _ospf_area(p: Problems, text: str) -> str | None:
    if re.fullmatch(r"[0-9]{1,10}", text) and int(text) <= 0xFFFFFFFF:
        return str(int(text))
    try:
        return str(IPv4Address(text))
    except AddressValueError:
        p.add(
            "peer.ospf-area",
            text,
            "not an OSPF area id",
            "an integer 0-4294967295 or a dotted quad",
        )
        return None


def normalize_remove_tunnel(params: Mapping[str, Any]) -> RemovePeer:
    p = Problems()
    model = parse(RemoveTunnelParams, params, p)
    if model is not None:
        in_range(p, "tunnel-id", model.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
    p.raise_if_any()
    return RemovePeer(built(model).tunnel_id)


def normalize_modify_tunnel(params: Mapping[str, Any]) -> ModifyTargets:
    """The new monitoring targets of a `modify-tunnel` (none for alert thresholds only,
    which are checked here and recorded with the configuration, not applied to VPP)."""
    p = Problems()
    model = parse(ModifyTunnelParams, params, p)
    result = None
    if model is not None:
        in_range(p, "tunnel-id", model.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
        ips: tuple[IPv4Address, ...] | None = None
        urls: tuple[str, ...] | None = None
        if model.peer is not None:
            got_ips, got_urls = monitor_targets(p, "peer.", model.peer.ips or [],
                                                 model.peer.urls or [])
            ips = None if model.peer.ips is None else got_ips
            urls = None if model.peer.urls is None else got_urls
        if model.notifications is not None:
            notification_problems(p, "notificationsSettings", model.notifications)
        result = ModifyTargets(model.tunnel_id, ips, urls)
    p.raise_if_any()
    return built(result)


def notification_problems(p: Problems, fld: str, settings: Mapping[str, Any]) -> None:
    """Per-event thresholds: objects whose warning/critical thresholds are numbers or null."""
    for event, rule in settings.items():
        if not isinstance(rule, Mapping):
            p.add(f"{fld}.{event}", Shown(describe_type(rule)), "not an object",
                  "{warningThreshold, criticalThreshold, ...}")
            continue
        for key in ("warningThreshold", "criticalThreshold"):
            value = rule.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                p.add(f"{fld}.{event}.{key}", value, "not a number", "a number or null")
