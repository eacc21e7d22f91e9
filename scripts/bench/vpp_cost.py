"""What each message of the add plan costs VPP itself: the floor under any apply.

The agent's add plan for N peers is sent one column at a time (the k-th step of
every peer's chain, all peers in flight, through the agent's VPP client) into a
fresh real VPP 26.06, and VPP's own CPU time (/proc) is read around each column.
The sum is what VPP needs for the whole job however fast the client is.

    .venv/bin/python scripts/bench/vpp_cost.py --peers 1000 --runs 3 --out cost.json

`--then-up` adds one column after the plan, outside its total: every tunnel set
admin-up, as VPP's IKE plugin does when it installs each tunnel's child SA (the plan
leaves tunnels down until then).

`--perf MESSAGE` also records where VPP spends that step's CPU (perf with DWARF call
graphs, attached to VPP for that column only, first run; sampling adds to that
column's CPU in that run); read it with `perf report -i FILE --children --sort symbol`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply import TARGETS, daemon_logging, peer_params
from realvpp import cpu_seconds, unavailable

from agent.jobs.validation import ValidationPolicy, normalize_add_tunnel
from agent.vpp.client import VppClient
from agent.vpp.executor import Executor
from agent.vpp.kinds.tunnel import ref_name
from agent.vpp.plan import plan_add_ops

PERF_ATTACH_S = 10.0


def start_perf(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """perf attached to VPP: it writes its file's header once its events are open."""
    out.unlink(missing_ok=True)
    perf = subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F", "500",
                             "-p", str(pid), "-o", str(out)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + PERF_ATTACH_S
    while not (out.exists() and out.stat().st_size > 0):
        if perf.poll() is not None or time.monotonic() > deadline:
            perf.kill()
            raise SystemExit(f"perf did not attach to VPP (pid {pid}) within {PERF_ATTACH_S} s")
        time.sleep(0.05)
    return perf


def stop_perf(perf: subprocess.Popen[bytes]) -> None:
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=120)


async def one_run(n: int, workdir: Path, tag: str, perf_step: tuple[str, Path] | None = None,
                  then_up: bool = False) -> list[dict[str, Any]]:
    target = TARGETS["vpp"]
    specs = [normalize_add_tunnel(peer_params(i), ValidationPolicy()) for i in range(1, n + 1)]
    chains = [plan_add_ops(s, target.facts) for s in specs]
    columns: list[dict[str, Any]] = []
    with target.start(workdir, tag) as (sock, pid):
        client = VppClient(str(sock), call_timeout=300)
        await client.start()
        await client.wait_connected(10)
        executor, refs = Executor(client), dict[str, int]()
        try:
            for k in range(len(chains[0])):
                perf = (start_perf(pid, perf_step[1])
                        if perf_step is not None and chains[0][k].message == perf_step[0]
                        else None)
                cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                await executor.apply([[chain[k]] for chain in chains], refs)
                if perf is not None:
                    stop_perf(perf)
                    perf_step = None  # the first column of that message only
                columns.append({"message": chains[0][k].message,
                                "wall_s": round(time.perf_counter() - t0, 3),
                                "vpp_cpu_s": round(cpu_seconds(pid) - cpu0, 3)})
            if then_up:
                tunnels = [refs[ref_name(s.tunnel_id)] for s in specs]
                cpu0, t0 = cpu_seconds(pid), time.perf_counter()
                await asyncio.gather(*(client.call("sw_interface_set_flags", sw_if_index=sw,
                                                   flags=1) for sw in tunnels))
                columns.append({"message": "then: sw_interface_set_flags up (child SAs)",
                                "after_plan": True,
                                "wall_s": round(time.perf_counter() - t0, 3),
                                "vpp_cpu_s": round(cpu_seconds(pid) - cpu0, 3)})
        finally:
            await client.close()
    return columns


async def main(n: int, runs: int, perf_step: tuple[str, Path] | None = None,
               then_up: bool = False) -> dict[str, Any]:
    if why := unavailable():
        return {"skipped": why}
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d, daemon_logging(Path(d)):
        per_run = [await one_run(n, Path(d), f"c{r}", perf_step if r == 0 else None, then_up)
                   for r in range(runs)]
    steps = []
    for k, first in enumerate(per_run[0]):
        cpu = [run[k]["vpp_cpu_s"] for run in per_run]
        steps.append({"step": k + 1, "message": first["message"],
                      "vpp_cpu_s_median": round(statistics.median(cpu), 3),
                      "vpp_us_per_peer": round(statistics.median(cpu) / n * 1e6),
                      "wall_s_median": round(statistics.median(r[k]["wall_s"] for r in per_run),
                                             3)}
                     | ({"after_plan": True} if first.get("after_plan") else {}))
    totals = [sum(c["vpp_cpu_s"] for c in run if not c.get("after_plan")) for run in per_run]
    return {"peers": n, "runs": runs, "steps": steps,
            "vpp_cpu_total_s": {"median": round(statistics.median(totals), 3),
                                "min": round(min(totals), 3), "max": round(max(totals), 3)}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--perf", metavar="MESSAGE",
                        help="record VPP's call graphs during this step (needs perf)")
    parser.add_argument("--then-up", action="store_true",
                        help="then set every tunnel up, as VPP does when each child SA arrives")
    parser.add_argument("--perf-out", type=Path, default=Path("vpp-step.perf.data"))
    args = parser.parse_args()
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf needs perf (Debian: linux-perf)")
    result = asyncio.run(main(args.peers, args.runs,
                              (args.perf, args.perf_out) if args.perf else None,
                              args.then_up))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if "steps" in result:
        total = result["vpp_cpu_total_s"]
        plan = [s for s in result["steps"] if not s.get("after_plan")]
        after = [s for s in result["steps"] if s.get("after_plan")]
        print(f"VPP's own CPU for the add plan of {args.peers} peers: {total['median']} s "
              f"({total['min']}-{total['max']}); dearest steps: " + ", ".join(
                  f"{s['message']} {s['vpp_us_per_peer']} us"
                  for s in sorted(plan, key=lambda s: -s["vpp_cpu_s_median"])[:3])
              + "".join(f"; after the plan, {s['message']}: {s['vpp_cpu_s_median']} s "
                        f"({s['vpp_us_per_peer']} us per peer)" for s in after),
              file=sys.stderr)
