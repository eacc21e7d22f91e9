"""What the remote administrator must configure, mirrored from the device's view.

Pure functions of a `PeerSpec`: no I/O, so the exact text is unit-tested.

The remote end's view is the device's view turned around: their local ID is our
remote ID, their local traffic selector our remote one, their peer address our
WAN address (unless a NAT is in between), the same single IKE and ESP proposal.
Mismatched ID types, PSKs, DH groups, lifetimes and selectors are the most
common cause of failed peerings (interop.md), so the export states every one.

The PSK is printed only when the caller asks for it (`show_secrets`): this is
the one place the agent reveals it, because the remote administrator needs it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from ipaddress import IPv4Address

from agent.jobs import vocab
from agent.peers import strongswan
from agent.peers.spec import Identity, PeerSpec, TrafficSelector
from agent.vpp.kinds.profile import profile_name
from agent.vpp.plan import LIVENESS_PERIOD, LIVENESS_RETRIES

FORMATS = ("swanctl", "text")
PSK_PLACEHOLDER = "PASTE-THE-PRE-SHARED-KEY-HERE"

_PRF_NAMES = {1: "hmac-md5", 2: "hmac-sha1", 5: "hmac-sha2-256", 6: "hmac-sha2-384",
              7: "hmac-sha2-512"}
_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
# PSK characters that are safe inside a quoted swanctl.conf value; anything else
# (quotes, backslash, '#', '$', braces) is written hex-encoded instead.
_SAFE_PSK = re.compile(r"^[A-Za-z0-9!%&()*+,\-./:;<=>?@\[\]^_|~]+$")
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9.:@_\-]+$")
# Addresses that only exist behind a NAT (RFC 1918, RFC 6598 shared address space).
_NAT_NETS = tuple(ipaddress.IPv4Network(n) for n in
                  ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


class ExportError(Exception):
    """The spec holds something the target format cannot express."""


# -- names ---------------------------------------------------------------------------


def _cipher(iana: int) -> vocab.Cipher:
    for c in vocab.CIPHERS.values():
        if c.iana == iana:
            return c
    raise ExportError(f"encryption transform {iana} has no known name")


def _integ_name(iana: int) -> str:
    for i in vocab.INTEGRITIES.values():
        if i.iana == iana:
            return i.name
    raise ExportError(f"integrity transform {iana} has no known name")


def _dh_name(iana: int) -> str:
    for g in vocab.DH_GROUPS.values():
        if g.iana == iana:
            return g.name
    raise ExportError(f"DH group {iana} has no known name")


def _swan(keyword: Callable[[int], str], iana: int) -> str:
    try:
        return keyword(iana)
    except strongswan.NoKeyword as e:
        raise ExportError(str(e)) from None


def _swan_cipher(iana: int, key_size: int) -> str:
    c = _cipher(iana)
    try:
        return strongswan.encr_keyword(iana, key_size)
    except strongswan.NoKeyword:
        raise ExportError(f"encryption transform {c.name} has no strongSwan keyword") from None


def ike_proposal(spec: PeerSpec) -> str:
    """The one IKE proposal in strongSwan syntax, e.g. aes256-sha256-modp2048."""
    t = spec.ike
    parts = [_swan_cipher(t.crypto_alg, t.crypto_key_size)]
    if _cipher(t.crypto_alg).aead:
        parts.append(_swan(strongswan.prf_keyword, t.prf_alg))
    else:
        parts.append(_swan(_integ_keyword, t.integ_alg))
        if strongswan.IMPLIED_PRF.get(t.integ_alg) != t.prf_alg:
            parts.append(_swan(strongswan.prf_keyword, t.prf_alg))
    parts.append(_swan(strongswan.dh_keyword, t.dh_group))
    return "-".join(parts)


def _child_rekey(spec: PeerSpec) -> list[str]:
    """Who rekeys the child SA: VPP only when it initiated (before the lifetime), never
    as responder; the remote end's rekey_time follows."""
    lifetime = spec.child_lifetime
    if spec.role == "responder":
        return ["                # The device never rekeys as responder: your side does.",
                f"                rekey_time = {lifetime}s"]
    return [f"                # The device rekeys before {lifetime} s; rekeying later here "
            "avoids rekey collisions.",
            f"                rekey_time = {lifetime + lifetime // 10}s"]


def _integ_keyword(iana: int) -> str:
    """An HMAC's keyword; AES-GMAC only goes with null encryption (esp_proposal)."""
    if iana in strongswan.GMAC_BITS:
        raise strongswan.NoKeyword(f"integrity transform {iana} has no strongSwan keyword")
    return strongswan.integ_keyword(iana)


def esp_proposal(spec: PeerSpec) -> str:
    """The one ESP proposal, e.g. aes256-sha256 (+ -modp2048 only with PFS)."""
    t = spec.esp
    if _cipher(t.crypto_alg).name == "null" and t.integ_alg in strongswan.GMAC_BITS:
        # strongSwan only knows AES-GMAC as the combined ENCR_NULL_AUTH_AES_GMAC.
        parts = [strongswan.integ_keyword(t.integ_alg)]
    else:
        parts = [_swan_cipher(t.crypto_alg, t.crypto_key_size)]
        if t.integ_alg:
            parts.append(_swan(_integ_keyword, t.integ_alg))
    if spec.pfs and t.dh_group:
        parts.append(_swan(strongswan.dh_keyword, t.dh_group))
    return "-".join(parts)


def swan_id(ident: Identity) -> str:
    """An IKE identity in swanctl syntax, its type explicit where it could be guessed."""
    value = strongswan.identity(ident.type, ident.value)
    return value if _PLAIN_VALUE.match(value) else _quote(value)


def _behind_nat(addr: IPv4Address) -> bool:
    return any(addr in net for net in _NAT_NETS)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range_text(start: IPv4Address, end: IPv4Address) -> str:
    nets = list(ipaddress.summarize_address_range(start, end))
    if len(nets) == 1:
        return str(nets[0])
    return f"{start}-{end}"


def swan_ts(ts: TrafficSelector) -> str:
    """A traffic selector in swanctl syntax: 0.0.0.0/0, 10.0.0.0/24[tcp/443], a-b[udp/1-9]."""
    text = _range_text(ts.start_addr, ts.end_addr)
    all_ports = ts.start_port == 0 and ts.end_port == 65535
    if ts.protocol == 0 and all_ports:
        return text
    proto = _PROTO_NAMES.get(ts.protocol, str(ts.protocol)) if ts.protocol else "%any"
    if all_ports:
        return f"{text}[{proto}]"
    port = str(ts.start_port) if ts.start_port == ts.end_port \
        else f"{ts.start_port}-{ts.end_port}"
    return f"{text}[{proto}/{port}]"


def _psk_value(psk: str) -> tuple[str, bool]:
    """(value to write, hex-encoded?) for the secrets section."""
    if _SAFE_PSK.match(psk) and not psk.lower().startswith(("0x", "0s")):
        return f'"{psk}"', False
    return "0x" + psk.encode("utf-8").hex(), True


# -- swanctl.conf ----------------------------------------------------------------------


def render_swanctl(spec: PeerSpec, *, show_secrets: bool = False) -> str:
    """A ready-to-load swanctl.conf for the remote end of `spec`."""
    tid = spec.tunnel_id
    name = profile_name(spec.tunnel_id)
    ike = ike_proposal(spec)
    esp = esp_proposal(spec)
    remote_initiates = spec.role == "responder"
    lines: list[str] = [
        f"# swanctl.conf for the remote end of peering tunnel {tid} "
        f"(device profile {name}).",
        "# Mirrored from the device's configuration: the device's remote side is your local side.",
        "# Install as /etc/swanctl/conf.d/" + name + ".conf and load with: swanctl --load-all",
        "connections {",
        f"    {name} {{",
        "        version = 2",
        f"        # The device sends IKE to {spec.dst}; behind a NAT, use your own address "
        "or %any.",
        f"        local_addrs = {spec.dst}",
        "        # The device's WAN address. A NAT may be in between: then use the address "
        "its packets",
        "        # arrive from (its public address) or %any; the IKE ID still authenticates it.",
    ]
    if _behind_nat(spec.src):
        lines.append(
            f"        # NOTE: {spec.src} is a private address: the device is most likely "
            "behind NAT,")
        lines.append("        # so set its public address (or %any) here.")
    lines += [
        f"        remote_addrs = {spec.src}",
        f"        proposals = {ike}",
        f"        rekey_time = {spec.ike_lifetime}s",
        f"        # The device checks liveness every {LIVENESS_PERIOD} s "
        f"({LIVENESS_RETRIES} retries) and answers yours.",
        f"        dpd_delay = {LIVENESS_PERIOD * 3}s",
        "        mobike = no",
        "        # The device (VPP) cannot answer IKEv2 cookie requests: in strongswan.conf keep",
        "        # charon.cookie_threshold_ip above the number of tunnels from its address.",
    ]
    if remote_initiates:
        lines.append("        keyingtries = 0")
    if spec.udp_encap:
        lines.append("        # The device forces UDP encapsulation (ESP in UDP/4500).")
        lines.append("        encap = yes")
    lines += [
        "        local {",
        "            auth = psk",
        f"            id = {swan_id(spec.remote_id)}",
        "        }",
        "        remote {",
        "            auth = psk",
        f"            id = {swan_id(spec.local_id)}",
        "        }",
        "        children {",
        f"            {name} {{",
        f"                local_ts = {swan_ts(spec.remote_ts)}",
        f"                remote_ts = {swan_ts(spec.local_ts)}",
        f"                esp_proposals = {esp}",
        *_child_rekey(spec),
        "                mode = tunnel",
    ]
    if spec.route_based:
        lines += [
            "                # Route-based: the SAs are bound to an XFRM interface so that the "
            "0.0.0.0/0",
            "                # selectors do not capture this host's own traffic. Create it with:",
            f"                #   ip link add xfrm{tid} type xfrm dev <WAN interface> if_id {tid}",
            f"                #   ip addr add {spec.peer_inner_addr}/{spec.addr.network.prefixlen}"
            f" dev xfrm{tid} && ip link set xfrm{tid} up",
            f"                if_id_in = {tid}",
            f"                if_id_out = {tid}",
        ]
    else:
        lines.append("                # Policy-based: VPP requires these selectors exactly "
                     "(no narrowing).")
    if spec.esp.crypto_alg == vocab.CIPHERS["null"].iana \
            and spec.esp.integ_alg in strongswan.GMAC_BITS:
        lines.append("                # WARNING: the device proposes ENCR_NULL with AES-GMAC "
                     "integrity; strongSwan can only express the combined aesNNNgmac.")
    if spec.pfs and remote_initiates:
        lines.append("                # PFS: propose the DH group in your rekeys; the device "
                     "(responder) accepts it.")
    elif spec.pfs:
        lines.append("                # PFS: the device's own rekeys use this DH group too.")
    if remote_initiates:
        lines += [
            "                # The device only responds: you initiate and restart.",
            "                start_action = start",
            "                dpd_action = restart",
        ]
    else:
        lines += [
            "                # The device initiates: you respond.",
            "                start_action = none",
            "                dpd_action = clear",
        ]
    lines += [
        "            }",
        "        }",
        "    }",
        "}",
        "",
        "secrets {",
        f"    ike-peer{tid} {{",
        f"        id = {swan_id(spec.local_id)}",
    ]
    if show_secrets:
        value, hexed = _psk_value(spec.psk.reveal())
        if hexed:
            lines.append("        # hex-encoded: the key holds characters swanctl.conf would "
                         "interpret.")
        lines.append(f"        secret = {value}")
    else:
        lines += [
            "        # The pre-shared key is not shown. As root on the device run",
            f"        #   peerctl peer export {tid} --format swanctl --show-secrets",
            "        # or get it from the device's operator over a secure channel.",
            f'        secret = "{PSK_PLACEHOLDER}"',
        ]
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


# -- parameter sheet -------------------------------------------------------------------


def _id_text(ident: Identity) -> str:
    return f"{ident.value} (type {ident.type.label})"


def _cipher_text(iana: int, key_size: int) -> str:
    c = _cipher(iana)
    if c.key_sizes:
        return f"{c.name} {key_size}-bit key"
    return c.name


def _ts_text(ts: TrafficSelector) -> str:
    proto = "any protocol" if ts.protocol == 0 else \
        f"protocol {_PROTO_NAMES.get(ts.protocol, str(ts.protocol))}"
    return (f"{ts.start_addr} - {ts.end_addr} ({_range_text(ts.start_addr, ts.end_addr)}), "
            f"{proto}, ports {ts.start_port}-{ts.end_port}")


def render_sheet(spec: PeerSpec, *, show_secrets: bool = False) -> str:
    """A vendor-neutral parameter sheet for the remote administrator."""
    ike, esp = spec.ike, spec.esp
    aead_ike = _cipher(ike.crypto_alg).aead
    rows: list[tuple[str, str]] = []

    def row(key: str, value: str) -> None:
        rows.append((key, value))

    row("IKE version", "IKEv2")
    if spec.role == "initiator":
        row("Who initiates", "the device initiates; your side responds")
    else:
        row("Who initiates", "your side initiates; the device only responds")
    row("Your address", f"{spec.dst} (where the device sends IKE and ESP)")
    if _behind_nat(spec.src):
        row("Device address", f"{spec.src} (private: expect the public address of its NAT)")
    else:
        row("Device address", f"{spec.src} (with a NAT in between, expect the NAT's address)")
    row("NAT traversal", "UDP encapsulation forced by the device (UDP 4500)" if spec.udp_encap
        else "standard (UDP 500, floating to 4500 when NAT is detected)")
    row("Authentication", "pre-shared key")
    if show_secrets:
        row("Pre-shared key", spec.psk.reveal())
    else:
        row("Pre-shared key", "(hidden; run `peerctl peer export "
            f"{spec.tunnel_id} --format text --show-secrets` as root on the device)")
    row("Your local ID", _id_text(spec.remote_id))
    row("Your remote ID", _id_text(spec.local_id) + " (the device)")
    row("IKE encryption", _cipher_text(ike.crypto_alg, ike.crypto_key_size))
    row("IKE integrity", "none (AEAD cipher)" if aead_ike else _integ_name(ike.integ_alg))
    row("IKE PRF", _PRF_NAMES.get(ike.prf_alg, str(ike.prf_alg)))
    row("IKE DH group", f"{_dh_name(ike.dh_group)} (group {ike.dh_group})")
    row("IKE SA lifetime", f"{spec.ike_lifetime} s")
    row("IKE proposal (strongSwan)", ike_proposal(spec))
    row("ESP encryption", _cipher_text(esp.crypto_alg, esp.crypto_key_size))
    row("ESP integrity", _integ_name(esp.integ_alg) if esp.integ_alg else "none (AEAD cipher)")
    if spec.pfs and esp.dh_group:
        row("PFS", f"yes, {_dh_name(esp.dh_group)} (group {esp.dh_group})")
    else:
        row("PFS", "no (no DH group in the ESP proposal)")
    row("Child SA lifetime", f"{spec.child_lifetime} s")
    row("ESP proposal (strongSwan)", esp_proposal(spec))
    row("ESN", "no")
    row("Mode", "tunnel, " + ("route-based" if spec.route_based else
                              "policy-based (selectors must match exactly, no narrowing)"))
    row("Your local selector", _ts_text(spec.remote_ts))
    row("Your remote selector", _ts_text(spec.local_ts))
    prefix = spec.addr.network.prefixlen
    row("Inside address (yours)", f"{spec.peer_inner_addr}/{prefix}")
    row("Inside address (device)", f"{spec.addr.ip}/{prefix}")
    if spec.mtu is not None:
        row("Tunnel MTU", str(spec.mtu))
    if spec.tcp_mss_clamp is not None:
        row("TCP MSS clamp (device)", str(spec.tcp_mss_clamp))
    routing = spec.routing
    if spec.routing == "ospf":
        extras = [f"cost {spec.ospf_cost}" if spec.ospf_cost is not None else "",
                  f"area {spec.ospf_area}" if spec.ospf_area else ""]
        routing = " ".join(["ospf", *[e for e in extras if e]])
    row("Routing", f"{routing} over the inside addresses")
    row("Dead peer detection",
        f"the device checks every {LIVENESS_PERIOD} s, {LIVENESS_RETRIES} retries; "
        "enable DPD on your side")
    width = max(len(k) for k, _ in rows)
    head = f"Peering tunnel {spec.tunnel_id}: what the remote end must configure"
    out = [head, "=" * len(head)]
    out += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(out) + "\n"


def render_export(spec: PeerSpec, fmt: str, *, show_secrets: bool = False) -> str:
    if fmt == "swanctl":
        return render_swanctl(spec, show_secrets=show_secrets)
    if fmt == "text":
        return render_sheet(spec, show_secrets=show_secrets)
    raise ExportError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
