"""Which VPP 26.06 messages vppsim serves, module by module.

The order of MODULES fixes the message ids: memclnt gets 1-28 (file order, as
clients hard-code sockclnt_create=15), then each module a block in this order.
Only requests are listed; their replies, details and events come from the
module's `services` section when the definitions are extracted.
"""

from __future__ import annotations

MEMCLNT = "memclnt"

# module -> requests served (memclnt is served whole).
MODULES: dict[str, tuple[str, ...]] = {
    MEMCLNT: (),
    "vlib": ("cli_inband",),
    "vpe": ("show_version",),
    "interface": (
        "sw_interface_dump",
        "sw_interface_set_flags",
        "sw_interface_add_del_address",
        "sw_interface_set_mtu",
        "sw_interface_set_unnumbered",
        "want_interface_events",
    ),
    "ip": (
        "ip_address_dump",
        "ip_route_add_del",
        "ip_route_dump",
        "ip_route_lookup",
        "ip_table_add_del",
        "ip_table_dump",
    ),
    "ipip": ("ipip_add_tunnel", "ipip_del_tunnel", "ipip_tunnel_dump"),
    "ikev2": (
        "ikev2_plugin_get_version",
        "ikev2_profile_add_del",
        "ikev2_profile_set_auth",
        "ikev2_profile_set_id",
        "ikev2_profile_set_ts",
        "ikev2_set_ike_transforms",
        "ikev2_set_esp_transforms",
        "ikev2_set_sa_lifetime",
        "ikev2_set_tunnel_interface",
        "ikev2_set_responder",
        "ikev2_set_responder_hostname",
        "ikev2_profile_set_udp_encap",
        "ikev2_profile_disable_natt",
        "ikev2_profile_set_ipsec_udp_port",
        "ikev2_profile_set_liveness",
        "ikev2_initiate_sa_init",
        "ikev2_initiate_del_ike_sa",
        "ikev2_initiate_del_child_sa",
        "ikev2_initiate_rekey_child_sa",
        "ikev2_profile_dump",
        "ikev2_sa_dump",
        "ikev2_sa_v2_dump",
        "ikev2_sa_v3_dump",
        "ikev2_child_sa_dump",
        "ikev2_child_sa_v2_dump",
        "ikev2_traffic_selector_dump",
    ),
    "lcp": ("lcp_itf_pair_add_del_v2", "lcp_itf_pair_get"),
    "mss_clamp": ("mss_clamp_enable_disable", "mss_clamp_get"),
    "acl": ("acl_plugin_get_version", "acl_add_replace", "acl_del", "acl_dump"),
    "abf": ("abf_plugin_get_version", "abf_policy_add_del", "abf_policy_dump",
            "abf_itf_attach_add_del", "abf_itf_attach_dump"),
}

# Plugin name (as in --omit-plugin) -> module.
PLUGINS: dict[str, str] = {
    "ikev2": "ikev2",
    "linux_cp": "lcp",
    "lcp": "lcp",
    "mss_clamp": "mss_clamp",
    "acl": "acl",
    "abf": "abf",
}
