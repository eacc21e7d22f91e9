"""A throw-away real VPP 26.06 for the benchmarks, started by the lab's runner.

VPP is the one `scripts/bootstrap.sh` unpacked (or VPP_PREFIX), see
agent/lab/realvpp.py. Each VPP runs in a network namespace of its own, without
linux-cp (it needs /dev/vhost-net, absent on the development machines). The WAN
stand-in is a loopback interface `loop0` with 192.168.1.10/24 that connects to
nothing: IKE initiations toward the benchmark's peers leave no namespace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agent.lab.realvpp import RealVpp, vpp_unavailable

WAN_NAME = "loop0"
WAN_ADDR = "192.168.1.10/24"


def unavailable() -> str | None:
    """Why real VPP cannot run here, or None."""
    return vpp_unavailable()


@contextlib.contextmanager
def real_vpp(workdir: Path, tag: str) -> Iterator[tuple[Path, int]]:
    """A fresh VPP; yields its API socket path and pid, and stops it (and its namespace)."""
    netns = f"pab-{os.getpid()}-{tag}"[:15]
    subprocess.run(["ip", "netns", "add", netns], check=True)
    # 1G heap: thousands of peers' SAs, tunnels and routes
    vpp = RealVpp(netns, workdir / f"vpp-{tag}", main_heap="1G")
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        vpp.start(timeout=30)
        # the CLI returns once done: loop0 is up with its address when the agent starts
        vpp.ctl("create", "loopback", "interface")
        vpp.ctl("set", "interface", "state", WAN_NAME, "up")
        vpp.ctl("set", "interface", "ip", "address", WAN_NAME, WAN_ADDR)
        yield vpp.socket_path, vpp.pid
    finally:
        vpp.stop(timeout=15)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
