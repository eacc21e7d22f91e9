"""A monitor name resolver for the lab, the demo and tests: they never query real DNS."""

from __future__ import annotations

import functools
from ipaddress import IPv4Address

from agent.monitor.resolver import NameResolver


async def no_dns(name: str) -> list[IPv4Address]:
    raise OSError(f"{name}: names are not resolved in the lab")


offline_name_resolver = functools.partial(NameResolver, resolve=no_dns)
