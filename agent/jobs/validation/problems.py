"""Problems found in a job, the rejection that lists them, and safe rendering.

Every rejection names the controller's field path, the offending value and what
is allowed. Values are rendered short and escaped; containers are named, never
shown; every PSK of a job is masked wherever it appears (pasted into another
field too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from agent.jobs.models import describe_type
from agent.secret import Secret

MAX_RENDERED = 64  # characters of an offending value shown in a message
MAX_PROBLEMS_SHOWN = 10


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
class Problems:
    """Collects problems; masks any of `secrets` that would otherwise be shown."""

    secrets: tuple[str, ...] = ()
    items: list[Problem] = field(default_factory=list)
    weak_fields: list[str] = field(default_factory=list)

    def add(self, fld: str, value: object, reason: str, allowed: str = "") -> None:
        """Record a problem. Only user-derived text is masked: the value, and the reason
        when the value held a secret (reasons may quote parts of the value)."""
        if isinstance(value, Shown):
            shown = self._mask(value.text)
        else:
            # a PSK pasted into another field, as text or as a number: masked before
            # rendering (quoting may escape it) and after (a number is not text)
            shown = self._mask(render(self._mask(value) if isinstance(value, str) else value))
        self.items.append(Problem(self._mask(fld), shown, self._mask(reason),
                                  self._mask(allowed)))

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p.field, Shown(p.value), p.reason, p.allowed)

    def maskable(self) -> list[str]:
        # Very short strings would mask ordinary words; such a PSK is rejected anyway.
        return [s for s in self.secrets if len(s) >= 4]

    def _mask(self, text: str) -> str:
        for secret in self.maskable():
            text = text.replace(secret, Secret.MASK)
        return text

    def raise_if_any(self) -> None:
        if self.items:
            raise JobRejected(self.items)


@dataclass(frozen=True)
class Shown:
    """Text already rendered for a message (not to be quoted again)."""

    text: str


_T = TypeVar("_T")


def built(value: _T | None) -> _T:
    """The result of a validation that recorded no problem (never None then)."""
    if value is None:  # a defect, not bad input: say so rather than return garbage
        raise RuntimeError("validation produced no result and no problem")
    return value


def raw_psks(params: object) -> tuple[str, ...]:
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
                    found.extend(raw_psks(sub.get("params")))
    return tuple(found)


def psk_elsewhere(p: Problems, params: object) -> None:
    """Refuse the PSK pasted into another field: it would reach VPP, logs and the CLI
    as an ID, interface name or number that nobody masks."""
    secrets = p.maskable()
    if not secrets:
        return
    # A whole job holds thousands of PSKs and tens of thousands of values. First a
    # cheap screen: the values long enough to hold a PSK, the PSKs whose first
    # characters occur in them, and of those the ones that do occur. Only when one
    # does are the values walked again with their paths (a rejection, the rare case).
    k = min(len(s) for s in secrets)
    texts = long_values(params, k)
    joined = "\0".join(texts)
    found = [s for s in candidates(secrets, texts, k) if s in joined]
    if not found:
        return
    reported = {pr.field for pr in p.items}
    leaves: list[tuple[str, str | int | float, str]] = []

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
                and not _under(path, reported):
            leaves.append((path, value, str(value)))

    walk(params, "")
    for path, value, text in leaves:
        if any(s in text for s in found):
            p.add(path, value, "contains the pre-shared key",
                  "a value that does not contain ikev2.psk")


def long_values(params: object, k: int) -> list[str]:
    """Every scalar of `params` (as text) at least `k` characters long, except the PSK
    fields (`ikev2.psk`) themselves: the only values that can hold a PSK of k or more.
    Plain dicts and lists (all a parsed job holds) take a path without a tuple per value:
    a 1000-peer job has some 60,000."""
    out: list[str] = []
    append = out.append
    stack: list[object] = [params]
    pop, extend = stack.pop, stack.extend
    containers, numbers = (dict, list), (int, float)  # tuples: faster than unions here
    while stack:
        value = pop()
        if isinstance(value, str):  # the common case first
            if len(value) >= k:
                append(value)
        elif isinstance(value, containers):
            extend(_children(value))
        elif isinstance(value, numbers):
            if not isinstance(value, bool) and len(text := str(value)) >= k:
                append(text)
        elif isinstance(value, Mapping):  # not from JSON, but checked all the same
            extend(_children(value))
    return out


def _children(value: object) -> Iterable[object]:
    """A container's values, without the `psk` of a mapping held under the key `ikev2`."""
    if isinstance(value, list):
        return value
    assert isinstance(value, Mapping)
    ikev2 = value.get("ikev2")
    if not isinstance(ikev2, Mapping) or "psk" not in ikev2:
        return value.values()
    rest = [v for name, v in value.items() if name != "ikev2"]
    # the ikev2 mapping without its psk, walked as a mapping: its own "ikev2" key, if
    # any, leaves out the psk below it too
    rest.append({name: v for name, v in ikev2.items() if name != "psk"})
    return rest


def candidates(secrets: Sequence[str], texts: Sequence[str], k: int) -> list[str]:
    """The secrets whose first `k` characters occur in one of `texts` (k: at most the
    shortest secret's length): a superset of those the texts contain, found in time
    linear in both."""
    grams = {t[i:i + k] for t in texts for i in range(len(t) - k + 1)}
    return [s for s in secrets if s[:k] in grams]


def _under(path: str, fields: set[str]) -> bool:
    """`path` is one of `fields` or inside one of them."""
    if not fields:
        return False
    if path in fields:
        return True
    return any(path[:i] in fields for i, ch in enumerate(path) if ch in ".[")


def rejection(problems: Sequence[Problem], params: object) -> JobRejected:
    """A `JobRejected` for problems found anywhere in a job, with every PSK of the job
    (nested requests included) masked wherever it was pasted."""
    p = Problems(secrets=raw_psks(params))
    p.extend(problems)
    return JobRejected(p.items)


def pasted_psk_problems(params: object, known: Sequence[Problem] = ()) -> list[Problem]:
    """Fields of a whole job (aggregated, sync-device) that hold one of its PSKs, e.g.
    one request's PSK pasted into another request; fields in `known` are not repeated."""
    p = Problems(secrets=raw_psks(params))
    p.extend(known)
    psk_elsewhere(p, params)
    return list(p.items[len(known):])
