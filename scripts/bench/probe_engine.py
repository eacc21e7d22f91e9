"""CPU cost of the probe engine: N targets at 1 Hz for D seconds, optionally vs fping -l.

Needs root: builds two throw-away network namespaces (engine side and responder
side, joined by a veth); the responder answers for a whole private /20 through
an AnyIP local route, so every target is a distinct address. Nothing leaves the
namespaces, which are removed at the end, also on failure.

    .venv/bin/python scripts/bench/probe_engine.py --targets 1000 --seconds 10 --fping
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "integration"))

from probe_netns import Lab, run_in_netns

from agent.monitor.icmp import ProbeEngine, ProbeResult

PREFIX = ipaddress.IPv4Network("10.200.0.0/20")


def addresses(n: int) -> list[ipaddress.IPv4Address]:
    if n > PREFIX.num_addresses - 2:
        raise SystemExit(f"at most {PREFIX.num_addresses - 2} targets")
    return [PREFIX.network_address + 1 + i for i in range(n)]


def engine_run(ns: str, targets: list[ipaddress.IPv4Address], seconds: float) -> dict[str, float]:
    async def main() -> dict[str, float]:
        rtts: list[float] = []
        lost = 0

        def on_result(r: ProbeResult) -> None:
            nonlocal lost
            if r.rtt_ms is None:
                lost += 1
            else:
                rtts.append(r.rtt_ms)

        engine = ProbeEngine(interval=1.0, timeout=1.0)
        async with engine:
            for addr in targets:
                engine.add_target(str(addr), addr, on_result)
            await asyncio.sleep(1.5)  # warm-up: every target has started
            rtts.clear()
            lost = 0
            r0, t0 = resource.getrusage(resource.RUSAGE_THREAD), time.monotonic()
            await asyncio.sleep(seconds)
            r1, t1 = resource.getrusage(resource.RUSAGE_THREAD), time.monotonic()
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        return {
            "wall_s": t1 - t0,
            "cpu_s": cpu,
            "user_s": r1.ru_utime - r0.ru_utime,
            "sys_s": r1.ru_stime - r0.ru_stime,
            "cpu_pct": 100 * cpu / (t1 - t0),
            "replies": len(rtts),
            "lost": lost,
            "rtt_median_ms": statistics.median(rtts) if rtts else float("nan"),
            "rtt_p99_ms": (
                statistics.quantiles(rtts, n=100)[98] if len(rtts) > 100 else float("nan")
            ),
        }

    return run_in_netns(ns, lambda: asyncio.run(main()))


def fping_run(ns: str, targets: list[ipaddress.IPv4Address], seconds: float) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "fping", "-l", "-q", "-p", "1000", "-i", "1",
         *map(str, targets)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
    finally:
        proc.terminate()
        proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    wall = time.monotonic() - t0
    return {"wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fping", action="store_true", help="also measure fping -l")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root to build network namespaces")
    targets = addresses(args.targets)
    with Lab() as lab:
        ns_a, ns_b = lab.netns("benchA"), lab.netns("benchB")
        lab.veth(ns_a, "v0", "198.51.100.1/24", ns_b, "v1", "198.51.100.2/24")
        lab.sh(ns_a, "ip", "route", "add", str(PREFIX), "via", "198.51.100.2")
        lab.sh(ns_b, "ip", "route", "add", "local", str(PREFIX), "dev", "lo")
        # the kernel's ICMP rate limits apply to echo replies from the responder
        lab.sh(ns_b, "sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0")
        lab.sh(ns_b, "sysctl", "-q", "-w", "net.ipv4.icmp_msgs_per_sec=100000")
        print(f"engine: {args.targets} targets, 1 Hz, {args.seconds:g} s")
        for k, v in engine_run(ns_a, targets, args.seconds).items():
            print(f"  {k:14} {v:.4g}")
        if args.fping:
            print(f"fping -l -p 1000 -i 1: {args.targets} targets, {args.seconds:g} s")
            for k, v in fping_run(ns_a, targets, args.seconds).items():
                print(f"  {k:14} {v:.4g}")


if __name__ == "__main__":
    main()
