"""Asynchronous, periodic IPv4 resolution of monitoring host names (``peer.urls``).

Each name is resolved when added and then every ``refresh`` seconds (sooner,
every ``retry`` seconds, while it fails). Changes in its address set are
reported through ``on_change(name, added, removed)``; the peers layer turns
them into /32 routes through the tunnel and probe targets.

A name that does not resolve is a state (``NameState.ok`` False with the
reason), never an exception. Its last known addresses are kept: a DNS outage
must not tear down monitoring of a path that still works, and it cannot tell a
transient failure from a removed record anyway. Removing the name reports all
its addresses as removed.

Resolution goes through ``loop.getaddrinfo`` (the system resolver, which runs
in the loop's default executor: the one place a thread is forced on us); tests
inject their own ``resolve`` coroutine.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

import structlog

ResolveFn = Callable[[str], Awaitable[Iterable[IPv4Address]]]
ChangeCallback = Callable[[str, frozenset[IPv4Address], frozenset[IPv4Address]], None]

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host_name_error(name: str) -> str | None:
    """Why name is not a bare host name (RFC 1123), or None if it is one."""
    if not name:
        return "empty host name"
    if len(name.rstrip(".")) > 253:
        return f"host name {name!r} is longer than 253 characters"
    if "://" in name or "/" in name or ":" in name:
        return f"{name!r} is not a bare host name (no scheme, port or path allowed)"
    labels = name.rstrip(".").split(".")
    for label in labels:
        if not _LABEL.match(label):
            return (
                f"host name {name!r} has an invalid label {label!r}: "
                "letters, digits and inner hyphens only, 1 to 63 characters"
            )
    return None


async def system_resolve(name: str) -> list[IPv4Address]:
    """IPv4 addresses of name from the system resolver (getaddrinfo, AF_INET)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(name, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    return [IPv4Address(info[4][0]) for info in infos]


@dataclass(frozen=True)
class NameState:
    name: str
    addresses: frozenset[IPv4Address]
    ok: bool  # the last resolution succeeded with at least one address
    reason: str  # "" when ok; otherwise what went wrong, for peerctl and logs
    resolved_at: float | None  # loop time of the last successful resolution
    attempts: int  # resolutions tried so far


class NameResolver:
    """Keeps a set of host names resolved and reports address changes."""

    def __init__(
        self,
        on_change: ChangeCallback,
        *,
        refresh: float = 300.0,
        retry: float = 30.0,
        timeout: float = 5.0,
        resolve: ResolveFn = system_resolve,
        concurrency: int = 4,
    ) -> None:
        if min(refresh, retry, timeout) <= 0:
            raise ValueError("refresh, retry and timeout must be > 0 s")
        self._on_change = on_change
        self.refresh = refresh
        self.retry = retry
        self.timeout = timeout
        self._resolve = resolve
        self._limit = asyncio.Semaphore(concurrency)
        self._states: dict[str, NameState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._log = structlog.get_logger(__name__)

    async def run(self) -> None:
        """Resolve names until cancelled; names added before run start now."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                for name in self._states:
                    self._spawn(name)
                await asyncio.Future()  # until cancelled
            finally:
                self._tg = None
                self._tasks.clear()

    def add(self, name: str) -> None:
        """Start watching name; an invalid name is recorded as failed, not raised."""
        if name in self._states:
            return
        error = host_name_error(name)
        self._states[name] = NameState(name, frozenset(), False, error or "not resolved yet",
                                       None, 0)
        if error is None and self._tg is not None:
            self._spawn(name)

    def remove(self, name: str) -> None:
        """Stop watching name and report its addresses as removed."""
        state = self._states.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        if state is not None and state.addresses:
            self._notify(name, frozenset(), state.addresses)

    def state(self, name: str) -> NameState | None:
        return self._states.get(name)

    def states(self) -> list[NameState]:
        return [self._states[n] for n in sorted(self._states)]

    def addresses(self, name: str) -> frozenset[IPv4Address]:
        state = self._states.get(name)
        return state.addresses if state else frozenset()

    async def resolve_now(self, name: str) -> NameState:
        """Resolve name once right away (e.g. for peerctl) and return its new state."""
        if name not in self._states:
            raise KeyError(f"host name {name!r} is not monitored")
        await self._resolve_once(name)
        return self._states[name]

    # -- internals --------------------------------------------------------------

    def _spawn(self, name: str) -> None:
        if host_name_error(name) is not None:
            return
        assert self._tg is not None
        self._tasks[name] = self._tg.create_task(self._watch(name), name=f"resolve {name}")

    async def _watch(self, name: str) -> None:
        while name in self._states:
            ok = await self._resolve_once(name)
            await asyncio.sleep(self.refresh if ok else self.retry)

    async def _resolve_once(self, name: str) -> bool:
        loop = asyncio.get_running_loop()
        reason = ""
        addresses: frozenset[IPv4Address] = frozenset()
        try:
            async with self._limit, asyncio.timeout(self.timeout):
                addresses = frozenset(map(IPv4Address, await self._resolve(name)))
            if not addresses:
                reason = f"{name} has no IPv4 address"
        except TimeoutError:
            reason = f"resolving {name} timed out after {self.timeout:g} s"
        except socket.gaierror as exc:
            reason = f"cannot resolve {name}: {exc.strerror or exc}"
        except (OSError, ValueError) as exc:
            reason = f"cannot resolve {name}: {exc}"
        previous = self._states.get(name)
        if previous is None:
            return False  # removed while resolving
        attempts = previous.attempts + 1
        if reason:
            if reason != previous.reason:
                self._log.warning("monitoring host name does not resolve", name=name,
                                  reason=reason, kept=sorted(map(str, previous.addresses)))
            self._states[name] = NameState(name, previous.addresses, False, reason,
                                           previous.resolved_at, attempts)
            return False
        self._states[name] = NameState(name, addresses, True, "", loop.time(), attempts)
        added = addresses - previous.addresses
        removed = previous.addresses - addresses
        if added or removed:
            self._notify(name, added, removed)
        return True

    def _notify(
        self, name: str, added: frozenset[IPv4Address], removed: frozenset[IPv4Address]
    ) -> None:
        self._log.info("monitoring host name addresses changed", name=name,
                       added=sorted(map(str, added)), removed=sorted(map(str, removed)))
        try:
            self._on_change(name, added, removed)
        except Exception:
            self._log.exception("host name change callback failed", name=name)
