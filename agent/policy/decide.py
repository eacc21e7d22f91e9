"""Which paths each rule uses now, given link health. Pure code.

flexiWAN's `fwabf` plugin makes these choices per packet in the data plane; stock
VPP's ABF forwards over every path of a policy (it ignores `preference`), so the
agent makes them here and installs only the chosen paths, re-programming when a
choice changes:

* between groups, `priority`: the first group with a usable link;
  `load-balancing`: every usable group (ECMP is the nearest stock equivalent of
  fwabf's random group);
* inside a group, `priority`: the first usable link in label order;
  `load-balancing`: every usable link; `link-quality`: the best link by drop then
  rtt, kept until another is better by a margin (hysteresis, so it does not flap);
* no usable link: `fallback: drop` installs a drop path, `by-destination` leaves
  the rule without ABF (the FIB decides).

A link is usable when its health says up and its VPP interface exists.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.policy.model import Fallback, Group, Order, Rule


@dataclass(frozen=True)
class Link:
    """Somewhere a label can send traffic: a peer tunnel (next hop = the peer's /31 end)."""

    key: str  # "peer 7"
    label: str
    sw_if_index: int | None  # None while VPP has no such interface
    next_hop: IPv4Address
    tunnel_id: int | None = None


@dataclass(frozen=True)
class LinkHealth:
    up: bool
    rtt_ms: float = 0.0
    drop: float = 0.0  # percent
    reason: str = ""


@dataclass(frozen=True)
class Hysteresis:
    """How much better another link must be before link-quality switches to it."""

    rtt_ms: float = 30.0  # flexiagent feeds fwabf a new delay only when it moved >= 30 ms
    drop_pct: float = 2.0

    def __post_init__(self) -> None:
        if self.rtt_ms < 0 or self.drop_pct < 0:
            raise ValueError("hysteresis margins must be >= 0")


class Kind(enum.StrEnum):
    PATHS = "paths"  # forward over `links`
    DROP = "drop"  # a single drop path
    FIB = "fib"  # no ABF entry: the FIB decides


@dataclass(frozen=True)
class Choice:
    kind: Kind
    links: tuple[Link, ...] = ()
    group: int | None = None  # 1-based group that supplied the links (None: several / none)
    reason: str = ""

    @property
    def link_keys(self) -> tuple[str, ...]:
        return tuple(link.key for link in self.links)

    def same_forwarding(self, other: Choice | None) -> bool:
        """Whether VPP would be programmed identically (the reason may differ)."""
        return (other is not None and self.kind is other.kind
                and frozenset(self.links) == frozenset(other.links))

    def describe(self) -> str:
        if self.kind is Kind.DROP:
            return "drop"
        if self.kind is Kind.FIB:
            return "FIB (no ABF entry)"
        return ", ".join(self.link_keys)


def usable(link: Link, health: Mapping[str, LinkHealth]) -> bool:
    h = health.get(link.key)
    return link.sw_if_index is not None and h is not None and h.up


def group_links(group: Group, links_by_label: Mapping[str, Sequence[Link]]) -> list[Link]:
    """The group's links in label order, each once."""
    out: dict[Link, None] = {}
    for label in group.labels:
        for link in links_by_label.get(label, ()):
            out[link] = None
    return list(out)


def _why_unusable(link: Link, health: Mapping[str, LinkHealth]) -> str:
    if link.sw_if_index is None:
        return f"{link.key} has no VPP interface"
    h = health.get(link.key)
    if h is None:
        return f"{link.key} not monitored"
    return f"{link.key} down" + (f" ({h.reason})" if h.reason else "")


def _quality(link: Link, health: Mapping[str, LinkHealth]) -> tuple[float, float]:
    h = health[link.key]
    return (h.drop, h.rtt_ms)


def _pick_quality(cands: list[Link], health: Mapping[str, LinkHealth],
                  previous: Choice | None, hyst: Hysteresis) -> tuple[Link, str]:
    best = min(cands, key=lambda lk: (*_quality(lk, health), cands.index(lk)))
    bd, br = _quality(best, health)
    current = None
    if previous is not None and previous.kind is Kind.PATHS and len(previous.links) == 1:
        current = next((lk for lk in cands if lk == previous.links[0]), None)
    if current is not None and current != best:
        cd, cr = _quality(current, health)
        better = (cd - bd >= hyst.drop_pct) or (abs(cd - bd) < hyst.drop_pct
                                                and cr - br >= hyst.rtt_ms)
        if not better:
            return current, (f"{current.key} kept (drop {cd:.1f}%, rtt {cr:.1f} ms; "
                             f"{best.key} drop {bd:.1f}%, rtt {br:.1f} ms is not better by "
                             f"{hyst.drop_pct:g}% drop or {hyst.rtt_ms:g} ms)")
        return best, (f"{best.key} best quality (drop {bd:.1f}%, rtt {br:.1f} ms; "
                      f"{current.key} drop {cd:.1f}%, rtt {cr:.1f} ms)")
    return best, f"{best.key} best quality (drop {bd:.1f}%, rtt {br:.1f} ms)"


def choose_in_group(group: Group, cands: list[Link], health: Mapping[str, LinkHealth],
                    previous: Choice | None, hyst: Hysteresis) -> tuple[list[Link], str]:
    """The usable links `cands` (non-empty, label order) -> the group's chosen links."""
    if group.order is Order.LOAD_BALANCING:
        return cands, f"load-balancing over {', '.join(lk.key for lk in cands)}"
    if group.order is Order.LINK_QUALITY:
        link, why = _pick_quality(cands, health, previous, hyst)
        return [link], why
    first = cands[0]
    kept = health[first.key].reason  # usable without a verdict yet: say so
    return [first], f"{first.key} {kept or 'up'}, first usable"


def decide(rule: Rule, links_by_label: Mapping[str, Sequence[Link]],
           health: Mapping[str, LinkHealth], previous: Choice | None = None,
           hysteresis: Hysteresis | None = None,
           dia_labels: frozenset[str] = frozenset()) -> Choice:
    """The rule's paths now; `previous` is its last choice (for link-quality hysteresis).

    `dia_labels` are the labels of the device's WAN interfaces (direct internet
    access): the agent does not steer to a WAN, so a group reached with one of them
    and no usable tunnel leaves the traffic to the routing table, which sends it out
    of a WAN as flexiagent's DIA link would, instead of to a later group or to the
    fallback (with `drop`, a blackhole)."""
    hyst = hysteresis or Hysteresis()
    skipped: list[str] = []
    chosen: list[tuple[int, list[Link], str]] = []
    for i, group in enumerate(rule.groups, start=1):
        links = group_links(group, links_by_label)
        cands = [lk for lk in links if usable(lk, health)]
        labels = ",".join(group.labels)
        dia = sorted(set(group.labels) & dia_labels)
        if not cands and dia and not chosen:
            return Choice(Kind.FIB, reason="; ".join(
                [*skipped, f"group {i} [{labels}]: {','.join(dia)} is a WAN (DIA) label: "
                           "left to the routing table"]))
        if not cands:
            detail = "; ".join(_why_unusable(lk, health) for lk in links) or "no link carries them"
            skipped.append(f"group {i} [{labels}]: {detail}")
            continue
        picked, why = choose_in_group(group, cands, health, previous, hyst)
        chosen.append((i, picked, f"group {i} [{labels}]: {why}"))
        if rule.group_order is Order.PRIORITY:
            break
    if chosen:
        merged: dict[Link, None] = {}
        for _, picked, _ in chosen:
            merged.update(dict.fromkeys(picked))
        reasons = [why for _, _, why in chosen]
        if skipped and rule.group_order is Order.PRIORITY:
            reasons = [*skipped, *reasons]
        source = chosen[0][0] if len(chosen) == 1 else None
        return Choice(Kind.PATHS, tuple(merged), source, "; ".join(reasons))
    tail = "; ".join(skipped)
    if rule.fallback is Fallback.DROP:
        return Choice(Kind.DROP, reason=f"no usable link ({tail}); fallback drop")
    return Choice(Kind.FIB, reason=f"no usable link ({tail}); fallback by-destination")


def decide_all(rules: Sequence[Rule], links_by_label: Mapping[str, Sequence[Link]],
               health: Mapping[str, LinkHealth], previous: Mapping[str, Choice],
               hysteresis: Hysteresis | None = None,
               dia_labels: frozenset[str] = frozenset()) -> dict[str, Choice]:
    return {r.id: decide(r, links_by_label, health, previous.get(r.id), hysteresis,
                         dia_labels)
            for r in rules}
