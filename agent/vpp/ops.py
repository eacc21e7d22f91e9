"""The vocabulary every VPP object kind plans in: an operation, its undo, and the
values VPP assigns at run time. Pure code; the executor runs what is built here.

Values VPP assigns at run time (a tunnel's sw_if_index, an ACL's index) travel as
`Ref`s that the executor resolves from earlier replies, so undo lists can re-create
objects that get new indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, NamedTuple, overload

from agent.secret import Secret


class CapabilityError(Exception):
    """The connected VPP cannot do what the job asks; the message says why."""


@dataclass(frozen=True)
class Ref:
    """A value known only once an earlier step ran (e.g. a tunnel's sw_if_index)."""

    name: str


class Op(NamedTuple):
    """One VPP write. `undo` reverses it; `produces` names the reply's `produces_field`
    (the sw_if_index of a new interface, the acl_index of a new ACL). Immutable; a
    tuple because a 1000-peer job builds some 25,000 of them, and a frozen dataclass
    takes two and a half times as long to build."""

    message: str
    args: Mapping[str, Any]
    what: str
    undo: tuple[Op, ...] = ()
    produces: str | None = None
    tunnel_id: int | None = None
    produces_field: str = "sw_if_index"


class DeferredChain(Sequence[Op]):
    """A tunnel's add steps, made on first use and kept. A job's plan leaves them to the
    executor, which makes most of them while VPP works on earlier chains' IKE
    initiations instead of before its first write, when VPP is idle. Never empty (an
    add creates its tunnel), so truth does not make it."""

    __slots__ = ("_make", "_ops", "tunnel_id")

    def __init__(self, make: Callable[[], list[Op]], tunnel_id: int) -> None:
        self._make: Callable[[], list[Op]] | None = make
        self._ops: list[Op] | None = None
        self.tunnel_id = tunnel_id

    @property
    def made(self) -> bool:
        return self._ops is not None

    def ops(self) -> list[Op]:
        """The steps (made now if not yet; a maker that raised raises again)."""
        if self._ops is None:
            assert self._make is not None
            self._ops = self._make()
            self._make = None
        return self._ops

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.ops())

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    @overload
    def __getitem__(self, index: int) -> Op: ...

    @overload
    def __getitem__(self, index: slice) -> list[Op]: ...

    def __getitem__(self, index: int | slice) -> Op | list[Op]:
        return self.ops()[index]


@dataclass(frozen=True)
class Gap:
    """Something of a tunnel's spec that this VPP does differently (a warning)."""

    tunnel_id: int
    text: str

    def __str__(self) -> str:
        return f"tunnel {self.tunnel_id}: {self.text}"


@dataclass(frozen=True)
class VppFacts:
    """What the plan needs to know about the connected VPP."""

    wan_sw_if_index: int
    optional_messages: frozenset[str] = frozenset()
    has_lcp: bool = True
    has_mss_clamp: bool = True


def paired(message: str, on: dict[str, Any], off: dict[str, Any], what_on: str,
           what_off: str, tid: int) -> Op:
    """An op whose undo is the same message with the opposite arguments."""
    undo = Op(message, off, f"tunnel {tid}: {what_off}", tunnel_id=tid)
    return Op(message, on, f"tunnel {tid}: {what_on}", undo=(undo,), tunnel_id=tid)


def add_del(message: str, args: Callable[[bool], dict[str, Any]], is_add: bool,
            what_add: str, what_delete: str, tid: int) -> Op:
    """An add-or-delete message (`args(is_add)`) whose undo is the opposite one."""
    if is_add:
        return paired(message, args(True), args(False), what_add, what_delete, tid)
    return paired(message, args(False), args(True), what_delete, what_add, tid)


# Values resolve() returns as they are; checked by exact type first, because the
# abstract-class isinstance checks below dominate the cost of applying many peers.
_ATOMS = frozenset({int, str, bool, bytes, float, type(None), IPv4Address, IPv4Interface,
                    IPv4Network})


def resolve(value: Any, refs: Mapping[str, int]) -> Any:
    """Replace Refs by their values and Secrets by their bytes, recursively. A dict or
    list holding neither is returned as it is, not copied (a route's sixteen empty
    label-stack entries); one that does is copied, never changed in place."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        return _resolved(value, value.items(), refs)
    if kind is list:
        return _resolved(value, enumerate(value), refs)
    if isinstance(value, Ref):
        try:
            return refs[value.name]
        except KeyError:
            raise KeyError(f"no value yet for {value.name}") from None
    if isinstance(value, Secret):
        return value.reveal().encode()
    if isinstance(value, Mapping):
        return {k: resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    return value


def _resolved(value: Any, items: Iterable[tuple[Any, Any]], refs: Mapping[str, int]) -> Any:
    """`value` (a dict or a list, whose `items` are given), or a copy of it with what
    `resolve` changes in its items."""
    out: Any = None
    for k, v in items:
        if type(v) not in _ATOMS and (r := resolve(v, refs)) is not v:
            if out is None:
                out = value.copy()
            out[k] = r
    return value if out is None else out
