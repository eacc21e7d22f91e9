"""FRR running-config as paths, and the difference between what the agent wants and what runs.

Pure: no I/O. The agent owns exactly the lines it applied (`owned`, kept by the
manager across restarts) and the lines it wants now (`desired`). The plan:

* removes what the agent owns, FRR runs, and is no longer desired;
* adds what is desired and FRR does not run (after an FRR restart: all of it).

A line in FRR that the agent never applied (an operator's) is in neither set and
is never touched, also inside a block the agent owns: such a block is then
emptied line by line instead of removed whole. Removals run before additions, so
a changed single-valued setting (`ip ospf cost 10` -> `20`) is replaced cleanly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass
from itertools import groupby

from agent.routing.render import Path

_SKIP = {"!", "exit", "exit-address-family", "exit-vrf", "exit-vnc", "end", "end-policy"}
_NOISE = ("Building configuration", "Current configuration")
# blocks that `no <header>` cannot remove (an interface FRR sees in the kernel, an AF):
# they are emptied line by line and FRR stops printing them once empty
_NOT_REMOVABLE = ("interface ", "address-family ")
# lines that enter a configuration node (and so need an `exit` after them)
_ENTERS_NODE = ("interface ", "router ", "route-map ", "address-family ")
_REMOTE_AS = re.compile(r"neighbor (\S+) remote-as \S+$")
_PASSWORD = re.compile(r"(\bpassword )\S+")


def parse(text: str) -> tuple[Path, ...]:
    """`show running-config` text -> paths; nesting comes from the indentation FRR prints."""
    paths: list[Path] = []
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line in _SKIP or line.startswith(_NOISE):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        paths.append((*(s for _, s in stack), line))
        stack.append((indent, line))
    return tuple(paths)


@dataclass(frozen=True)
class Plan:
    """The commands, each in its context (the block headers to enter first)."""

    removals: tuple[tuple[Path, str], ...]
    additions: tuple[tuple[Path, str], ...]

    @property
    def empty(self) -> bool:
        return not self.removals and not self.additions

    def commands(self) -> tuple[tuple[Path, str], ...]:
        return self.removals + self.additions

    def script(self) -> str:
        """The plan as a vtysh configuration file (`vtysh -f`), each context entered and left."""
        lines: list[str] = []
        for ctx, group in groupby(self.commands(), key=lambda c: c[0]):
            for depth, head in enumerate(ctx):
                lines.append(" " * depth + head)
            lines.extend(" " * len(ctx) + cmd for _, cmd in group if cmd)
            for depth in reversed(range(len(ctx))):
                leave = "exit-address-family" if ctx[depth].startswith("address-family") else "exit"
                lines.append(" " * depth + leave)
        return "\n".join(lines) + "\n"

    def describe(self) -> list[str]:
        """The commands for logs and error messages: passwords masked."""
        return [mask(" / ".join((*ctx, cmd)) if cmd else " / ".join(ctx))
                for ctx, cmd in self.commands()]


def mask(text: str) -> str:
    return _PASSWORD.sub(r"\1******", text)


P2P_LINE = "ip ospf network point-to-point"


def elide_defaults(desired: Sequence[Path], p2p_interfaces: Set[str]) -> tuple[Path, ...]:
    """`desired` without what FRR would not print: its running-config is the yardstick.

    On an interface the kernel flags POINTOPOINT (a tunnel's TUN) point-to-point is
    OSPF's default network type, so FRR takes `ip ospf network point-to-point` and
    does not print it; an interface block left without lines is not printed either.
    """
    kept = [p for p in desired
            if not (len(p) == 2 and p[1] == P2P_LINE
                    and p[0].removeprefix("interface ") in p2p_interfaces)]
    return tuple(p for p in kept
                 if not (len(p) == 1 and p[0].startswith("interface ")
                         and not any(len(q) > 1 and q[0] == p[0] for q in kept)))


def diff(desired: Sequence[Path], running: Sequence[Path], owned: Set[Path]) -> Plan:
    want = set(desired)
    have = set(running)
    stale = [p for p in running if p in owned and p not in want]
    return Plan(removals=tuple(_removals(stale, running, want)),
                additions=tuple(_additions([p for p in desired if p not in have], desired)))


def _children(path: Path, paths: Iterable[Path]) -> list[Path]:
    return [q for q in paths if len(q) > len(path) and q[: len(path)] == path]


def _removals(stale: list[Path], running: Sequence[Path], want: Set[Path]
              ) -> Iterable[tuple[Path, str]]:
    stale_set = set(stale)
    gone: list[Path] = []  # blocks removed whole: their lines go with them
    # (block, neighbor ip) removed whole by `no neighbor`: its other lines go with it
    dropped_neighbors: set[tuple[Path, str]] = set()
    for p in stale:
        m = _REMOTE_AS.match(p[-1])
        if m and not any(_REMOTE_AS.match(q[-1]) and q[:-1] == p[:-1]
                         and q[-1].split()[1] == m.group(1) for q in want):
            dropped_neighbors.add((p[:-1], m.group(1)))
    out: list[tuple[Path, str]] = []
    for p in stale:
        if any(p[:i] in gone for i in range(1, len(p))):
            continue
        words = p[-1].split()
        if words[:1] == ["no"]:
            words = words[1:]
        if (len(words) > 1 and words[0] == "neighbor"
                and any((p[:i], words[1]) in dropped_neighbors for i in range(1, len(p)))):
            if _REMOTE_AS.match(p[-1]):
                out.append((p[:-1], f"no neighbor {words[1]}"))
            continue  # goes with `no neighbor`
        if _REMOTE_AS.match(p[-1]):
            continue  # replaced by the desired remote-as line
        kids = _children(p, running)
        if kids or p[-1].startswith(_NOT_REMOVABLE):
            if p[-1].startswith(_NOT_REMOVABLE) or not all(k in stale_set for k in kids):
                continue  # emptied line by line; an operator's lines keep it
            gone.append(p)
        out.append((p[:-1], p[-1][3:] if p[-1].startswith("no ") else f"no {p[-1]}"))
    return out


def _additions(missing: list[Path], desired: Sequence[Path]) -> Iterable[tuple[Path, str]]:
    missing_set = set(missing)
    out: list[tuple[Path, str]] = []
    for p in missing:
        if p[-1].startswith(_ENTERS_NODE):
            if any(k in missing_set for k in _children(p, desired)):
                continue  # entering it for its first line creates it
            out.append((p, ""))  # an empty block (a route-map's default entry): enter and leave
        else:
            out.append((p[:-1], p[-1]))
    return out
