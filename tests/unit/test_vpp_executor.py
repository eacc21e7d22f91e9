"""All-or-nothing execution against a fake VPP that records and can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import pytest

from agent.vpp.errors import VppApiError
from agent.vpp.executor import ApplyError, Executor
from agent.vpp.ops import DeferredChain, Op
from agent.vpp.plan import VppFacts, plan_add_ops
from tests.spec_factory import numbered_spec
from tests.waiting import until


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


class Submitting:
    """The VPP client's `submit` over a fake: each reply comes on a later event-loop pass,
    its retval unchecked, as the real client hands it to the executor. Steps from
    `stall_at` on are never answered (a VPP that stopped)."""

    def __init__(self, fake: FakeVpp, stall_at: int | None = None) -> None:
        self.fake = fake
        self.stall_at = stall_at
        self.in_flight = 0
        self.most = 0
        self.unanswered: list[Callable[[Any, BaseException | None], None]] = []

    async def call(self, name: str, /, **fields: Any) -> Any:  # the undo path
        return await self.fake.call(name, **fields)

    def submit(self, name: str, fields: dict[str, Any],
               on_reply: Callable[[Any, BaseException | None], None]) -> None:
        if self.stall_at is not None and len(self.fake.calls) >= self.stall_at:
            self.unanswered.append(on_reply)
            return
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)

        def answer() -> None:
            self.in_flight -= 1
            step = self.fake.call(name, **fields)
            try:
                step.send(None)
            except StopIteration as done:
                on_reply(done.value, None)
            except VppApiError as e:  # VPP answers a failure with its retval
                on_reply(SimpleNamespace(retval=e.retval), None)
            else:
                raise AssertionError("the fake VPP's call must not wait")

        asyncio.get_running_loop().call_soon(answer)


def via(transport: str, fake: FakeVpp) -> Any:
    return fake if transport == "call" else Submitting(fake)


TRANSPORTS = pytest.mark.parametrize("transport", ["call", "submit"])


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


@TRANSPORTS
async def test_success_resolves_refs_in_order(transport: str) -> None:
    vpp = FakeVpp()
    refs: dict[str, int] = {}
    ops = plan_add_ops(numbered_spec(3), VppFacts(1))
    await Executor(via(transport, vpp)).apply([ops], refs)
    assert refs == {"tun:3": 11}
    assert vpp.calls[1][1]["sw_if_index"] == 11
    assert len(vpp.calls) == len(ops)  # the tunnel index from the first reply


@TRANSPORTS
@pytest.mark.parametrize("fail_at", range(18))
async def test_failure_at_every_step_is_rolled_back(fail_at: int, transport: str) -> None:
    ops = plan_add_ops(numbered_spec(3), VppFacts(1))
    assert len(ops) == 18
    vpp = FakeVpp(fail_at)
    executor = Executor(via(transport, vpp))
    with pytest.raises(ApplyError) as info:
        await executor.apply([ops], {})
    assert info.value.rolled_back
    assert info.value.op is ops[fail_at]
    assert "restored to its previous state" in str(info.value)
    assert _net_effect(vpp.calls) == {}


@TRANSPORTS
async def test_concurrent_chains_all_roll_back_when_one_fails(transport: str) -> None:
    chains = [plan_add_ops(numbered_spec(n), VppFacts(1)) for n in range(1, 6)]
    vpp = FakeVpp(fail_at=40)
    with pytest.raises(ApplyError):
        await Executor(via(transport, vpp)).apply(chains, {})
    assert _net_effect(vpp.calls) == {}
    assert len(vpp.calls) > 40  # chains running at the failure finished their steps


async def test_a_stalled_step_cancelled_is_dropped_and_the_rest_undone() -> None:
    """A job timeout while VPP does not answer: what was done is undone at once; the
    unanswered step is left to reconcile (its outcome is unknown), never waited for,
    and its late reply starts nothing."""
    vpp = FakeVpp()
    caller = Submitting(vpp, stall_at=5)
    task = asyncio.ensure_future(Executor(caller).apply(
        [plan_add_ops(numbered_spec(3), VppFacts(1))], {}))
    await until(lambda: len(caller.unanswered) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(vpp.calls) > 5  # 5 steps, then their undo
    assert _net_effect(vpp.calls) == {}
    after_undo = list(vpp.calls)
    caller.stall_at = None
    caller.unanswered[0](SimpleNamespace(retval=0), None)  # VPP answers at last
    for _ in range(5):
        await asyncio.sleep(0)
    assert vpp.calls == after_undo and len(caller.unanswered) == 1


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

    submitting = Submitting(FakeVpp())
    await Executor(submitting).apply(chains, {})
    assert len(submitting.fake.calls) == sum(len(c) for c in chains)
    assert submitting.most == MAX_CHAINS_IN_FLIGHT


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


def _deferred(n: int, events: list[str]) -> DeferredChain:
    def make() -> list[Op]:
        events.append(f"make {n}")
        return plan_add_ops(numbered_spec(n), VppFacts(1))
    return DeferredChain(make, n)


class Recording(Submitting):
    """Submitting that also notes each step sent and each IKE initiation answered."""

    def __init__(self, fake: FakeVpp, events: list[str]) -> None:
        super().__init__(fake)
        self.events = events

    def submit(self, name: str, fields: dict[str, Any],
               on_reply: Callable[[Any, BaseException | None], None]) -> None:
        if name == "ipip_add_tunnel":
            self.events.append(f"start {fields['tunnel']['instance']}")

        def noted(reply: Any, error: BaseException | None) -> None:
            if name == "ikev2_initiate_sa_init":
                self.events.append("initiated")
            on_reply(reply, error)

        super().submit(name, fields, noted)


def test_a_deferred_chain_is_made_once_on_first_use_and_is_true_unmade() -> None:
    events: list[str] = []
    chain = _deferred(3, events)
    assert chain and not chain.made and events == []
    assert chain[0].message == "ipip_add_tunnel" and len(chain) == 18
    assert [op.message for op in chain] == [op.message for op in chain.ops()]
    assert events == ["make 3"] and chain.made


async def test_chains_beyond_those_in_flight_are_made_while_vpp_initiates() -> None:
    """The first chains are made as they start; the rest at IKE initiation replies
    (VPP busy with the next step), so each is ready before a slot frees for it."""
    from agent.vpp.executor import MAX_CHAINS_IN_FLIGHT

    events: list[str] = []
    n = MAX_CHAINS_IN_FLIGHT + 20
    chains = [_deferred(i, events) for i in range(1, n + 1)]
    vpp = Recording(FakeVpp(), events)
    await Executor(vpp).apply(chains, {})
    assert len(vpp.fake.calls) == 18 * n
    for i in range(MAX_CHAINS_IN_FLIGHT + 1, n + 1):
        made, started = events.index(f"make {i}"), events.index(f"start {i}")
        assert made < started and events[made - 1] == "initiated", events[made - 2:made + 1]
    assert all(events.count(f"make {i}") == 1 for i in range(1, n + 1))


@TRANSPORTS
async def test_a_chain_that_cannot_be_made_fails_the_apply_and_undoes_the_rest(
        transport: str) -> None:
    events: list[str] = []

    def broken() -> list[Op]:
        raise ValueError("no plan")

    chains: list[Any] = [plan_add_ops(numbered_spec(1), VppFacts(1)),
                         DeferredChain(broken, 2), _deferred(3, events)]
    vpp = FakeVpp()
    with pytest.raises(ApplyError) as info:
        await Executor(via(transport, vpp)).apply(chains, {})
    assert info.value.rolled_back and "tunnel 2: planning its steps failed: no plan" in str(
        info.value)
    assert _net_effect(vpp.calls) == {}
