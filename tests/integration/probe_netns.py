"""Network-namespace helpers for the probe engine's integration tests and benchmark.

Every namespace gets a unique name and is deleted on exit, also on failure.
Traffic stays inside the namespaces: documentation/private addresses exist only
there, and the root namespace is never given an address or a route.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from types import TracebackType

from agent.lab.topology import run_in_netns

__all__ = ["Lab", "netns_unavailable_reason", "run_in_netns"]


def netns_unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_NET_RAW) to create network namespaces"
    for tool in ("ip", "nft", "ping"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    probe = f"prbchk-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Lab:
    """A set of namespaces created on demand and all removed on exit."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.namespaces: list[str] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()

    def netns(self, role: str) -> str:
        name = f"prb-{self.tag}-{role}"
        self.namespaces.append(name)  # recorded before creation: cleaned even if half made
        run("ip", "netns", "add", name)
        self.sh(name, "ip", "link", "set", "lo", "up")
        return name

    def sh(self, ns: str, *args: str, check: bool = True) -> str:
        return run("ip", "netns", "exec", ns, *args, check=check)

    def veth(self, ns_a: str, dev_a: str, addr_a: str, ns_b: str, dev_b: str, addr_b: str) -> None:
        """A veth pair between two namespaces with an address (CIDR) on each end."""
        run("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth",
            "peer", "name", dev_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, dev_a, addr_a), (ns_b, dev_b, addr_b)):
            self.sh(ns, "ip", "addr", "add", addr, "dev", dev)
            self.sh(ns, "ip", "link", "set", dev, "up")

    def nft(self, ns: str, ruleset: str) -> None:
        done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset,
                              text=True, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"nft in {ns} rejected the ruleset: {done.stderr.strip()}")

    def nft_counters(self, ns: str) -> dict[str, int]:
        """Packet counts of the named counters (``counter name X``) in namespace ns."""
        out = json.loads(self.sh(ns, "nft", "-j", "list", "counters"))
        return {
            item["counter"]["name"]: int(item["counter"]["packets"])
            for item in out["nftables"]
            if "counter" in item
        }


def run(*args: str, check: bool = True) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
