"""Resync cost: re-program N peers after a VPP restart; reads and writes when in sync.

For each target (vppsim, and real VPP 26.06 when bootstrap installed it, see
realvpp.py) and each run: the agent applies N peers into a fresh VPP and stops;
it then starts against another fresh, empty VPP with the same stored state (what
it finds after VPP restarted) and re-programs everything; the figure is the time
from its start to "in sync" (includes connecting to VPP and to the controller
double, and reading VPP). Then a reconcile with nothing to change: it must write
nothing. Median, min and max over --runs.

    .venv/bin/python scripts/bench/resync.py --peers 1000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # agent.*
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realvpp
from apply import TARGETS, daemon_logging, peer_params, running_agent

from agent.daemon.gctune import tune_gc


async def one_run(kind: str, n: int, workdir: Path, tag: str) -> dict[str, Any]:
    target = TARGETS[kind]
    state = workdir / f"state-{tag}"
    requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                for i in range(1, n + 1)]
    with target.start(workdir, f"{tag}a") as (sock, _pid):
        async with running_agent(sock, state, target.interfaces) as (agent, ctl):
            reply = await ctl.send_job("aggregated", {"requests": requests})
            if reply["msg"]["ok"] != 1:
                raise SystemExit(f"aggregated job failed: {reply['msg']['message']}")
    result: dict[str, Any] = {}
    with target.start(workdir, f"{tag}b") as (sock, _pid):
        t0 = time.perf_counter()
        async with running_agent(sock, state, target.interfaces) as (agent, ctl):
            result["reprogram_s"] = round(time.perf_counter() - t0, 3)
            result["reprogram_writes"] = agent.manager.executor.writes
            w = agent.manager.executor.writes
            t1 = time.perf_counter()
            await agent.manager.reconcile()
            result["in_sync_s"] = round(time.perf_counter() - t1, 3)
            result["in_sync_writes"] = agent.manager.executor.writes - w
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


async def main(n: int, runs: int, targets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"peers": n, "runs": runs, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d, daemon_logging(Path(d)):
        for kind in targets:
            if kind == "vpp" and (why := realvpp.unavailable()):
                out["targets"][kind] = {"skipped": why}
                continue
            per_run = [await one_run(kind, n, Path(d), f"{kind}{r}") for r in range(runs)]
            out["targets"][kind] = {
                "reprogram_s": spread([r["reprogram_s"] for r in per_run]),
                "in_sync_s": spread([r["in_sync_s"] for r in per_run]),
                "reprogram_writes": per_run[0]["reprogram_writes"],
                "in_sync_writes": max(r["in_sync_writes"] for r in per_run),
                "runs": per_run,
            }
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=["vppsim", "vpp"])
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    tune_gc()  # as `peering-agent run` does
    res = asyncio.run(main(args.peers, args.runs, args.targets))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for kind, r in res["targets"].items():
        if "skipped" in r:
            print(f"{kind}: skipped: {r['skipped']}")
            continue
        rp, ins = r["reprogram_s"], r["in_sync_s"]
        print(f"{kind} resync N={res['peers']} ({res['runs']} runs): re-programmed after a VPP "
              f"restart in {rp['median']} s ({rp['min']}-{rp['max']}; {r['reprogram_writes']} "
              f"writes, includes connect); in-sync check {ins['median']} s "
              f"({ins['min']}-{ins['max']}) with {r['in_sync_writes']} writes")
