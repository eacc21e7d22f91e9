"""Resync cost: re-program N peers after a VPP (vppsim) restart; writes when in sync.

    .venv/bin/python scripts/bench/resync.py --peers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apply import configure_logging, peer_params, running_agent, vppsim


async def main(n: int) -> dict[str, Any]:
    configure_logging("error", json=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d:
        workdir = Path(d)
        requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                    for i in range(1, n + 1)]
        with vppsim(workdir) as sock:
            async with running_agent(sock, workdir / "state") as (agent, ctl):
                reply = await ctl.send_job("aggregated", {"requests": requests})
                assert reply["msg"]["ok"] == 1, reply["msg"]["message"]
        # the agent restarts with VPP in sync (same vppsim): it must write nothing
        # (covered by apply.py); here VPP restarts under a running agent:
        with vppsim(workdir) as sock:
            async with running_agent(sock, workdir / "state") as (agent, ctl):
                generation = agent.vpp.generation
                writes = agent.manager.executor.writes
        # a fresh, empty vppsim: the agent finds nothing and re-programs everything
        result: dict[str, Any] = {"peers": n}
        with vppsim(workdir) as sock:
            t0 = time.perf_counter()
            async with running_agent(sock, workdir / "state") as (agent, ctl):
                result["reprogram_s"] = round(time.perf_counter() - t0, 3)
                result["reprogram_writes"] = agent.manager.executor.writes
                w = agent.manager.executor.writes
                t1 = time.perf_counter()
                await agent.manager.reconcile()
                result["in_sync_check_s"] = round(time.perf_counter() - t1, 3)
                result["in_sync_writes"] = agent.manager.executor.writes - w
        del generation, writes
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=1000)
    res = asyncio.run(main(parser.parse_args().peers))
    print(json.dumps(res, indent=2))
    print(f"resync N={res['peers']}: re-programmed after a VPP restart in {res['reprogram_s']} s "
          f"({res['reprogram_writes']} writes, includes connect); in-sync check "
          f"{res['in_sync_check_s']} s with {res['in_sync_writes']} writes")
