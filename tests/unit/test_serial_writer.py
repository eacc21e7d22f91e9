"""Store writes off the event loop: one writer thread, call order, cancellation as a
blocking write had it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agent.serial_writer import SerialWriter


async def test_writes_run_off_the_loop_in_call_order() -> None:
    writer = SerialWriter("test-writer")
    done: list[int] = []
    threads: set[int] = set()

    def write(n: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.001 * (n % 3))  # uneven durations must not reorder them
        done.append(n)
        return n * 10

    try:
        results = await asyncio.gather(*(writer.run(write, n) for n in range(30)))
    finally:
        writer.close()
    assert done == list(range(30))
    assert results == [n * 10 for n in range(30)]
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_the_loop_runs_while_a_write_waits_for_the_disk() -> None:
    writer = SerialWriter("test-writer")
    release = threading.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    write = asyncio.create_task(writer.run(release.wait, 5))
    try:
        deadline = time.monotonic() + 5
        while ticks < 100:  # the loop keeps running while the write is blocked
            assert time.monotonic() < deadline
            await asyncio.sleep(0)
        assert not write.done()
        release.set()
        assert await write is True
    finally:
        release.set()
        tick_task.cancel()
        writer.close()


async def test_an_error_reaches_the_caller_and_later_writes_still_run() -> None:
    writer = SerialWriter("test-writer")

    def fail() -> None:
        raise OSError("disk full")

    try:
        with pytest.raises(OSError, match="disk full"):
            await writer.run(fail)
        assert await writer.run(lambda: "ok") == "ok"
    finally:
        writer.close()


async def test_a_cancelled_caller_sees_its_write_end_then_the_cancellation() -> None:
    """The caller gets the write's outcome (memory can follow the disk); the cancellation
    arrives at its next await, where a write that blocked the loop would have let it in."""
    writer = SerialWriter("test-writer")
    started, release = threading.Event(), threading.Event()
    steps: list[str] = []

    def write() -> str:
        started.set()
        release.wait(5)
        return "written"

    async def caller() -> None:
        steps.append(await writer.run(write))
        steps.append("memory updated")
        await asyncio.sleep(0)
        steps.append("not reached")

    task = asyncio.create_task(caller())
    try:
        assert await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # still waiting for the write
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert steps == ["written", "memory updated"]
    finally:
        release.set()
        writer.close()


async def test_a_deadline_during_a_write_is_a_timeout_after_it() -> None:
    writer = SerialWriter("test-writer")
    steps: list[str] = []

    def write() -> str:
        time.sleep(0.2)
        return "written"

    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                steps.append(await writer.run(write))
                await asyncio.sleep(0)
                steps.append("not reached")
        assert steps == ["written"]
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0  # nothing left pending
    finally:
        writer.close()
