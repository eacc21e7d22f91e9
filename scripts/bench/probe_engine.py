"""CPU cost of the probe engine: N targets at 1 Hz for D seconds, optionally vs fping -l.

Needs root: builds two throw-away network namespaces (engine side and responder
side, joined by a veth); the responder answers for a whole private /20 through
an AnyIP local route, so every target is a distinct address. Nothing leaves the
namespaces, which are removed at the end, also on failure.

    .venv/bin/python scripts/bench/probe_engine.py --targets 1000 --seconds 30 --fping \\
        --fping-per-target 5
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
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


def engine_run(ns: str, targets: list[ipaddress.IPv4Address], seconds: float,
               socket_kind: str = "auto") -> dict[str, float]:
    async def main() -> dict[str, float]:
        rtts: list[float] = []
        lost = 0

        def on_result(r: ProbeResult) -> None:
            nonlocal lost
            if r.rtt_ms is None:
                lost += 1
            else:
                rtts.append(r.rtt_ms)

        engine = ProbeEngine(interval=1.0, timeout=1.0,
                             socket_kind=socket_kind)  # type: ignore[arg-type]
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


def fping_per_target_run(
    ns: str, targets: list[ipaddress.IPv4Address], seconds: float
) -> dict[str, float]:
    """The reference agent's way: one `fping -C 1` process per target per second."""

    def body() -> dict[str, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        rounds = 0
        while time.monotonic() - t0 < seconds:
            start = time.monotonic()
            procs = [subprocess.Popen(["fping", "-C", "1", "-q", str(a)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for a in targets]
            for proc in procs:
                proc.wait()
            rounds += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        wall = time.monotonic() - t0
        return {"wall_s": wall, "cpu_s": cpu, "cpu_pct": 100 * cpu / wall, "rounds": rounds}

    return run_in_netns(ns, body)


def ping_median(ns: str, targets: list[ipaddress.IPv4Address], count: int = 10) -> float:
    """Median RTT that iputils ping measures to the same addresses."""
    rtts: list[float] = []
    for addr in targets:
        out = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count),
                              "-i", "0.05", str(addr)], capture_output=True, text=True).stdout
        rtts += [float(line.split("time=")[1].split()[0])
                 for line in out.splitlines() if "time=" in line]
    return statistics.median(rtts) if rtts else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fping", action="store_true", help="also measure fping -l")
    parser.add_argument("--socket-kind", default="auto", choices=["auto", "raw", "dgram"])
    parser.add_argument("--fping-per-target", type=float, default=0.0, metavar="SECONDS",
                        help="also measure one fping -C 1 process per target per second "
                        "for this long (it costs a core or more: keep it short)")
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
        result: dict[str, object] = {"targets": args.targets, "seconds": args.seconds}
        engine = engine_run(ns_a, targets, args.seconds, args.socket_kind)
        result["engine"] = engine
        reference = ping_median(ns_a, targets[:: max(1, len(targets) // 20)])
        result["ping_rtt_median_ms"] = reference
        result["engine_minus_ping_median_ms"] = engine["rtt_median_ms"] - reference
        summary = (f"probe {args.targets} targets @1 Hz: engine {engine['cpu_pct']:.1f} % CPU, "
                   f"median RTT {engine['rtt_median_ms']:.3f} ms vs ping {reference:.3f} ms")
        if args.fping:
            fping = fping_run(ns_a, targets, args.seconds)
            result["fping_l"] = fping
            summary += (f"; fping -l {fping['cpu_pct']:.1f} % "
                        f"(engine/fping {engine['cpu_s'] / max(fping['cpu_s'], 1e-9):.2f}x)")
        if args.fping_per_target:
            per = fping_per_target_run(ns_a, targets, args.fping_per_target)
            result["fping_per_target"] = per
            summary += f"; one fping per target per second {per['cpu_pct']:.0f} %"
        print(json.dumps(result, indent=2))
        print(summary)

if __name__ == "__main__":
    main()
