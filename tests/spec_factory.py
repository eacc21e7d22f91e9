"""PeerSpec values for tests: the protocol document's add-tunnel, normalized by hand."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from agent.peers.spec import (
    EspTransforms,
    Identity,
    IdType,
    IkeTransforms,
    PeerSpec,
    TrafficSelector,
)
from agent.secret import Secret

TEST_PSK = "S3cr3tPSK-test-0123456789"
FULL_TS = TrafficSelector(0, 0, 65535, IPv4Address("0.0.0.0"), IPv4Address("255.255.255.255"))


def example_spec(**overrides: Any) -> PeerSpec:
    spec = PeerSpec(
        tunnel_id=7,
        dev_id="pci:0000:00:03.00",
        src=IPv4Address("192.168.1.10"),
        dst=IPv4Address("203.0.113.10"),
        addr=IPv4Interface("10.100.0.16/31"),
        role="initiator",
        psk=Secret(TEST_PSK),
        local_id=Identity(IdType.IP4_ADDR, "198.51.100.7"),
        remote_id=Identity(IdType.FQDN, "gw.cloud.example"),
        ike=IkeTransforms(12, 256, 12, 5, 14),
        esp=EspTransforms(12, 256, 12, 0),
        local_ts=FULL_TS,
        remote_ts=FULL_TS,
        child_lifetime=3600,
        ike_lifetime=86400,
        mtu=1500,
        tcp_mss_clamp=1310,
        monitor_ips=(IPv4Address("8.8.8.8"),),
        monitor_urls=("monitoring.example.com",),
        ospf_cost="100",
    )
    return replace(spec, **overrides)


def numbered_spec(n: int, **overrides: Any) -> PeerSpec:
    """Distinct peers: tunnel n, its own dst, /31 and remote ID (VPP deletes the IKE SAs
    of every other peer with the same local/remote IDs when one is established)."""
    base = 16 + 2 * n
    overrides.setdefault("remote_id", Identity(IdType.FQDN, f"gw{n}.cloud.example"))
    return example_spec(
        tunnel_id=n,
        dst=IPv4Address(int(IPv4Address("203.0.113.0")) + (n % 250) + (n // 250) * 65536),
        addr=IPv4Interface(f"10.{100 + base // 65536 % 100}.{base // 256 % 256}.{base % 256}/31"),
        monitor_ips=(IPv4Address(f"10.200.{n // 250 % 256}.{n % 250 + 1}"),),
        **overrides,
    )
