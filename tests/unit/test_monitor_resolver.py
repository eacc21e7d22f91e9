"""Monitoring host-name resolution with an injected resolver (no real DNS)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from typing import Any

import pytest

from agent.monitor.resolver import NameResolver, host_name_error
from tests.agent_task import task_running

A = IPv4Address
Change = tuple[str, frozenset[IPv4Address], frozenset[IPv4Address]]


class FakeDns:
    """Answers from a mutable table; a name mapped to an exception raises it."""

    def __init__(self) -> None:
        self.table: dict[str, list[str] | BaseException] = {}
        self.calls: list[str] = []
        self.hang: set[str] = set()

    async def __call__(self, name: str) -> Iterable[IPv4Address]:
        self.calls.append(name)
        if name in self.hang:
            await asyncio.Event().wait()
        unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.table.get(name, unknown)
        if isinstance(answer, BaseException):
            raise answer
        return [A(a) for a in answer]


def running(res: NameResolver) -> contextlib.AbstractAsyncContextManager[asyncio.Task[Any]]:
    """`res.run()` as a task for the block; at its end the task must still be running
    and must end by the cancellation."""
    return task_running(res.run(), must_end_by_cancel=True)


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


@pytest.fixture
async def setup() -> tuple[NameResolver, FakeDns, list[Change]]:
    dns = FakeDns()
    changes: list[Change] = []
    res = NameResolver(lambda n, a, r: changes.append((n, a, r)), refresh=0.05, retry=0.02,
                       timeout=0.1, resolve=dns)
    return res, dns, changes


async def test_add_change_and_remove_report_deltas(
    setup: tuple[NameResolver, FakeDns, list[Change]],
) -> None:
    res, dns, changes = setup
    dns.table["mon.example"] = ["192.0.2.1", "192.0.2.2"]
    res.add("mon.example")  # before run: resolved once run starts
    async with running(res):
        await until(lambda: len(changes) == 1)
        assert changes[0] == ("mon.example", frozenset({A("192.0.2.1"), A("192.0.2.2")}),
                              frozenset())
        state = res.state("mon.example")
        assert state is not None and state.ok and state.reason == ""
        dns.table["mon.example"] = ["192.0.2.2", "192.0.2.3"]  # next refresh sees the change
        await until(lambda: len(changes) == 2)
        assert changes[1] == ("mon.example", frozenset({A("192.0.2.3")}),
                              frozenset({A("192.0.2.1")}))
        calls = len(dns.calls)
        await until(lambda: len(dns.calls) >= calls + 2)  # steady refreshes report nothing
        assert len(changes) == 2
        res.remove("mon.example")
        assert changes[2] == ("mon.example", frozenset(),
                              frozenset({A("192.0.2.2"), A("192.0.2.3")}))
        assert res.state("mon.example") is None


async def test_failure_is_a_state_keeps_addresses_and_retries(
    setup: tuple[NameResolver, FakeDns, list[Change]],
) -> None:
    res, dns, changes = setup
    async with running(res) as task:
        res.add("gone.example")  # added while running
        await until(lambda: (s := res.state("gone.example")) is not None and s.attempts >= 1)
        state = res.state("gone.example")
        assert state is not None
        assert (state.ok, state.addresses) == (False, frozenset())
        assert state.reason == "cannot resolve gone.example: Name or service not known"
        dns.table["gone.example"] = ["198.51.100.7"]  # retried until it resolves
        await until(lambda: bool(res.addresses("gone.example")))
        assert changes == [("gone.example", frozenset({A("198.51.100.7")}), frozenset())]
        dns.table["gone.example"] = OSError("resolver exploded")  # DNS outage
        await until(lambda: not res.state("gone.example").ok)  # type: ignore[union-attr]
        state = res.state("gone.example")
        assert state is not None
        assert state.addresses == frozenset({A("198.51.100.7")})  # last known kept
        assert state.reason == "cannot resolve gone.example: resolver exploded"
        assert len(changes) == 1
        assert not task.done()  # never fatal


async def test_timeout_empty_answer_and_invalid_names(
    setup: tuple[NameResolver, FakeDns, list[Change]],
) -> None:
    res, dns, _ = setup
    dns.hang.add("slow.example")
    dns.table["v6only.example"] = []
    async with running(res):
        for name in ("slow.example", "v6only.example", "https://x.example/", "bad_label.example"):
            res.add(name)
        empty = await res.resolve_now("v6only.example")
        assert empty.reason == "v6only.example has no IPv4 address"
        assert (await res.resolve_now("slow.example")).reason == (
            "resolving slow.example timed out after 0.1 s")
        bad = res.state("https://x.example/")
        assert bad is not None and not bad.ok
        assert bad.reason == (
            "'https://x.example/' is not a bare host name (no scheme, port or path allowed)")
        assert "https://x.example/" not in dns.calls and "bad_label.example" not in dns.calls
        assert [s.name for s in res.states()] == sorted(
            ["slow.example", "v6only.example", "https://x.example/", "bad_label.example"])


def test_host_name_rules() -> None:
    assert host_name_error("monitoring.example.com") is None
    assert host_name_error("localhost") is None
    assert host_name_error("a" * 64 + ".example") is not None
    assert host_name_error("-a.example") is not None
    assert host_name_error("") == "empty host name"
    assert host_name_error("host.example:443") is not None


async def test_system_resolver_localhost() -> None:
    changes: list[Change] = []
    res = NameResolver(lambda n, a, r: changes.append((n, a, r)), timeout=5.0)
    res.add("localhost")
    state = await res.resolve_now("localhost")
    assert state.ok, state.reason
    assert A("127.0.0.1") in state.addresses
    assert all(a.is_loopback for a in state.addresses)
    assert changes == [("localhost", state.addresses, frozenset())]
