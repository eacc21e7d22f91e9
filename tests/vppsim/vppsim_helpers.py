"""Shared helpers of the vppsim tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

WAN = [("GigabitEthernet0/3/0", "192.168.1.10/24")]


async def wait_for(cond: Callable[[], Any], timeout: float = 3.0) -> Any:
    """Poll `cond` (sync or async) until truthy, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
