"""The VPP messages the agent uses, with the CRCs of VPP 26.06.

Checked against VPP's message table at every connect: a message that is absent
or has another CRC is named, with the plugin that provides it, instead of
failing later with an obscure error. tests/unit/test_vpp_messages.py compares
this table with ../shared/vpp-api/v26.06.
"""

from __future__ import annotations

from dataclasses import dataclass

PLUGIN_HINTS: dict[str, str] = {
    "ikev2": "is ikev2_plugin.so enabled?",
    "lcp": "is linux_cp_plugin.so enabled?",
    "mss_clamp": "is mss_clamp_plugin.so enabled?",
    "acl": "is acl_plugin.so enabled?",
    "abf": "is abf_plugin.so enabled?",
}

# name -> (crc, module)
REQUIRED: dict[str, tuple[str, str]] = {
    "show_version": ("0x51077d14", "vpe"),
    "cli_inband": ("0xf8377302", "vlib"),
    "control_ping": ("0x51077d14", "memclnt"),
    "get_api_json": ("0x51077d14", "memclnt"),
    "sockclnt_create": ("0x455fb9c4", "memclnt"),
    "sockclnt_delete": ("0x8ac76db6", "memclnt"),
    "sw_interface_dump": ("0xaa610c27", "interface"),
    "sw_interface_set_flags": ("0xf5aec1b8", "interface"),
    "sw_interface_add_del_address": ("0x5463d73b", "interface"),
    "sw_interface_set_mtu": ("0x5cbe85e5", "interface"),
    "want_interface_events": ("0x476f5a08", "interface"),
    "sw_interface_event": ("0x2d3d95a7", "interface"),
    "ip_address_dump": ("0x2d033de4", "ip"),
    "ip_route_add_del": ("0xb8ecfe0d", "ip"),
    "ip_route_dump": ("0xb9d2e09e", "ip"),
    "ip_route_lookup": ("0x710d6471", "ip"),
    "ipip_add_tunnel": ("0x2ac399f5", "ipip"),
    "ipip_del_tunnel": ("0xf9e6675e", "ipip"),
    "ipip_tunnel_dump": ("0xf9e6675e", "ipip"),
    "ikev2_plugin_get_version": ("0x51077d14", "ikev2"),
    "ikev2_profile_add_del": ("0x2c925b55", "ikev2"),
    "ikev2_profile_set_auth": ("0x642c97cd", "ikev2"),
    "ikev2_profile_set_id": ("0x4d7e2418", "ikev2"),
    "ikev2_profile_set_ts": ("0x8eb8cfd1", "ikev2"),
    "ikev2_set_ike_transforms": ("0xaa99fec0", "ikev2"),
    "ikev2_set_esp_transforms": ("0xa63dc205", "ikev2"),
    "ikev2_set_sa_lifetime": ("0x7039feaa", "ikev2"),
    "ikev2_set_tunnel_interface": ("0xca67182c", "ikev2"),
    "ikev2_set_responder": ("0xa2055df1", "ikev2"),
    "ikev2_initiate_sa_init": ("0xebf79a66", "ikev2"),
    "ikev2_initiate_del_ike_sa": ("0x8d125bdd", "ikev2"),
    "ikev2_initiate_del_child_sa": ("0x7f004d2e", "ikev2"),
    "ikev2_initiate_rekey_child_sa": ("0x7f004d2e", "ikev2"),
    "ikev2_profile_dump": ("0x51077d14", "ikev2"),
    "ikev2_sa_dump": ("0x51077d14", "ikev2"),
    "ikev2_child_sa_dump": ("0x01eab609", "ikev2"),
    "ikev2_profile_set_liveness": ("0x6bdf4d65", "ikev2"),
    "ikev2_profile_set_udp_encap": ("0xebf79a66", "ikev2"),
    "lcp_itf_pair_add_del_v2": ("0x40482b80", "lcp"),
    "lcp_itf_pair_get": ("0xf75ba505", "lcp"),
    "mss_clamp_enable_disable": ("0xd31b44e3", "mss_clamp"),
    "mss_clamp_get": ("0x47250981", "mss_clamp"),
}

# Used when present; their absence is a capability, not a fault.
# ikev2_set_ike_lifetime / ikev2_set_pfs exist only in patched VPP builds: any CRC.
OPTIONAL: dict[str, tuple[str | None, str]] = {
    "ikev2_set_ike_lifetime": (None, "ikev2"),
    "ikev2_set_pfs": (None, "ikev2"),
    # multilink policies (agent/policy): without them a policy job is refused
    "acl_add_replace": ("0xee5c2f18", "acl"),
    "acl_del": ("0xef34fea4", "acl"),
    "acl_dump": ("0xef34fea4", "acl"),
    "abf_policy_add_del": ("0xc6131197", "abf"),
    "abf_policy_dump": ("0x51077d14", "abf"),
    "abf_itf_attach_add_del": ("0x25c8621b", "abf"),
    "abf_itf_attach_dump": ("0x51077d14", "abf"),
}


@dataclass(frozen=True)
class TableCheck:
    """Outcome of comparing VPP's message table with what the agent needs."""

    missing: dict[str, str]  # name -> human explanation
    optional_present: frozenset[str]

    @property
    def ok(self) -> bool:
        return not self.missing


def check_table(table: dict[str, int], skip_modules: frozenset[str] = frozenset()) -> TableCheck:
    """Compare a `name_crc -> id` table with REQUIRED and OPTIONAL; messages of
    `skip_modules` (e.g. "lcp" when the agent is told linux-cp is not used) are not needed."""
    by_name: dict[str, str] = {}
    for name_crc in table:
        name, _, crc = name_crc.rpartition("_")
        by_name[name] = "0x" + crc
    missing: dict[str, str] = {}
    for name, (crc, module) in REQUIRED.items():
        if module in skip_modules:
            continue
        have = by_name.get(name)
        if have is None:
            hint = PLUGIN_HINTS.get(module, "VPP core message")
            missing[name] = f"{name} missing: {hint}"
        elif have != crc:
            missing[name] = (
                f"{name} has CRC {have}, the agent expects {crc} (VPP 26.06): version mismatch"
            )
    optional: set[str] = set()
    for name, (want, _module) in OPTIONAL.items():
        have = by_name.get(name)
        if have is not None and (want is None or have == want):
            optional.add(name)
    return TableCheck(missing=missing, optional_present=frozenset(optional))
