"""cli_inband: the few vppctl commands vppsim knows, in VPP's output layouts."""

from __future__ import annotations

import ipaddress
import time

from agent.lab.vppsim.state import (
    ID_TYPES,
    IPSEC_UDP_PORT_NONE,
    LOG_LEVELS,
    NO_INDEX,
    STATE_NAMES,
    ChildSa,
    IkeSa,
    SimState,
    VppCrash,
)

VERSION = "26.06-release"  # what show_version answers (the CLI prints "vpp v26.06-release")
BUILD_DATE = "2026-06-24T00:00:00"

ENCR = {
    1: "des-iv64",
    2: "des",
    3: "3des",
    11: "null",
    12: "aes-cbc",
    13: "aes-ctr",
    20: "aes-gcm-16",
    28: "chacha20-poly1305",
}
INTEG = {
    0: "none",
    1: "md5-96",
    2: "sha1-96",
    5: "aes-xcbc-96",
    9: "aes-128-gmac",
    10: "aes-192-gmac",
    11: "aes-256-gmac",
    12: "hmac-sha2-256-128",
    13: "hmac-sha2-384-192",
    14: "hmac-sha2-512-256",
}
PRF = {
    1: "hmac-md5",
    2: "hmac-sha1",
    4: "aes128-xcbc",
    5: "hmac-sha2-256",
    6: "hmac-sha2-384",
    7: "hmac-sha2-512",
    8: "aes128-cmac",
}
DH = {
    0: "none",
    1: "modp-768",
    2: "modp-1024",
    5: "modp-1536",
    14: "modp-2048",
    15: "modp-3072",
    16: "modp-4096",
    17: "modp-6144",
    18: "modp-8192",
    19: "ecp-256",
    20: "ecp-384",
    21: "ecp-521",
    22: "modp-1024-160",
    23: "modp-2048-224",
    24: "modp-2048-256",
    25: "ecp-192",
}


def hex_bytes(data: bytes, indent: int) -> str:
    """VPP's format_hex_bytes: up to 32 bytes on one line; more as a dump of 32
    bytes per line (`00000000: ...`), further lines indented to `indent`, the
    column where the dump started."""
    if len(data) <= 32:
        return data.hex()
    rows = [f"{i:08x}: {data[i:i + 32].hex()}" for i in range(0, len(data), 32)]
    return ("\n" + " " * indent).join(rows)


def _keyed(prefix: str, data: bytes) -> str:
    """`prefix` then `data` as VPP prints it at the column after `prefix`."""
    return prefix + hex_bytes(data, len(prefix))


# Input nodes that support `trace add` in the lab's VPP build (no DPDK there).
TRACE_NODES = frozenset({"af-packet-input", "virtio-input", "ethernet-input", "ip4-input"})


class CliError(Exception):
    """A command failed; VPP prints the message and cli_inband returns -1."""


def _name(table: dict[int, str], value: int) -> str:
    return table.get(value, f"unknown ({value})")


def format_id(id_: tuple[int, bytes]) -> str:
    id_type, data = id_
    if id_type == 0 or not data:
        return "none"
    s = f"id-type {ID_TYPES.get(id_type, 'unknown')} data "
    if id_type == 1 and len(data) == 4:
        return s + str(ipaddress.IPv4Address(data))
    if id_type == 5 and len(data) == 16:
        return s + str(ipaddress.IPv6Address(data))
    if id_type in (2, 3):
        return s + data.decode("latin-1")
    return s + "0x" + data.hex()


SHOW_WORDS = ("version", "interface", "ip", "ikev2", "logging", "trace", "event-logger")


def _unique_prefix(word: str, choices: tuple[str, ...]) -> str:
    """The one choice `word` abbreviates, else `word` as typed."""
    found = [c for c in choices if c.startswith(word)]
    return found[0] if len(found) == 1 else word


class Cli:
    def __init__(self, state: SimState) -> None:
        self.state = state

    def run(self, cmd: str) -> tuple[int, str]:
        """Return (retval, output) as cli_inband does."""
        words = cmd.split()
        try:
            out = self._dispatch(words)
        except CliError as e:
            return -1, f"{e}\n"
        return 0, out

    def _dispatch(self, w: list[str]) -> str:
        def unknown(rest: list[str]) -> CliError:
            return CliError(f"unknown input `{' '.join(rest)}'")

        if not w:
            return ""
        if w[0] in ("show", "sh"):
            rest = w[1:]
            if not rest:
                raise unknown(rest)
            # VPP takes a unique prefix of each command word (`sh ike sa`)
            rest = [_unique_prefix(rest[0], SHOW_WORDS), *rest[1:]]
            if rest[0] == "ikev2" and len(rest) > 1:
                rest[1] = _unique_prefix(rest[1], ("profile", "sa"))
            if rest[0] in ("version", "ver"):
                return self.show_version()
            if rest[0] in ("interface", "int", "interfaces"):
                return self.show_interface()
            if rest[:2] == ["ip", "fib"]:
                return self.show_ip_fib()
            if rest[:2] == ["ikev2", "profile"]:
                return self.show_ikev2_profile()
            if rest[:2] == ["ikev2", "sa"]:
                # VPP's unformat takes any word that starts with "details"
                return self.show_ikev2_sa(any(a.startswith("details") for a in rest[2:]))
            if rest == ["logging"]:
                return self.show_logging()
            if rest[0] == "trace":
                # vppsim forwards no packets: the buffer stays empty, in VPP's layout
                return ("------------------- Start of thread 0 vpp_main -------------------\n"
                        "No packets in trace buffer\n")
            if rest[0] == "event-logger":
                return ""  # vlib's event logger: IKE no longer writes to it in 26.06
            raise unknown(rest)
        if w[:3] == ["set", "logging", "class"]:
            return self.set_logging_class(w[3:])
        if w == ["clear", "logging"]:
            self.state.log_entries.clear()
            self.state.log("log cleared", "info", "log")
            return ""
        if w[:2] == ["event-logger", "clear"]:
            return ""
        if w[:2] == ["trace", "add"]:
            args = w[2:]
            if len(args) != 2 or args[0] not in TRACE_NODES or not args[1].isdigit():
                raise CliError(f"expected NODE COUNT, got `{' '.join(args)}'")
            return ""
        if w == ["clear", "trace"]:
            return ""
        raise unknown(w)

    def show_logging(self) -> str:
        """`show logging`: `%U %-10U %-14U %v` of time, level, class, message."""
        out = []
        for t, level, cls, text in self.state.log_entries:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))
            out.append(f"{stamp}:{int(t * 1000) % 1000:03d} {LOG_LEVELS[level]:<10} "
                       f"{cls:<14} {text}\n")
        return "".join(out)

    def set_logging_class(self, args: list[str]) -> str:
        known = {"ikev2", "log", "linux-cp", "ipip", "ip4", "ping"}
        if not args or args[0] not in known:
            raise CliError(f"unknown log class `{' '.join(args)}'")
        rest = args[1:]
        while rest:
            if rest[0] in ("level", "syslog-level", "kmsg-level") and len(rest) >= 2 \
                    and rest[1] in LOG_LEVELS:
                if rest[0] == "level":
                    self.state.log_levels[args[0]] = LOG_LEVELS.index(rest[1])
                rest = rest[2:]
            elif rest[0] == "rate-limit" and len(rest) >= 2 and rest[1].isdigit():
                rest = rest[2:]
            else:
                raise CliError(f"unknown input `{' '.join(rest)}'")
        return ""

    def show_version(self) -> str:
        return f"vpp v{VERSION} built by vppsim on vppsim at {BUILD_DATE}\n"

    def show_interface(self) -> str:
        lines = [
            f"{'Name':^32}{'Idx':^5}{'State':^10}{'MTU (L3/IP4/IP6/MPLS)':^21}"
            f"{'Counter':^16}{'Count':^16}"
        ]
        for itf in sorted(self.state.interfaces.values(), key=lambda i: i.name):
            state = "up" if itf.admin_up else "down"
            mtu = "/".join(str(m) for m in itf.mtu)
            lines.append(f"{itf.name:<32}{itf.sw_if_index:^5}{state:^10}{mtu:^21}")
        return "\n".join(lines) + "\n"

    def _if_name(self, sw_if_index: int) -> str:
        itf = self.state.interfaces.get(sw_if_index)
        return itf.name if itf else f"unknown-{sw_if_index}"

    def show_ip_fib(self) -> str:
        out: list[str] = []
        lb = 1
        for (is_ip6, table_id), name in sorted(self.state.tables.items()):
            if is_ip6:
                continue
            out.append(
                f"{name}, fib_index:{table_id}, flow hash:[src dst sport dport proto flowlabel ]"
                " epoch:0 flags:none locks:[default-route:1, ]"
            )
            entries: list[tuple[ipaddress.IPv4Network, list[str]]] = []
            entries.append((ipaddress.IPv4Network("0.0.0.0/0"), ["[@0]: dpo-drop ip4"]))
            if table_id == 0:
                for idx, addrs in self.state.addresses.items():
                    for a in addrs:
                        if a.version != 4:
                            continue
                        ifn = self._if_name(idx)
                        if a.network.prefixlen < 32:
                            entries.append(
                                (a.network, [f"[@4]: ipv4-glean: [src:{a.network}] {ifn}"])
                            )
                        entries.append(
                            (
                                ipaddress.IPv4Network(f"{a.ip}/32"),
                                [f"[@2]: dpo-receive: {a.ip} on {ifn}"],
                            )
                        )
            for route in self.state.routes.values():
                if route.table_id != table_id or route.prefix.version != 4:
                    continue
                paths = []
                for p in route.paths:
                    ifn = self._if_name(p["sw_if_index"]) if p["sw_if_index"] != NO_INDEX else ""
                    nh = p.get("nh")
                    if nh is not None and not nh.is_unspecified:
                        paths.append(f"[@5]: ipv4 via {nh} {ifn}".rstrip())
                    else:
                        paths.append(f"[@5]: ipv4-midchain: {ifn}".rstrip())
                entries.append((route.prefix, paths))
            for prefix, dpos in sorted(
                entries, key=lambda e: (int(e[0].network_address), e[0].prefixlen)
            ):
                out.append(str(prefix))
                out.append("  unicast-ip4-chain")
                out.append(
                    f"  [@0]: dpo-load-balance: [proto:ip4 index:{lb} buckets:{len(dpos)}"
                    f" uRPF:{lb} to:[0:0]]"
                )
                lb += 1
                out.extend(f"    [{i}] {d}" for i, d in enumerate(dpos))
        return "\n".join(out) + "\n"

    def show_ikev2_profile(self) -> str:
        out: list[str] = []
        for p in self.state.profiles.values():
            out.append(f"profile {p.name}")
            if p.auth_data:
                method = {1: "rsa-sig", 2: "shared-key-mic"}.get(p.auth_method, "unknown")
                head = f"  auth-method {method} auth data "
                out.append(_keyed(head + "0x", p.auth_data) if p.auth_hex
                           else head + p.auth_data.decode("latin-1"))
            if p.loc_id[1]:
                out.append(f"  local {format_id(p.loc_id)}")
            if p.rem_id[1]:
                out.append(f"  remote {format_id(p.rem_id)}")
            for side, ts in (("local", p.loc_ts), ("remote", p.rem_ts)):
                if ts is not None and not ts["start_addr"].is_unspecified:
                    out.append(
                        f"  {side} traffic-selector addr {ts['start_addr']} - {ts['end_addr']}"
                        f" port {ts['start_port']} - {ts['end_port']} protocol {ts['protocol_id']}"
                    )
            if p.tun_itf != NO_INDEX:
                out.append(f"  protected tunnel {self._if_name(p.tun_itf)}")
            if p.responder_sw_if_index != NO_INDEX:
                addr = p.responder_addr if p.responder_addr is not None else "0.0.0.0"
                out.append(
                    f"  responder {self._if_name(p.responder_sw_if_index)} {addr}"
                    f" {p.responder_hostname}"
                )
            if p.udp_encap:
                out.append("  udp-encap")
            if p.natt_disabled:
                out.append("  NAT-T disabled")
            if p.ipsec_over_udp_port != IPSEC_UDP_PORT_NONE:
                out.append(f"  ipsec-over-udp port {p.ipsec_over_udp_port}")
            ike = p.ike or {}
            if any(ike.get(k) for k in ("crypto_alg", "integ_alg", "dh_group", "crypto_key_size")):
                out.append(
                    f"  ike-crypto-alg {_name(ENCR, ike['crypto_alg'])} {ike['crypto_key_size']}"
                    f" ike-integ-alg {_name(INTEG, ike['integ_alg'])}"
                    f" ike-dh {_name(DH, ike['dh_group'])}"
                )
            esp = p.esp or {}
            if esp.get("crypto_alg") or esp.get("integ_alg"):
                out.append(
                    f"  esp-crypto-alg {_name(ENCR, esp['crypto_alg'])} {esp['crypto_key_size']}"
                    f" esp-integ-alg {_name(INTEG, esp['integ_alg'])}"
                )
            out.append(
                f"  lifetime {p.lifetime} jitter {p.lifetime_jitter} handover {p.handover}"
                f" maxdata {p.lifetime_maxdata}"
            )
        return "".join(f"{line}\n" for line in out)

    def show_ikev2_sa(self, details: bool) -> str:
        sas = self.state.visible_sas()
        if details and any(not sa.profile for sa in sas):
            # VPP 26.06 reads the name of profile ~0 for a half-open SA; the plain
            # listing computes that address but never reads it
            raise VppCrash("show ikev2 sa details with a half-open SA")
        return "".join(self._format_sa(sa, details) + "\n" for sa in sas)

    def _format_sa(self, sa: IkeSa, details: bool) -> str:
        s = f"iip {sa.iaddr} ispi {sa.ispi:x} rip {sa.raddr} rspi {sa.rspi:x}"
        if not details:
            return s
        now = self.state.clock()
        ike = sa.ike
        tr = []
        if ike.get("crypto_alg"):
            enc = _name(ENCR, ike["crypto_alg"])
            tr.append(
                f"encr:{enc}-{ike['crypto_key_size']}"
                if ike.get("crypto_key_size")
                else f"encr:{enc}"
            )
        tr.append(f"prf:{_name(PRF, ike.get('prf_alg') or 5)}" if ike else "")
        tr.append(f"integ:{_name(INTEG, ike['integ_alg'])}" if ike.get("integ_alg") else "")
        s += (
            "\n "
            + " ".join(tr)
            + (f" dh-group:{_name(DH, ike['dh_group'])}" if ike.get("dh_group") else "")
        )
        s += f"\n profile: {sa.profile}"
        s += f"\n state: {STATE_NAMES[sa.state]}"
        uptime = now - sa.auth_time if sa.auth_time else 0.0
        s += f"\n uptime: {uptime:f} (s)\n"
        k = sa.keys
        s += f"\n nonce i:{sa.nonces[0].hex()}\n       r:{sa.nonces[1].hex()}\n"
        s += _keyed(" SK_d    ", k.get("sk_d", b"")) + "\n"
        pairs = (("a", "sk_ai", "sk_ar"), ("e", "sk_ei", "sk_er"), ("p", "sk_pi", "sk_pr"))
        for name, ki, kr in pairs:
            if name == "a" and not k.get("sk_ai"):
                continue
            s += _keyed(f" SK_{name}  i:", k.get(ki, b"")) + "\n"
            s += _keyed("       r:", k.get(kr, b"")) + "\n"
        s += f" identifier (i) {format_id(sa.i_id)}\n"
        s += f" identifier (r) {format_id(sa.r_id)}\n"
        for child in sa.children:
            s += "   " + self._format_child(child, now)
        s += "Stats:\n keepalives :0\n"
        s += f" rekey :{sa.n_rekey}\n SA init :1 (retransmit: 0)\n retransmit: 0\n SA auth :1\n"
        return s

    def _format_child(self, c: ChildSa, now: float) -> str:
        enc = _name(ENCR, c.encr[0])
        enc = f"encr:{enc}-{c.encr[1]}" if c.encr[1] else f"encr:{enc}"
        integ = f"integ:{_name(INTEG, c.integ)} " if c.integ else ""
        s = f"child sa {c.index}:\n    uptime: {now - c.created:f} (s)\n    {enc} {integ}esn:no \n"
        s += f"    spi(i) {c.i_spi:x} spi(r) {c.r_spi:x}\n"
        # a strongSwan-backed child has no keys to show (charon keeps them to itself)
        k = c.keys
        s += _keyed("    SK_e  i:", k.get("sk_ei", b"")) + "\n"
        s += _keyed("          r:", k.get("sk_er", b"")) + "\n"
        if k.get("sk_ai"):
            s += _keyed("    SK_a  i:", k["sk_ai"]) + "\n"
            s += _keyed("          r:", k["sk_ar"]) + "\n"
        for label, ts in (("i", c.tsi), ("r", c.tsr)):
            s += f"    traffic selectors ({label}):"
            if ts is not None:
                kind = 7 if ts["start_addr"].version == 4 else 8
                s += (
                    f"0 type {kind} protocol_id {ts['protocol_id']} addr {ts['start_addr']}"
                    f" - {ts['end_addr']} port {ts['start_port']} - {ts['end_port']}\n"
                )
        return s
