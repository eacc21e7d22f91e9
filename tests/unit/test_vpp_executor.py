"""All-or-nothing execution against a fake VPP that records and can fail."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest

from agent.vpp.errors import VppApiError
from agent.vpp.executor import ApplyError, Executor
from agent.vpp.plan import VppFacts, plan_add_ops
from tests.spec_factory import numbered_spec


class FakeVpp:
    """Counts objects like VPP would: adds and deletes must balance after a rollback."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_at = fail_at
        self.next_index = 10
        self.attempts = 0

    async def call(self, name: str, /, *, _timeout: float | None = None, _check: bool = True,
                   **fields: Any) -> Any:
        n = self.attempts
        self.attempts += 1
        if n == self.fail_at:
            raise VppApiError(name, -1)  # like VPP: a failed request changes nothing
        self.calls.append((name, fields))
        self.next_index += 1
        return SimpleNamespace(retval=0, sw_if_index=self.next_index)


def _net_effect(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """+1 per create, -1 per delete, by object kind (setters count 0)."""
    effect: dict[str, int] = {}
    for name, f in calls:
        kind, delta = {
            "ipip_add_tunnel": ("tunnel", 1), "ipip_del_tunnel": ("tunnel", -1),
        }.get(name, (name, 0))
        if "is_add" in f:
            delta = 1 if f["is_add"] else -1
        if name == "mss_clamp_enable_disable":
            delta = 1 if f["ipv4_direction"] else -1
        if name == "sw_interface_set_flags":
            delta = 1 if f["flags"] else -1
        effect[kind] = effect.get(kind, 0) + delta
    return {k: v for k, v in effect.items() if v}


async def test_success_resolves_refs_in_order() -> None:
    vpp = FakeVpp()
    refs: dict[str, int] = {}
    ops = plan_add_ops(numbered_spec(3), VppFacts(1))
    await Executor(vpp).apply([ops], refs)
    assert refs == {"tun:3": 11}
    assert vpp.calls[1][1]["sw_if_index"] == 11
    assert len(vpp.calls) == len(ops)  # the tunnel index from the first reply


@pytest.mark.parametrize("fail_at", range(19))
async def test_failure_at_every_step_is_rolled_back(fail_at: int) -> None:
    ops = plan_add_ops(numbered_spec(3), VppFacts(1))
    assert len(ops) == 19
    vpp = FakeVpp(fail_at)
    executor = Executor(vpp)
    with pytest.raises(ApplyError) as info:
        await executor.apply([ops], {})
    assert info.value.rolled_back
    assert info.value.op is ops[fail_at]
    assert "restored to its previous state" in str(info.value)
    assert _net_effect(vpp.calls) == {}


async def test_concurrent_chains_all_roll_back_when_one_fails() -> None:
    chains = [plan_add_ops(numbered_spec(n), VppFacts(1)) for n in range(1, 6)]
    vpp = FakeVpp(fail_at=40)
    with pytest.raises(ApplyError):
        await Executor(vpp).apply(chains, {})
    assert _net_effect(vpp.calls) == {}


async def test_cancellation_rolls_back_before_stopping() -> None:
    class SlowVpp(FakeVpp):
        stalled: bool
        async def call(self, name: str, /, *, _timeout: float | None = None,
                       _check: bool = True, **fields: Any) -> Any:
            if len(self.calls) == 5 and not self.stalled:
                self.stalled = True
                await asyncio.sleep(10)  # VPP stalls on the 6th step; the job times out
            return await super().call(name, **fields)

    vpp = SlowVpp()
    vpp.stalled = False
    task = asyncio.ensure_future(Executor(vpp).apply([plan_add_ops(numbered_spec(3),
                                                                   VppFacts(1))], {}))
    while not vpp.stalled:  # the 6th step is now waiting on VPP
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _net_effect(vpp.calls) == {}


async def test_chains_in_flight_are_bounded_and_all_complete() -> None:
    """Many peers keep the socket busy, but never all at once: one event-loop pass
    must stay short so the controller's queries are answered during a big job."""
    from agent.vpp.executor import MAX_CHAINS_IN_FLIGHT

    class SlowVpp(FakeVpp):
        in_flight = 0
        most = 0

        async def call(self, name: str, /, **kw: Any) -> Any:
            SlowVpp.in_flight += 1
            SlowVpp.most = max(SlowVpp.most, SlowVpp.in_flight)
            await asyncio.sleep(0)
            SlowVpp.in_flight -= 1
            return await super().call(name, **kw)

    vpp = SlowVpp()
    chains = [plan_add_ops(numbered_spec(n), VppFacts(1)) for n in range(1, 301)]
    await Executor(vpp).apply(chains, {})
    assert len(vpp.calls) == sum(len(c) for c in chains)
    assert 1 < SlowVpp.most <= MAX_CHAINS_IN_FLIGHT


class FailingUndo(FakeVpp):
    """Fails the first route add, and the undo of the route added before it."""

    def __init__(self) -> None:
        super().__init__()
        self.route_adds = 0

    async def call(self, name: str, /, *, _timeout: float | None = None, _check: bool = True,
                   **fields: Any) -> Any:
        if name == "ip_route_add_del":
            if fields["is_add"]:
                self.route_adds += 1
                if self.route_adds == 2:
                    raise VppApiError(name, -1)
            else:
                raise VppApiError(name, -6)
        return await super().call(name, **fields)


async def test_an_undo_that_fails_stops_its_chain() -> None:
    """The tunnel is not deleted under a route whose delete failed (it would dangle);
    reconcile removes what is left, whole."""
    spec = replace(numbered_spec(3), monitor_ips=(IPv4Address("198.51.100.1"),
                                                  IPv4Address("198.51.100.2")))
    ops = plan_add_ops(spec, VppFacts(1))
    vpp = FailingUndo()
    with pytest.raises(ApplyError) as info:
        await Executor(vpp).apply([ops], {})
    assert not info.value.rolled_back and "ROLLBACK INCOMPLETE" in str(info.value)
    assert "ipip_del_tunnel" not in [name for name, _ in vpp.calls]
