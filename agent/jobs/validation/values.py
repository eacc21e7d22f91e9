"""Value checks: addresses, ranges, DNS names, IKE identities, monitoring targets and
traffic selectors. Each records a problem and returns None (or False) when the
value is bad."""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import AddressValueError, IPv4Address, IPv6Address

from agent.iptext import parse_ipv4
from agent.jobs import vocab
from agent.jobs.models import SelectorParams
from agent.jobs.validation.policy import HOST_ALLOWED, UNICAST_ALLOWED
from agent.jobs.validation.problems import Problems, render
from agent.peers.spec import FULL_END, FULL_START, Identity, IdType, TrafficSelector


def ipv4(p: Problems, fld: str, text: str, *, unicast: bool = True) -> IPv4Address | None:
    try:
        addr = parse_ipv4(text)
    except AddressValueError:
        if is_ipv6(text):
            p.add(fld, text, "IPv6 is not supported", "an IPv4 address")
        else:
            p.add(fld, text, "not an IPv4 address", "a dotted-quad IPv4 address")
        return None
    if unicast and not is_unicast(addr):
        p.add(fld, text, "not a unicast address", UNICAST_ALLOWED)
        return None
    return addr


def is_ipv6(text: str) -> bool:
    try:
        IPv6Address(text.split("/", 1)[0])
    except ValueError:
        return False
    return True


def is_unicast(addr: IPv4Address | int) -> bool:
    """Not unspecified, loopback 127/8, multicast 224/4, reserved 240/4 (the limited
    broadcast included) or link-local 169.254/16: the ipaddress properties, as integer
    comparisons (they are called for every address of a job)."""
    value = int(addr)
    return (0 < value < 0xE0000000 and value >> 24 != 0x7F and value >> 16 != 0xA9FE)


def in_range(p: Problems, fld: str, value: int, low: int, high: int, unit: str = "") -> bool:
    if low <= value <= high:
        return True
    p.add(fld, value, "out of range", f"{low}-{high}{unit}")
    return False


# A valid host name in one match (the common case): labels of 1-63 letters, digits and
# hyphens, not starting or ending with a hyphen.
_HOST_NAME = re.compile(r"(?:(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def dns_name_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS host name, or None if it is."""
    if len(name) <= 253 and _HOST_NAME.fullmatch(name) \
            and not name.rpartition(".")[2].isdigit():
        return None
    return _dns_name_reason(name)


def _dns_name_reason(name: str) -> str | None:
    if not name:
        return "empty"
    if len(name) > 253:
        return f"{len(name)} characters, more than 253"
    labels = name.split(".")
    for label in labels:
        if not label:
            return "empty label"
        if len(label) > 63:
            return f"label of {len(label)} characters, more than 63"
        if not re.fullmatch(r"[A-Za-z0-9-]+", label):
            return f"label {render(label)} has characters other than letters, digits and hyphen"
        if label[0] == "-" or label[-1] == "-":
            return f"label {render(label)} starts or ends with a hyphen"
    if labels[-1].isdigit():
        return "numeric top-level label (an IP address is not a DNS name)"
    return None


_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def identity(p: Problems, fld: str, type_fld: str, type_name: str, value: str) -> Identity | None:
    id_type = vocab.ID_TYPES.get(type_name.strip().lower())
    if id_type is None:
        p.add(type_fld, type_name, "unknown ID type", ", ".join(vocab.ID_TYPE_NAMES))
        return None
    if id_type is IdType.IP4_ADDR:
        addr = ipv4(p, fld, value, unicast=False)
        if addr is None:
            return None
        if addr.is_unspecified:
            p.add(
                fld, value, "not a usable ip4-addr identity", "an IPv4 address other than 0.0.0.0"
            )
            return None
        return Identity(id_type, str(addr))
    if id_type is IdType.FQDN:
        # an ID_FQDN is an opaque string to IKE (RFC 7296 3.5): VPP and flexiagent take it
        # as given and flexiManage checks only for spaces, so neither DNS syntax nor an
        # address-like text is refused (a refusal here would loop sync-device)
        if not value or not all("!" <= c <= "~" for c in value):
            p.add(fld, value, "not a usable fqdn identity (empty, or blanks, control or "
                  "non-ASCII characters)", FQDN_ID_ALLOWED)
            return None
        return Identity(id_type, value) if _vpp_id_fits(p, fld, value) else None
    local, at, domain = value.rpartition("@")
    rfc822_allowed = "local@domain, e.g. tunnel@example.com"
    if not at or not local:
        p.add(fld, value, "not an rfc822 identity (no local@domain)", rfc822_allowed)
        return None
    if len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local):
        p.add(fld, value, "invalid local part of rfc822 identity", rfc822_allowed)
        return None
    why = dns_name_problem(domain)
    if why:
        p.add(fld, value, f"invalid domain of rfc822 identity ({why})", rfc822_allowed)
        return None
    return Identity(id_type, value) if _vpp_id_fits(p, fld, value) else None


FQDN_ID_ALLOWED = "printable ASCII without blanks, e.g. vpn.example.com"
# VPP 26.06 takes IDs of up to 1024 bytes (IKEV2_MAX_DATA_LEN, ikev2_api.c); its dumps
# show 63 of them, which reconcile allows for (ProfileKind's ID comparison)
VPP_ID_MAX = 1024


def _vpp_id_fits(p: Problems, fld: str, value: str) -> bool:
    size = len(value.encode("utf-8"))
    if size > VPP_ID_MAX:
        p.add(fld, value, f"{size} bytes, longer than VPP takes", f"at most {VPP_ID_MAX} bytes")
        return False
    return True


def monitor_targets(
    p: Problems, prefix: str, ips: Sequence[str], urls: Sequence[str]
) -> tuple[tuple[IPv4Address, ...], tuple[str, ...]]:
    good_ips: list[IPv4Address] = []
    for i, text in enumerate(ips):
        addr = ipv4(p, f"{prefix}ips[{i}]", text)
        if addr is not None and addr not in good_ips:
            good_ips.append(addr)
    good_urls: list[str] = []
    for i, text in enumerate(urls):
        fld = f"{prefix}urls[{i}]"
        if "://" in text:
            p.add(fld, text, "a URL, not a host name", HOST_ALLOWED)
        elif "/" in text:
            p.add(fld, text, "contains a path", HOST_ALLOWED)
        elif ":" in text:
            p.add(fld, text, "contains a port", HOST_ALLOWED)
        elif (why := dns_name_problem(text)) is not None:
            p.add(fld, text, f"not a valid host name ({why})", HOST_ALLOWED)
        elif text.lower() not in good_urls:
            good_urls.append(text.lower())
    return tuple(good_ips), tuple(good_urls)


def selector(p: Problems, fld: str, ts: SelectorParams | None) -> TrafficSelector | None:
    if ts is None:
        return TrafficSelector(0, 0, 65535, FULL_START, FULL_END)
    ok = True
    protocol = vocab.PROTOCOLS.get(ts.protocol.strip().lower())
    if protocol is None:
        p.add(f"{fld}.protocol", ts.protocol, "unknown protocol", ", ".join(vocab.PROTOCOLS))
        ok = False
    ok &= in_range(p, f"{fld}.start-port", ts.start_port, 0, 65535)
    ok &= in_range(p, f"{fld}.end-port", ts.end_port, 0, 65535)
    if ok and ts.start_port > ts.end_port:
        p.add(
            f"{fld}.end-port",
            ts.end_port,
            f"lower than start-port {ts.start_port}",
            "end-port >= start-port",
        )
        ok = False
    if ok and protocol == 0 and (ts.start_port, ts.end_port) != (0, 65535):
        # RFC 7296 3.13.1: without a protocol, ports are undefined and must span 0-65535.
        p.add(
            f"{fld}.protocol",
            ts.protocol,
            f"protocol any cannot restrict ports ({ts.start_port}-{ts.end_port})",
            "ports 0-65535 with protocol any; tcp, udp or icmp for a port range",
        )
        ok = False
    start = ipv4(p, f"{fld}.start-addr", ts.start_addr, unicast=False)
    end = ipv4(p, f"{fld}.end-addr", ts.end_addr, unicast=False)
    if start is not None and end is not None and start > end:
        p.add(
            f"{fld}.end-addr",
            ts.end_addr,
            f"lower than start-addr {start}",
            "end-addr >= start-addr",
        )
        return None
    if not ok or start is None or end is None or protocol is None:
        return None
    return TrafficSelector(protocol, ts.start_port, ts.end_port, start, end)
