"""The local validation policy ([security]) and the fixed limits every job is held to."""

from __future__ import annotations

from dataclasses import dataclass

PSK_MIN = 8  # default of [security] psk_min_length
PSK_MAX = 1024
PSK_RECOMMENDED_MIN = 20
# flexiManage sends min(max(mtu, 500), 1500); larger values are harmless for VPP.
MTU_MIN, MTU_MAX = 500, 9000
# flexiManage computes min(mtu, WAN mtu - 150) - 40: 310 with its smallest MTUs.
MSS_MIN = 200
WEAK_REASON = ("weak, refused by the device's security policy "
               "([security] allow_weak_crypto = false)")
# flexiManage numbers tunnels per organisation from 1 and caps them well below 65536.
TUNNEL_ID_MIN, TUNNEL_ID_MAX = 1, 65535
PSK_ALLOWED = f"1-{PSK_MAX} characters without whitespace or control characters"
DNS_ALLOWED = (
    "a DNS name: dot-separated labels of 1-63 letters, digits or hyphens "
    "(no hyphen at either end), at most 253 characters"
)
HOST_ALLOWED = "a bare host name such as monitoring.example.com (no scheme, path or port)"
UNICAST_ALLOWED = "a unicast IPv4 address (not 0.0.0.0, loopback, multicast, broadcast or 240/4)"
ROUTINGS = ("ospf", "bgp")
ROLES = ("initiator", "responder")


@dataclass(frozen=True)
class ValidationPolicy:
    """Local policy applied on top of the controller's choices."""

    allow_weak_crypto: bool = False
    psk_min_length: int = PSK_MIN
    child_lifetime_min: int = 300
    child_lifetime_max: int = 86400
    ike_lifetime_min: int = 300
    ike_lifetime_max: int = 7 * 86400

    def __post_init__(self) -> None:
        if not 0 < self.child_lifetime_min <= self.child_lifetime_max:
            raise ValueError("child lifetime bounds must satisfy 0 < min <= max")
        if not 0 < self.ike_lifetime_min <= self.ike_lifetime_max:
            raise ValueError("IKE lifetime bounds must satisfy 0 < min <= max")
