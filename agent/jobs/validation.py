"""Strict validation of controller jobs into the peer manager's changes (`PeerSpec`s).

flexiManage validates little (see the protocol reference), so this module is the
last line of defence: every value is checked, and every rejection names the
controller's field path, the offending value and what is allowed, because the
administrator reads the message in the controller's UI. All problems of a job
are collected and reported together, one `field: value: reason; allowed: ...`
per problem, joined by " | ".

The PSK never appears in a message: it is wrapped in `Secret` while parsing, its
problems are described by length only, pydantic `input` values are never shown
for it or for any misplaced object or list, and as a last guard an offending value
that contains the raw PSK (pasted into another field) is shown masked.
`JobRejected` is raised outside of any `except` block so no exception chain can
carry pydantic's error (which holds the input) into a traceback.

Decisions (documented here because the controller's UI cannot express them):
- IKE with an AEAD cipher (AES-GCM-16, ChaCha20-Poly1305) has no integrity
  transform. flexiManage's UI still offers an IKE "integrity" with GCM; as in
  Cisco/Fortinet UIs, an HMAC chosen there selects the PRF (sha2-384 -> PRF
  sha2-384) and the integrity transform is 0. With `none`, the PRF is
  HMAC-SHA2-256 (5): VPP's own default for PRF 0, and what AWS, GCP and
  Cloudflare propose with GCM. GMAC is ESP-only and is rejected for IKE.
- ESP with an AEAD cipher must say integ `none`; ESP NULL needs AES-GMAC.
- Fixed-size ciphers (3des 192, des 64, null 0) ignore the wire `key-size`:
  flexiManage always sends 128 or 256 there.
- `pfs: true` with an empty ESP dh-group means PFS with the IKE group; a group
  given with `pfs: false` is contradictory and rejected.
- The PSK must be 8-1024 printable ASCII characters without whitespace: non-ASCII
  keys are a classic interop failure (the peer encodes them differently).
- Monitoring targets are de-duplicated (order kept); URLs are lower-cased.
- `srcPort` (the org's VXLAN port) is range-checked but unused by ipip peer tunnels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv4Interface, IPv6Address
from types import MappingProxyType
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from agent.jobs import vocab
from agent.jobs.models import (
    AddTunnelParams,
    ModifyTunnelParams,
    PeerParams,
    RemoveTunnelParams,
    SelectorParams,
    TransformParams,
    describe_type,
)
from agent.peers.changes import ModifyTargets, RemovePeer
from agent.peers.spec import (
    FULL_END,
    FULL_START,
    EspTransforms,
    Identity,
    IdType,
    IkeTransforms,
    PeerSpec,
    TrafficSelector,
)
from agent.secret import Secret

log = structlog.get_logger(__name__)

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
MAX_RENDERED = 64  # characters of an offending value shown in a message
MAX_PROBLEMS_SHOWN = 10

PSK_ALLOWED = f"1-{PSK_MAX} characters without whitespace or control characters"
DNS_ALLOWED = (
    "a DNS name: dot-separated labels of 1-63 letters, digits or hyphens "
    "(no hyphen at either end), at most 253 characters"
)
HOST_ALLOWED = "a bare host name such as monitoring.example.com (no scheme, path or port)"
UNICAST_ALLOWED = "a unicast IPv4 address (not 0.0.0.0, loopback, multicast, broadcast or 240/4)"
ROUTINGS = ("ospf", "bgp")
_OSPF_COST = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")
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


@dataclass(frozen=True)
class Problem:
    """One rejected value. `value` is already rendered and safe to show."""

    field: str  # controller path, e.g. "ikev2.ike.dh-group", "peer.ips[1]"
    value: str
    reason: str
    allowed: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: {self.value}: {self.reason}"
        return f"{text}; allowed: {self.allowed}" if self.allowed else text


class JobRejected(Exception):
    """A job the agent refuses; `message` is meant for the controller's operator.

    `field`, `value` and `allowed` describe the first problem; `problems` holds all.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("JobRejected needs at least one problem")
        self.problems: tuple[Problem, ...] = tuple(problems)
        first = self.problems[0]
        self.field = first.field
        self.value = first.value
        self.allowed = first.allowed
        shown = [str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        hidden = len(self.problems) - len(shown)
        if hidden:
            shown.append(f"and {hidden} more problem(s)")
        self.message = "; ".join(shown) if len(self.problems) == 1 else " | ".join(shown)
        super().__init__(self.message)

    def prefixed(self, prefix: str) -> list[Problem]:
        """The problems with `prefix` prepended to their field paths (nested requests)."""
        return [replace(p, field=prefix + p.field) for p in self.problems]


class JobNotSupported(JobRejected):
    """A well-formed request this agent does not implement (e.g. add-tunnel without peer)."""



# ---------------------------------------------------------------------------
# problem collection and safe rendering


def render(value: object) -> str:
    """A short, JSON-like rendering of a scalar; containers are named, never shown."""
    if isinstance(value, str):
        text = value if len(value) <= MAX_RENDERED else value[:MAX_RENDERED] + "..."
        return "'" + text.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return str(value)
    return describe_type(value)


@dataclass
class _Problems:
    """Collects problems; masks any of `secrets` that would otherwise be shown."""

    secrets: tuple[str, ...] = ()
    items: list[Problem] = field(default_factory=list)
    weak_fields: list[str] = field(default_factory=list)

    def add(self, fld: str, value: object, reason: str, allowed: str = "") -> None:
        """Record a problem. Only user-derived text is masked: the value, and the reason
        when the value held a secret (reasons may quote parts of the value)."""
        if isinstance(value, _Shown):
            shown = self._mask(value.text)
        else:
            # a PSK pasted into another field, as text or as a number: masked before
            # rendering (quoting may escape it) and after (a number is not text)
            shown = self._mask(render(self._mask(value) if isinstance(value, str) else value))
        self.items.append(Problem(self._mask(fld), shown, self._mask(reason),
                                  self._mask(allowed)))

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p.field, _Shown(p.value), p.reason, p.allowed)

    def _maskable(self) -> list[str]:
        # Very short strings would mask ordinary words; such a PSK is rejected anyway.
        return [s for s in self.secrets if len(s) >= 4]

    def _contains_secret(self, text: str) -> bool:
        return any(s in text for s in self._maskable())

    def _mask(self, text: str) -> str:
        for secret in self._maskable():
            text = text.replace(secret, Secret.MASK)
        return text

    def raise_if_any(self) -> None:
        if self.items:
            raise JobRejected(self.items)


@dataclass(frozen=True)
class _Shown:
    """Text already rendered for a message (not to be quoted again)."""

    text: str


_T = TypeVar("_T")


def _built(value: _T | None) -> _T:
    """The result of a validation that recorded no problem (never None then)."""
    if value is None:  # a defect, not bad input: say so rather than return garbage
        raise RuntimeError("validation produced no result and no problem")
    return value


def _raw_psks(params: object) -> tuple[str, ...]:
    """The raw PSK strings anywhere in a job, so they can be masked in messages."""
    found: list[str] = []
    if isinstance(params, Mapping):
        ikev2 = params.get("ikev2")
        if isinstance(ikev2, Mapping) and isinstance(ikev2.get("psk"), str):
            found.append(ikev2["psk"])
        requests = params.get("requests")
        if isinstance(requests, list):
            for sub in requests:
                if isinstance(sub, Mapping):
                    found.extend(_raw_psks(sub.get("params")))
    return tuple(found)


# ---------------------------------------------------------------------------
# pydantic shape errors -> problems

_TYPE_ERRORS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "wire_int": ("not an integer", "an integer (JSON number or string of digits)"),
        "string_type": ("not a string", "a string"),
        "psk_type": ("not a string", PSK_ALLOWED),
        "bool_type": ("not a boolean", "true or false"),
        "model_type": ("not an object", "a JSON object"),
        "model_attributes_type": ("not an object", "a JSON object"),
        "dict_type": ("not an object", "a JSON object"),
        "list_type": ("not a list", "a JSON list"),
        "wire_name": ("not a string or an integer", "a string or an integer"),
    }
)

_REQUIRED_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "encryption-mode": "ikev2",
        "dev_id": "the dev_id of the WAN interface",
        "tunnel-id": f"{TUNNEL_ID_MIN}-{TUNNEL_ID_MAX}",
        "src": "the IPv4 address of dev_id",
        "dst": "the peer's public IPv4 address",
        "peer.addr": "an IPv4 /31 interface address such as 10.100.0.16/31",
        "ikev2": "an object with the IKEv2 parameters",
        "ikev2.role": ", ".join(ROLES),
        "ikev2.mode": "psk",
        "ikev2.psk": PSK_ALLOWED,
        "ikev2.local-device-id-type": ", ".join(vocab.ID_TYPE_NAMES),
        "ikev2.remote-device-id-type": ", ".join(vocab.ID_TYPE_NAMES),
        "ikev2.local-device-id": "an identity matching local-device-id-type",
        "ikev2.remote-device-id": "an identity matching remote-device-id-type",
        "ikev2.ike": "an object with crypto-alg, integ-alg, dh-group, key-size",
        "ikev2.esp": "an object with crypto-alg, integ-alg, dh-group, key-size",
    }
)
_SECRET_PATHS = frozenset({"ikev2.psk"})
_CONTAINER_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type", "list_type"})
_INDEX = re.compile(r"\[\d+\]")


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shape_problems(exc: ValidationError, p: _Problems) -> None:
    for err in exc.errors(include_url=False):
        path = _loc_path(err["loc"])
        generic = _INDEX.sub("[]", path)
        if err["type"] == "missing":
            # `input` of a missing-field error is the whole parent object: never shown.
            p.add(path, _Shown("(missing)"), "required field", _REQUIRED_HINTS.get(generic, ""))
            continue
        reason, allowed = _TYPE_ERRORS.get(err["type"], (str(err["msg"]), ""))
        value = err.get("input")
        # Where an object or list belongs, a wrong value may be anything (even the PSK
        # itself, if `ikev2` were a string): show only its type there, as for the PSK.
        hide = generic in _SECRET_PATHS or err["type"] in _CONTAINER_ERRORS
        shown = describe_type(value) if hide else render(value)
        p.add(path, _Shown(shown), reason, allowed)


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], params: object, p: _Problems) -> _M | None:
    if not isinstance(params, Mapping):
        p.add("params", _Shown(describe_type(params)), "not an object", "a JSON object")
        return None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        _shape_problems(exc, p)
    return None


# ---------------------------------------------------------------------------
# value checks (each records a problem and returns None when the value is bad)


def _ipv4(p: _Problems, fld: str, text: str, *, unicast: bool = True) -> IPv4Address | None:
    try:
        addr = IPv4Address(text)
    except AddressValueError:
        if _is_ipv6(text):
            p.add(fld, text, "IPv6 is not supported", "an IPv4 address")
        else:
            p.add(fld, text, "not an IPv4 address", "a dotted-quad IPv4 address")
        return None
    if unicast and not _is_unicast(addr):
        p.add(fld, text, "not a unicast address", UNICAST_ALLOWED)
        return None
    return addr


def _is_ipv6(text: str) -> bool:
    try:
        IPv6Address(text.split("/", 1)[0])
    except ValueError:
        return False
    return True


def _is_unicast(addr: IPv4Address) -> bool:
    return not (
        addr.is_unspecified
        or addr.is_loopback
        or addr.is_multicast
        or addr.is_reserved  # 240/4 including the limited broadcast
        or addr.is_link_local
    )


def _in_range(p: _Problems, fld: str, value: int, low: int, high: int, unit: str = "") -> bool:
    if low <= value <= high:
        return True
    p.add(fld, value, "out of range", f"{low}-{high}{unit}")
    return False


def dns_name_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS host name, or None if it is."""
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


def _identity(p: _Problems, fld: str, type_fld: str, type_name: str, value: str) -> Identity | None:
    id_type = vocab.ID_TYPES.get(type_name.strip().lower())
    if id_type is None:
        p.add(type_fld, type_name, "unknown ID type", ", ".join(vocab.ID_TYPE_NAMES))
        return None
    if id_type is IdType.IP4_ADDR:
        addr = _ipv4(p, fld, value, unicast=False)
        if addr is None:
            return None
        if addr.is_unspecified:
            p.add(
                fld, value, "not a usable ip4-addr identity", "an IPv4 address other than 0.0.0.0"
            )
            return None
        return Identity(id_type, str(addr))
    if id_type is IdType.FQDN:
        why = dns_name_problem(value)
        if why:
            p.add(fld, value, f"not a valid fqdn identity ({why})", DNS_ALLOWED)
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


VPP_ID_MAX = 63  # bytes of an IKE identity VPP's dumps keep (string data[64])


def _vpp_id_fits(p: _Problems, fld: str, value: str) -> bool:
    """VPP negotiates longer IDs but dumps only 63 bytes of them: reconcile would never
    see the configured ID and re-create the profile forever."""
    size = len(value.encode("utf-8"))
    if size > VPP_ID_MAX:
        p.add(fld, value, f"{size} bytes, longer than VPP keeps in its profile and SA dumps",
              f"at most {VPP_ID_MAX} bytes")
        return False
    return True


def _monitor_targets(
    p: _Problems, prefix: str, ips: Sequence[str], urls: Sequence[str]
) -> tuple[tuple[IPv4Address, ...], tuple[str, ...]]:
    good_ips: list[IPv4Address] = []
    for i, text in enumerate(ips):
        addr = _ipv4(p, f"{prefix}ips[{i}]", text)
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


def _selector(p: _Problems, fld: str, ts: SelectorParams | None) -> TrafficSelector | None:
    if ts is None:
        return TrafficSelector(0, 0, 65535, FULL_START, FULL_END)
    ok = True
    protocol = vocab.PROTOCOLS.get(ts.protocol.strip().lower())
    if protocol is None:
        p.add(f"{fld}.protocol", ts.protocol, "unknown protocol", ", ".join(vocab.PROTOCOLS))
        ok = False
    ok &= _in_range(p, f"{fld}.start-port", ts.start_port, 0, 65535)
    ok &= _in_range(p, f"{fld}.end-port", ts.end_port, 0, 65535)
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
    start = _ipv4(p, f"{fld}.start-addr", ts.start_addr, unicast=False)
    end = _ipv4(p, f"{fld}.end-addr", ts.end_addr, unicast=False)
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


# ---------------------------------------------------------------------------
# crypto


def _cipher(
    p: _Problems, fld: str, t: TransformParams, *, ike: bool, policy: ValidationPolicy
) -> tuple[vocab.Cipher, int] | None:
    weak_ok = policy.allow_weak_crypto
    allowed = ", ".join(vocab.cipher_names(ike=ike, allow_weak=weak_ok))
    found = vocab.lookup_cipher(t.crypto_alg)
    name_fld = f"{fld}.crypto-alg"
    if found is None:
        if t.crypto_alg.strip().lower() in vocab.UNSUPPORTED_CIPHERS:
            p.add(name_fld, t.crypto_alg, "not supported by VPP's IKEv2 plugin", allowed)
        else:
            p.add(name_fld, t.crypto_alg, "unknown encryption algorithm", allowed)
        return None
    cipher, implied = found
    if not _vpp_implements(p, name_fld, t.crypto_alg, cipher.vpp, allowed):
        return None
    if ike and not cipher.ike:
        p.add(name_fld, t.crypto_alg, f"{cipher.name} is for ESP only, not IKE", allowed)
        return None
    weak = cipher.weak or (ike and cipher.name == "null")
    if weak:
        if not weak_ok:
            p.add(
                name_fld,
                t.crypto_alg,
                WEAK_REASON,
                allowed,
            )
            return None
        p.weak_fields.append(name_fld)
    if not cipher.key_sizes:
        return cipher, cipher.fixed_key_size
    size_fld = f"{fld}.key-size"
    sizes = ", ".join(str(s) for s in cipher.key_sizes)
    size = t.key_size
    if size is None:
        if implied is None:
            p.add(size_fld, _Shown("(missing)"), f"required with {cipher.name}", sizes)
            return None
        size = implied
    elif implied is not None and size != implied:
        p.add(
            size_fld,
            size,
            f"conflicts with {render(t.crypto_alg)} which implies {implied}",
            str(implied),
        )
        return None
    if size not in cipher.key_sizes:
        p.add(size_fld, size, f"not a key size of {cipher.name}", sizes)
        return None
    return cipher, size


def _integrity(
    p: _Problems, fld: str, name: str, policy: ValidationPolicy, allowed: str
) -> vocab.Integrity | None:
    integ = vocab.lookup_integrity(name)
    if integ is None:
        if name.strip().lower() in vocab.UNSUPPORTED_INTEGS:
            p.add(fld, name, "not supported by VPP's IKEv2 plugin", allowed)
        else:
            p.add(fld, name, "unknown integrity algorithm", allowed)
        return None
    if not _vpp_implements(p, fld, name, integ.vpp, allowed):
        return None
    return integ if _weak_allowed(p, fld, name, integ.weak, policy, allowed) else None


def _vpp_implements(p: _Problems, fld: str, name: str, implemented: bool, allowed: str) -> bool:
    """Refuse what VPP 26.06's IKEv2 plugin lacks (DES, 3DES, MD5), whatever the weak-crypto
    policy: VPP would accept the profile and fail every negotiation later."""
    if not implemented:
        p.add(fld, name, "not implemented by VPP 26.06's IKEv2 plugin (refused even with "
                         "allow_weak_crypto)", allowed)
    return implemented


def _weak_allowed(p: _Problems, fld: str, name: str, weak: bool, policy: ValidationPolicy,
                  allowed: str) -> bool:
    """Refuse a weak choice unless the policy allows it (then remember it for the log)."""
    if not weak:
        return True
    if not policy.allow_weak_crypto:
        p.add(fld, name, WEAK_REASON, allowed)
        return False
    p.weak_fields.append(fld)
    return True


def _dh(
    p: _Problems, fld: str, name: str, policy: ValidationPolicy, *, required: bool
) -> vocab.DhGroup | None:
    allowed = ", ".join(vocab.dh_names(allow_weak=policy.allow_weak_crypto, include_none=False))
    group = vocab.lookup_dh(name)
    if group is None:
        if required and not name.strip():
            p.add(fld, name, "a DH group is required for IKE", allowed)
        else:
            p.add(fld, name, "unknown DH group", allowed)
        return None
    if required and group.iana == 0:
        p.add(fld, name, "a DH group is required for IKE", allowed)
        return None
    return group if _weak_allowed(p, fld, name, group.weak, policy, allowed) else None


def _ike_transforms(
    p: _Problems, t: TransformParams, policy: ValidationPolicy
) -> IkeTransforms | None:
    fld = "ikev2.ike"
    hmacs = ", ".join(vocab.hmac_names(allow_weak=policy.allow_weak_crypto))
    found = _cipher(p, fld, t, ike=True, policy=policy)
    integ_allowed = f"none, {hmacs}" if found is not None and found[0].aead else hmacs
    integ = _integrity(p, f"{fld}.integ-alg", t.integ_alg, policy, integ_allowed)
    dh = _dh(p, f"{fld}.dh-group", t.dh_group, policy, required=True)
    if found is None or integ is None or dh is None:
        return None
    cipher, size = found
    if integ.gmac:
        p.add(f"{fld}.integ-alg", t.integ_alg, "AES-GMAC is for ESP only, not IKE", integ_allowed)
        return None
    if cipher.aead:
        # See the module docstring: an HMAC given with an AEAD cipher selects the PRF.
        prf = integ.prf if integ.prf is not None else vocab.PRF_HMAC_SHA2_256
        return IkeTransforms(cipher.iana, size, 0, prf, dh.iana)
    if integ.prf is None:
        p.add(
            f"{fld}.integ-alg",
            t.integ_alg,
            f"an integrity algorithm is required with {cipher.name}",
            hmacs,
        )
        return None
    return IkeTransforms(cipher.iana, size, integ.iana, integ.prf, dh.iana)


def _esp_transforms(
    p: _Problems, t: TransformParams, pfs: bool, ike_dh: int | None, policy: ValidationPolicy
) -> EspTransforms | None:
    fld = "ikev2.esp"
    hmacs = ", ".join(vocab.hmac_names(allow_weak=policy.allow_weak_crypto))
    found = _cipher(p, fld, t, ike=False, policy=policy)
    integ_fld = f"{fld}.integ-alg"
    integ = _integrity(p, integ_fld, t.integ_alg, policy, hmacs)
    dh_group = _esp_dh(p, t.dh_group, pfs, ike_dh, policy)
    if found is None or integ is None or dh_group is None:
        return None
    cipher, size = found
    if cipher.aead and integ.iana != 0:
        p.add(integ_fld, t.integ_alg, f"must be none with AEAD cipher {cipher.name}", "none")
        return None
    if cipher.name == "null" and not integ.gmac:
        p.add(
            integ_fld,
            t.integ_alg,
            "null encryption needs AES-GMAC integrity",
            ", ".join(vocab.gmac_names()),
        )
        return None
    if not cipher.aead and cipher.name != "null":
        if integ.gmac:
            p.add(integ_fld, t.integ_alg, "AES-GMAC integrity only with null encryption", hmacs)
            return None
        if integ.iana == 0:
            p.add(
                integ_fld,
                t.integ_alg,
                f"an integrity algorithm is required with {cipher.name}",
                hmacs,
            )
            return None
    return EspTransforms(cipher.iana, size, integ.iana, dh_group)


def _esp_dh(
    p: _Problems, name: str, pfs: bool, ike_dh: int | None, policy: ValidationPolicy
) -> int | None:
    fld = "ikev2.esp.dh-group"
    key = name.strip().lower()
    if not pfs:
        if key in ("", "none"):
            return 0
        p.add(fld, name, "a PFS group with pfs false", "'' or none unless pfs is true")
        return None
    if key == "":
        return ike_dh if ike_dh is not None else 0  # 0 only when the IKE group is already rejected
    if key == "none":
        p.add(fld, name, "pfs is true but the group is none", "'' (the IKE group) or a DH group")
        return None
    group = _dh(p, fld, name, policy, required=False)
    return None if group is None else group.iana


def _psk(p: _Problems, psk: str, tunnel_id: int | None, policy: ValidationPolicy) -> bool:
    # surrogatepass: a lone surrogate (valid JSON "\ud800") is refused below, not a crash
    size = len(psk.encode("utf-8", "surrogatepass"))
    shown = _Shown(f"{size} bytes")
    if size == 0 or size > PSK_MAX:
        p.add("ikev2.psk", shown, "empty" if size == 0 else "too long", PSK_ALLOWED)
        return False
    if size < policy.psk_min_length:
        p.add("ikev2.psk", shown,
              f"too short for the device's security policy ([security] psk_min_length = "
              f"{policy.psk_min_length})", f"at least {policy.psk_min_length} bytes")
        return False
    if any(ch.isspace() for ch in psk):
        p.add("ikev2.psk", shown, "contains whitespace", PSK_ALLOWED)
        return False
    if any("\ud800" <= ch <= "\udfff" for ch in psk):  # cannot become UTF-8 for VPP
        p.add("ikev2.psk", shown, "not valid Unicode text (a lone surrogate)", PSK_ALLOWED)
        return False
    if not psk.isprintable():
        p.add("ikev2.psk", shown, "contains control characters", PSK_ALLOWED)
        return False
    if size < PSK_RECOMMENDED_MIN:
        log.warning(
            "psk_shorter_than_recommended",
            tunnel_id=tunnel_id,
            length=size,
            recommended_min=PSK_RECOMMENDED_MIN,
        )
    return True


# ---------------------------------------------------------------------------
# messages


def normalize_add_tunnel(params: Mapping[str, Any], policy: ValidationPolicy) -> PeerSpec:
    """Validate `add-tunnel` params of a peer tunnel into a `PeerSpec`.

    Raises `JobNotSupported` for an add-tunnel without `peer` and `JobRejected`
    listing every problem otherwise.
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
    p = _Problems(secrets=_raw_psks(params))
    model = _parse(AddTunnelParams, params, p)
    spec = None if model is None else _add_tunnel(p, model, policy)
    _psk_elsewhere(p, params)
    p.raise_if_any()
    return _built(spec)


def _psk_elsewhere(p: _Problems, params: object) -> None:
    """Refuse the PSK pasted into another field: it would reach VPP, logs and the CLI
    as an ID, interface name or number that nobody masks."""
    reported = {pr.field for pr in p.items}

    def walk(value: object, path: str) -> None:
        if path == "ikev2.psk" or path.endswith(".ikev2.psk"):
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, str | int | float) and not isinstance(value, bool) \
                and not any(path == f or path.startswith((f + ".", f + "[")) for f in reported) \
                and p._contains_secret(str(value)):
            p.add(path, value, "contains the pre-shared key",
                  "a value that does not contain ikev2.psk")

    walk(params, "")


def _add_tunnel(p: _Problems, m: AddTunnelParams, policy: ValidationPolicy) -> PeerSpec | None:
    if m.encryption_mode != "ikev2":
        p.add("encryption-mode", m.encryption_mode, "not supported for peer tunnels", "ikev2")
    tunnel_ok = _in_range(p, "tunnel-id", m.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
    if not m.dev_id or len(m.dev_id) > 255 or not m.dev_id.isprintable() or " " in m.dev_id:
        p.add("dev_id", m.dev_id, "not an interface id", "the non-empty dev_id of a WAN interface")
    if m.src_port is not None:
        _in_range(p, "srcPort", m.src_port, 0, 65535)
    src = _ipv4(p, "src", m.src)
    dst = _ipv4(p, "dst", m.dst)
    if src is not None and dst is not None and src == dst:
        p.add("dst", m.dst, "same as src", "the peer's public IPv4 address")
    peer = _peer(p, m.peer, src, dst)

    ik = m.ikev2
    tunnel_id = m.tunnel_id if tunnel_ok else None
    if ik.role not in ROLES:
        p.add("ikev2.role", ik.role, "unknown role", ", ".join(ROLES))
    if ik.mode != "psk":
        p.add("ikev2.mode", ik.mode, "not supported for peer tunnels", "psk")
    psk_ok = _psk(p, ik.psk.reveal(), tunnel_id, policy)
    local_id = _identity(
        p, "ikev2.local-device-id", "ikev2.local-device-id-type", ik.local_id_type, ik.local_id
    )
    remote_id = _identity(
        p, "ikev2.remote-device-id", "ikev2.remote-device-id-type", ik.remote_id_type, ik.remote_id
    )
    _in_range(
        p,
        "ikev2.lifetime",
        ik.lifetime,
        policy.child_lifetime_min,
        policy.child_lifetime_max,
        " seconds",
    )
    _in_range(
        p,
        "ikev2.ike_lifetime",
        ik.ike_lifetime,
        policy.ike_lifetime_min,
        policy.ike_lifetime_max,
        " seconds",
    )
    ike = _ike_transforms(p, ik.ike, policy)
    esp = _esp_transforms(p, ik.esp, ik.pfs, None if ike is None else ike.dh_group, policy)
    local_ts = _selector(p, "ikev2.local-ts", ik.local_ts)
    remote_ts = _selector(p, "ikev2.remote-ts", ik.remote_ts)

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
    p: _Problems, m: PeerParams, src: IPv4Address | None, dst: IPv4Address | None
) -> _Peer | None:
    before = len(p.items)
    addr = _peer_addr(p, m.addr, src, dst)
    if m.routing not in ROUTINGS:
        p.add("peer.routing", m.routing, "unknown routing", ", ".join(ROUTINGS))
    mtu_ok = m.mtu is None or _in_range(p, "peer.mtu", m.mtu, MTU_MIN, MTU_MAX)
    if m.tcp_mss_clamp is not None:
        high = m.mtu - 40 if m.mtu is not None and mtu_ok else MTU_MAX
        _in_range(p, "peer.tcp-mss-clamp", m.tcp_mss_clamp, MSS_MIN, high)
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
    ips, urls = _monitor_targets(p, "peer.", m.ips, m.urls)
    if len(p.items) != before or addr is None:
        return None
    return _Peer(addr, area, tuple(labels), ips, urls)


def _peer_addr(
    p: _Problems, text: str, src: IPv4Address | None, dst: IPv4Address | None
) -> IPv4Interface | None:
    fld = "peer.addr"
    allowed = "an IPv4 /31 interface address such as 10.100.0.16/31"
    if "/" not in text:
        p.add(fld, text, "no prefix length", allowed)
        return None
    try:
        addr = IPv4Interface(text)
    except ValueError:
        reason = "IPv6 is not supported" if _is_ipv6(text) else "not an IPv4 interface address"
        p.add(fld, text, reason, allowed)
        return None
    if addr.network.prefixlen != 31:
        p.add(fld, text, f"prefix length /{addr.network.prefixlen}", allowed)
        return None
    if not all(_is_unicast(a) for a in addr.network):
        p.add(fld, text, "not a unicast /31", allowed)
        return None
    for name, outer in (("src", src), ("dst", dst)):
        if outer is not None and outer in addr.network:
            p.add(fld, text, f"the /31 contains {name} {outer}", "a /31 not containing src or dst")
            return None
    return addr


def _ospf_area(p: _Problems, text: str) -> str | None:
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
    p = _Problems()
    model = _parse(RemoveTunnelParams, params, p)
    if model is not None:
        _in_range(p, "tunnel-id", model.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
    p.raise_if_any()
    return RemovePeer(_built(model).tunnel_id)


def normalize_modify_tunnel(params: Mapping[str, Any]) -> ModifyTargets:
    """The new monitoring targets of a `modify-tunnel` (none for alert thresholds only,
    which are checked here and recorded with the configuration, not applied to VPP)."""
    p = _Problems()
    model = _parse(ModifyTunnelParams, params, p)
    result = None
    if model is not None:
        _in_range(p, "tunnel-id", model.tunnel_id, TUNNEL_ID_MIN, TUNNEL_ID_MAX)
        ips: tuple[IPv4Address, ...] | None = None
        urls: tuple[str, ...] | None = None
        if model.peer is not None:
            got_ips, got_urls = _monitor_targets(p, "peer.", model.peer.ips or [],
                                                 model.peer.urls or [])
            ips = None if model.peer.ips is None else got_ips
            urls = None if model.peer.urls is None else got_urls
        if model.notifications is not None:
            notification_problems(p, "notificationsSettings", model.notifications)
        result = ModifyTargets(model.tunnel_id, ips, urls)
    p.raise_if_any()
    return _built(result)


def notification_problems(p: _Problems, fld: str, settings: Mapping[str, Any]) -> None:
    """Per-event thresholds: objects whose warning/critical thresholds are numbers or null."""
    for event, rule in settings.items():
        if not isinstance(rule, Mapping):
            p.add(f"{fld}.{event}", _Shown(describe_type(rule)), "not an object",
                  "{warningThreshold, criticalThreshold, ...}")
            continue
        for key in ("warningThreshold", "criticalThreshold"):
            value = rule.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)):
                p.add(f"{fld}.{event}.{key}", value, "not a number", "a number or null")


def rejection(problems: Sequence[Problem], params: object) -> JobRejected:
    """A `JobRejected` for problems found anywhere in a job, with every PSK of the job
    (nested requests included) masked wherever it was pasted."""
    p = _Problems(secrets=_raw_psks(params))
    p.extend(problems)
    return JobRejected(p.items)


def pasted_psk_problems(params: object, known: Sequence[Problem] = ()) -> list[Problem]:
    """Fields of a whole job (aggregated, sync-device) that hold one of its PSKs, e.g.
    one request's PSK pasted into another request; fields in `known` are not repeated."""
    p = _Problems(secrets=_raw_psks(params))
    p.extend(known)
    _psk_elsewhere(p, params)
    return list(p.items[len(known):])
