"""Controller messages -> the policy model. Pure code.

`add-application` carries the application database (base64 of zlib-deflated JSON
for agents >= 5, a plain array as fallback); `add-multilink-policy` carries the
enabled rules. A rule classifies by prefix/ports/protocol or by application (resolved
here through the database, so the rest of the room only sees matches), and acts
through an ordered list of link groups selected by path label.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

MAX_PRIORITY = 1000
MAX_RULE_ID = 59  # "mlp:" + id must fit VPP's 64-byte ACL tag with its NUL


class PolicyError(ValueError):
    """A policy or application message the agent cannot use; the text says why."""


class Protocol(enum.StrEnum):
    ANY = ""
    TCP = "tcp"
    UDP = "udp"


class Order(enum.StrEnum):
    PRIORITY = "priority"
    LOAD_BALANCING = "load-balancing"
    LINK_QUALITY = "link-quality"


class Fallback(enum.StrEnum):
    DROP = "drop"
    BY_DESTINATION = "by-destination"


@dataclass(frozen=True)
class Match:
    """One classification entry: destination prefix (None = any), port range, protocol."""

    prefix: IPv4Network | None = None
    ports: tuple[int, int] | None = None
    protocol: Protocol = Protocol.ANY

    def describe(self) -> str:
        parts = [str(self.prefix) if self.prefix else "any"]
        if self.ports:
            lo, hi = self.ports
            parts.append(f"port {lo}" if lo == hi else f"ports {lo}-{hi}")
        if self.protocol:
            parts.append(self.protocol.value)
        return " ".join(parts)


@dataclass(frozen=True)
class Application:
    id: str
    name: str
    category: str
    service_class: str
    importance: str
    matches: tuple[Match, ...]


@dataclass(frozen=True)
class Group:
    labels: tuple[str, ...]
    order: Order


@dataclass(frozen=True)
class Rule:
    id: str
    priority: int
    matches: tuple[Match, ...]
    classification: str  # what the operator reads: "prefix 10.0.0.0/8 tcp" / "app youtube"
    groups: tuple[Group, ...]
    group_order: Order  # priority or load-balancing between groups
    fallback: Fallback
    apply_on_wan_rx: bool = False
    override_default_route: bool = True


@dataclass(frozen=True)
class Policy:
    id: str
    rules: tuple[Rule, ...]  # sorted by priority (then id): the order VPP evaluates them

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(label for r in self.rules for g in r.groups for label in g.labels)


# -- add-application ---------------------------------------------------------------


def decode_applications(raw: Any) -> list[Any]:
    """The `applications` value as a list: base64(zlib(JSON)), a JSON string or a list."""
    if isinstance(raw, list):
        return raw
    if not isinstance(raw, str):
        raise PolicyError(
            f"applications must be a base64 zlib string or an array, got {type(raw).__name__}")
    text = raw.strip()
    if text.startswith("["):
        data = json.loads(text)
    else:
        try:
            data = json.loads(zlib.decompress(base64.b64decode(text, validate=True)))
        except (binascii.Error, zlib.error, ValueError) as e:
            raise PolicyError(f"applications: not base64 of zlib-deflated JSON ({e})") from None
    if not isinstance(data, list):
        raise PolicyError(f"applications must decode to an array, got {type(data).__name__}")
    return data


def parse_ports(value: Any, where: str) -> tuple[int, int] | None:
    """'' -> None, '443' -> (443, 443), '8000-8080' -> (8000, 8080)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise PolicyError(f"{where}: ports {text!r} is not 'p' or 'p1-p2'") from None
    if not (0 <= lo <= hi <= 65535):
        raise PolicyError(f"{where}: ports {text!r} must be 0..65535 with p1 <= p2")
    return lo, hi


def parse_match(entry: Mapping[str, Any], where: str) -> Match:
    ip = entry.get("ip") or ""
    prefix = None
    if ip:
        try:
            prefix = IPv4Network(str(ip), strict=False)
        except ValueError:
            raise PolicyError(f"{where}: ip {ip!r} is not an IPv4 prefix") from None
    proto = entry.get("protocol") or ""
    try:
        protocol = Protocol(str(proto).lower())
    except ValueError:
        raise PolicyError(f"{where}: protocol {proto!r} must be '', 'tcp' or 'udp'") from None
    return Match(prefix, parse_ports(entry.get("ports"), where), protocol)


def parse_applications(params: Mapping[str, Any] | None) -> dict[str, Application]:
    """The `add-application` params -> applications by id."""
    if not params:
        return {}
    apps: dict[str, Application] = {}
    for i, entry in enumerate(decode_applications(params.get("applications", []))):
        if not isinstance(entry, Mapping):
            raise PolicyError(f"applications[{i}] must be an object")
        app_id = str(entry.get("id") or "")
        if not app_id:
            raise PolicyError(f"applications[{i}] has no id")
        where = f"application {app_id}"
        rules = entry.get("rules") or []
        if not isinstance(rules, list):
            raise PolicyError(f"{where}: rules must be an array")
        apps[app_id] = Application(
            id=app_id,
            name=str(entry.get("name") or app_id),
            category=str(entry.get("category") or ""),
            service_class=str(entry.get("serviceClass") or ""),
            importance=str(entry.get("importance") or ""),
            matches=tuple(parse_match(r, f"{where} rule {j}") for j, r in enumerate(rules)),
        )
    return apps


# -- add-multilink-policy -----------------------------------------------------------


def _enum(cls: type[enum.StrEnum], value: Any, where: str, default: str) -> Any:
    try:
        return cls(value if value not in (None, "") else default)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise PolicyError(f"{where}: {value!r} is not one of {allowed}") from None


def resolve_application(cls: Mapping[str, Any], apps: Mapping[str, Application],
                        where: str) -> tuple[list[Application], str]:
    """By appId, or every application matching the given category/serviceClass/importance.

    As flexiagent does, an application the database does not have makes the rule match
    nothing (an empty ACL) instead of failing the job: a sync must not stay refused
    because the controller's application list changed."""
    app_id = cls.get("appId") or ""
    if app_id:
        app = apps.get(app_id)
        if app is None:
            return [], f"app {app_id} (not in the application database: matches nothing)"
        return [app], f"app {app.name}"
    wanted = {k: str(cls.get(k) or "") for k in ("category", "serviceClass", "importance")}
    wanted = {k: v for k, v in wanted.items() if v}
    if not wanted:
        raise PolicyError(f"{where}: application classification names no appId, category, "
                          "serviceClass or importance")
    attr = {"category": "category", "serviceClass": "service_class", "importance": "importance"}
    found = [a for a in apps.values() if all(getattr(a, attr[k]) == v for k, v in wanted.items())]
    label = " ".join(f"{k}={v}" for k, v in wanted.items())
    if not found:
        return [], f"apps {label} (none in the application database: matches nothing)"
    return sorted(found, key=lambda a: a.id), f"apps {label}"


def parse_rule(raw: Mapping[str, Any], apps: Mapping[str, Application]) -> Rule:
    rule_id = str(raw.get("id") or "")
    if not rule_id:
        raise PolicyError("a multilink rule has no id")
    if len(rule_id.encode()) > MAX_RULE_ID:
        raise PolicyError(f"rule {rule_id[:MAX_RULE_ID]}...: id longer than {MAX_RULE_ID} bytes "
                          "(it names the rule's ACL in VPP, whose tags hold 63)")
    where = f"rule {rule_id}"
    prio = raw.get("priority", 0)
    if not isinstance(prio, int) or isinstance(prio, bool) or not 0 <= prio <= MAX_PRIORITY:
        raise PolicyError(f"{where}: priority {prio!r} must be an integer 0..{MAX_PRIORITY}")
    cls = raw.get("classification") or {}
    prefix = cls.get("prefix") or {}
    app = cls.get("application") or {}
    if prefix and any(prefix.get(k) for k in ("ip", "ports", "protocol")):
        m = parse_match(prefix, where)
        matches: tuple[Match, ...] = (m,)
        classification = f"prefix {m.describe()}"
    elif app:
        found, classification = resolve_application(app, apps, where)
        matches = tuple(m for a in found for m in a.matches)
    else:
        raise PolicyError(f"{where}: classification needs a prefix (ip, ports or protocol) "
                          "or an application")
    action = raw.get("action") or {}
    groups = []
    for i, g in enumerate(action.get("links") or []):
        labels = tuple(str(x) for x in (g.get("pathlabels") or []))
        if not labels:
            raise PolicyError(f"{where}: link group {i + 1} has no pathlabels")
        groups.append(Group(labels, _enum(Order, g.get("order"), f"{where} group {i + 1} order",
                                          Order.PRIORITY)))
    if not groups:
        raise PolicyError(f"{where}: action.links is empty")
    group_order = _enum(Order, action.get("order"), f"{where} action.order", Order.PRIORITY)
    if group_order is Order.LINK_QUALITY:
        raise PolicyError(f"{where}: action.order must be 'priority' or 'load-balancing'")
    return Rule(
        id=rule_id,
        priority=prio,
        matches=matches,
        classification=classification,
        groups=tuple(groups),
        group_order=group_order,
        # flexiagent's own default for a missing fallback is by-destination (section 13.2)
        fallback=_enum(Fallback, action.get("fallback"), f"{where} fallback",
                       Fallback.BY_DESTINATION),
        apply_on_wan_rx=bool(raw.get("apply-on-wan-rx", False)),
        override_default_route=bool(raw.get("override-default-route", True)),
    )


def parse_policy(params: Mapping[str, Any],
                 apps: Mapping[str, Application] | None = None) -> Policy:
    """`add-multilink-policy` params -> Policy (rules by priority, ids unique)."""
    policy_id = str(params.get("id") or "")
    rules_raw = params.get("rules")
    if not isinstance(rules_raw, list):
        raise PolicyError("add-multilink-policy: rules must be an array")
    rules = [parse_rule(r, apps or {}) for r in rules_raw]
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise PolicyError(f"rule {r.id} appears twice")
        seen.add(r.id)
    return Policy(policy_id, tuple(sorted(rules, key=lambda r: (r.priority, r.id))))


def labels_of(rules: Iterable[Rule]) -> list[str]:
    out: dict[str, None] = {}
    for r in rules:
        for g in r.groups:
            out.update(dict.fromkeys(g.labels))
    return list(out)


def expand_protocols(match: Match) -> Sequence[Protocol]:
    """Ports without a protocol mean TCP and UDP (flexiagent's pairs); else as given."""
    if match.ports and match.protocol is Protocol.ANY:
        return (Protocol.TCP, Protocol.UDP)
    return (match.protocol,)
