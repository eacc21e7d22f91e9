"""PeerSpec <-> plain JSON-able dicts, for the store and the configuration hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from agent.iptext import interface_text, ip_text, network_text
from agent.peers.spec import (
    EspTransforms,
    Identity,
    IdType,
    IkeTransforms,
    PeerSpec,
    StaticRoute,
    TrafficSelector,
)
from agent.secret import Secret


def _ts(ts: TrafficSelector) -> dict[str, Any]:
    return {"protocol": ts.protocol, "start_port": ts.start_port, "end_port": ts.end_port,
            "start_addr": ip_text(ts.start_addr), "end_addr": ip_text(ts.end_addr)}


def _ts_back(d: dict[str, Any]) -> TrafficSelector:
    return TrafficSelector(int(d["protocol"]), int(d["start_port"]), int(d["end_port"]),
                           IPv4Address(d["start_addr"]), IPv4Address(d["end_addr"]))


def spec_to_dict(spec: PeerSpec) -> dict[str, Any]:
    """Everything, the PSK included: only for the 0600 store and hashing."""
    return {
        "tunnel_id": spec.tunnel_id,
        "dev_id": spec.dev_id,
        "src": ip_text(spec.src),
        "dst": ip_text(spec.dst),
        "addr": interface_text(spec.addr),
        "role": spec.role,
        "psk": spec.psk.reveal(),
        "local_id": [int(spec.local_id.type), spec.local_id.value],
        "remote_id": [int(spec.remote_id.type), spec.remote_id.value],
        "ike": [spec.ike.crypto_alg, spec.ike.crypto_key_size, spec.ike.integ_alg,
                spec.ike.prf_alg, spec.ike.dh_group],
        "esp": [spec.esp.crypto_alg, spec.esp.crypto_key_size, spec.esp.integ_alg,
                spec.esp.dh_group],
        "local_ts": _ts(spec.local_ts),
        "remote_ts": _ts(spec.remote_ts),
        "child_lifetime": spec.child_lifetime,
        "ike_lifetime": spec.ike_lifetime,
        "pfs": spec.pfs,
        "mtu": spec.mtu,
        "tcp_mss_clamp": spec.tcp_mss_clamp,
        "routing": spec.routing,
        "ospf_cost": spec.ospf_cost,
        "ospf_area": spec.ospf_area,
        "labels": list(spec.labels),
        "monitor_ips": [ip_text(i) for i in spec.monitor_ips],
        "monitor_urls": list(spec.monitor_urls),
        "udp_encap": spec.udp_encap,
        # a preference-0 route keeps the form stored before metrics were programmed
        "static_routes": [network_text(r.net) if r.preference == 0
                          else [network_text(r.net), r.preference]
                          for r in spec.static_routes],
    }


def spec_from_dict(d: dict[str, Any]) -> PeerSpec:
    return PeerSpec(
        tunnel_id=int(d["tunnel_id"]),
        dev_id=d["dev_id"],
        src=IPv4Address(d["src"]),
        dst=IPv4Address(d["dst"]),
        addr=IPv4Interface(d["addr"]),
        role=d["role"],
        psk=Secret(d["psk"]),
        local_id=Identity(IdType(d["local_id"][0]), d["local_id"][1]),
        remote_id=Identity(IdType(d["remote_id"][0]), d["remote_id"][1]),
        ike=IkeTransforms(*d["ike"]),
        esp=EspTransforms(*d["esp"]),
        local_ts=_ts_back(d["local_ts"]),
        remote_ts=_ts_back(d["remote_ts"]),
        child_lifetime=int(d["child_lifetime"]),
        ike_lifetime=int(d["ike_lifetime"]),
        pfs=bool(d["pfs"]),
        mtu=d["mtu"],
        tcp_mss_clamp=d["tcp_mss_clamp"],
        routing=d["routing"],
        ospf_cost=None if d["ospf_cost"] is None else str(d["ospf_cost"]),
        ospf_area=d["ospf_area"],
        labels=tuple(d["labels"]),
        monitor_ips=tuple(IPv4Address(i) for i in d["monitor_ips"]),
        monitor_urls=tuple(d["monitor_urls"]),
        udp_encap=bool(d["udp_encap"]),
        static_routes=tuple(_static_route_back(r) for r in d.get("static_routes", ())),
    )


def _static_route_back(r: str | list[Any]) -> StaticRoute:
    if isinstance(r, str):
        return StaticRoute(IPv4Network(r))
    return StaticRoute(IPv4Network(r[0]), int(r[1]))


def canonical_json(spec: PeerSpec) -> str:
    return json.dumps(spec_to_dict(spec), sort_keys=True, separators=(",", ":"))


def cfg_hash(specs: Iterable[PeerSpec]) -> str:
    """Deterministic hash of the desired state (order-independent)."""
    h = hashlib.sha256()
    for spec in sorted(specs, key=lambda s: s.tunnel_id):
        h.update(canonical_json(spec).encode())
        h.update(b"\n")
    return h.hexdigest()
