"""The Command tab's `exec_timeout`, decided without I/O: allow-list, parsing, translation.

flexiagent runs `exec_timeout`'s `cmd` through a root shell. This agent runs only
commands that match an entry of `[remote] allow`, as one program with its
arguments (never a shell), so a compromised controller account cannot turn the
Command tab into a root shell on every device.

An allow-list entry is a command line split like a shell would split it; each word
of it matches one argument:

- a plain word matches itself;
- `*` matches any one argument;
- `<n>` a whole number (0-1000000), `<ip>` an IPv4 or IPv6 address, `<name>` a
  name such as an interface (letters, digits, `._:/@-`);
- a quoted word with spaces (`'show ...'`) matches one argument whose own words
  match it, e.g. the command of `vtysh -c 'show ip route'`;
- `...` as the last word matches any further arguments (none included).

`vppctl ...` runs through VPP's API (cli_inband), not the vppctl binary, so it works
with whatever API socket the agent uses; the seed's IKE logging spellings are
translated to VPP 26.06 first (`agent.vpp.cli_compat`), and the allow-list applies
to what runs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.vpp.cli_compat import translate_cli

MAX_COMMAND = 1024  # characters of `cmd`
MAX_NUMBER = 1_000_000
VPPCTL = "vppctl"
_OPERATOR_CHARS = ";&|<>"  # shell operators, glued to words or not
_NAME = re.compile(r"^[A-Za-z0-9._:/@-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLACEHOLDERS = ("*", "<n>", "<ip>", "<name>", "...")


class Refused(Exception):
    """`cmd` is not run; the message says why and is safe to show the operator."""


@dataclass(frozen=True)
class Pattern:
    text: str  # the entry as configured
    words: tuple[str | Pattern, ...]  # a nested Pattern matches one argument's own words

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Plan:
    """What an allowed command runs: a VPP CLI line or a program with its arguments."""

    argv: tuple[str, ...]
    vpp_cli: str | None  # set for `vppctl ...`: the CLI line for cli_inband
    note: str | None  # said to the operator when the command was translated
    allowed_by: str  # the allow-list entry that matched


def parse_pattern(text: str) -> Pattern:
    """One allow-list entry; ValueError names what is wrong with it."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if not words:
        raise ValueError("an empty entry allows nothing")
    if words[0] in _PLACEHOLDERS:
        raise ValueError(f"{text!r}: the program must be named, not {words[0]!r}")
    return _pattern(text, words)


def _pattern(text: str, words: list[str]) -> Pattern:
    out: list[str | Pattern] = []
    for i, w in enumerate(words):
        if w == "..." and i != len(words) - 1:
            raise ValueError(f"{text!r}: '...' may only be the last word")
        if w.startswith("<") and w.endswith(">") and w not in _PLACEHOLDERS:
            raise ValueError(f"{text!r}: unknown placeholder {w}; use <n>, <ip> or <name>")
        out.append(_pattern(w, w.split()) if len(w.split()) > 1 else w)
    return Pattern(text, tuple(out))


def parse_allow(entries: Iterable[str]) -> list[Pattern]:
    return [parse_pattern(e) for e in entries]


def _word_matches(p: str | Pattern, arg: str) -> bool:
    if isinstance(p, Pattern):
        return _matches(p.words, arg.split())
    if p == "*":
        return True
    if p == "<n>":
        return arg.isdigit() and int(arg) <= MAX_NUMBER
    if p == "<ip>":
        try:
            ipaddress.ip_address(arg)
        except ValueError:
            return False
        return True
    if p == "<name>":
        return bool(_NAME.match(arg)) and not arg.startswith("-")
    return p == arg


def _matches(words: Sequence[str | Pattern], args: Sequence[str]) -> bool:
    for i, p in enumerate(words):
        if p == "...":
            return True
        if i >= len(args) or not _word_matches(p, args[i]):
            return False
    return len(args) == len(words)


def split_command(cmd: str) -> list[str]:
    """The argument vector of `cmd`, split like a shell would, run without one."""
    if len(cmd) > MAX_COMMAND:
        raise Refused(f"command is longer than {MAX_COMMAND} characters")
    if _CONTROL.search(cmd):
        raise Refused("command must be one line without control characters")
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=_OPERATOR_CHARS)
    lexer.whitespace_split = True  # split as sh would, operators glued to words included
    try:
        argv = list(lexer)
    except ValueError as e:
        raise Refused(f"cannot parse the command: {e}") from None
    if not argv:
        raise Refused("command is empty")
    for a in argv:
        # Quoted operators too: vtysh and VPP's CLI parse their arguments themselves.
        if any(c in a for c in _OPERATOR_CHARS) or "$(" in a or "`" in a:
            raise Refused("commands run as one program without a shell: pipes, redirections, "
                          "';', '&&' and substitutions are not supported")
    return argv


def allow_list_text(allow: Sequence[Pattern]) -> str:
    return "; ".join(p.text for p in allow) if allow else "(empty)"


def plan_command(cmd: str, allow: Sequence[Pattern]) -> Plan:
    """What `cmd` runs, or Refused naming the allow-list."""
    argv = split_command(cmd)
    note = None
    vpp_cli = None
    if argv[0] == VPPCTL and len(argv) > 1:
        vpp_cli, note = translate_cli(" ".join(argv[1:]))
        argv = [VPPCTL, *vpp_cli.split()]
    for p in allow:
        if _matches(p.words, argv):
            return Plan(tuple(argv), vpp_cli, note, p.text)
    raise Refused(
        f"'{argv[0] if _NAME.match(argv[0]) else 'this command'}' with these arguments is not "
        f"in this device's allow-list ([remote] allow in the agent's configuration): "
        f"{allow_list_text(allow)}")
