"""Apply cost: one aggregated job of N peers through the controller link into vppsim.

Side by side, in the same run and against the same vppsim build (a separate
process, so the emulator and the agent each have a core):

- agent: the full path — controller double -> websocket -> link -> validation ->
  plan -> executor -> VPP client -> vppsim; wall time from sending the job to
  its reply;
- papi: the raw baseline — vpp-papi's own async client sending the same
  messages, one dependent chain per peer, all peers in flight;
- vppsim: its own pipelined message rate (pre-packed show_version requests
  written at once), to show it is not what bounds the other two.

Also reports resident memory per peer of the agent after the job.

    .venv/bin/python scripts/bench/apply.py --peers 100 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.app import Agent  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.lab.controller_double import ControllerDouble  # noqa: E402
from agent.logsetup import configure_logging  # noqa: E402
from agent.peers.spec import PeerSpec  # noqa: E402
from agent.vpp.plan import VppFacts, plan_add_ops, resolve  # noqa: E402
from tests.fixtures import example_request  # noqa: E402

WAN = "GigabitEthernet0/3/0=192.168.1.10/24"
MACHINE = "3f1c0000-0000-4000-8000-0000000bench"


@contextlib.contextmanager
def vppsim(workdir: Path) -> Iterator[Path]:
    sock = workdir / "api.sock"
    ready = workdir / "ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.lab.vppsim", "--socket", str(sock), "--interface", WAN,
         "--ready-file", str(ready), "--log-level", "error"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("vppsim did not start")
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def peer_params(n: int) -> dict[str, Any]:
    """The protocol document's add-tunnel, renumbered: tunnel n with its own dst and /31."""
    params: dict[str, Any] = example_request()["params"]
    params["tunnel-id"] = n
    params["dst"] = f"203.0.{113 + n // 250}.{n % 250 + 1}"
    base = 2 * n
    params["peer"]["addr"] = f"10.{100 + base // 65536}.{base // 256 % 256}.{base % 256}/31"
    params["peer"]["ips"] = [f"10.200.{n // 250}.{n % 250 + 1}"]
    params["peer"]["urls"] = []
    params["ikev2"]["psk"] = f"bench-psk-{n:06d}-abcdefghij"
    params["ikev2"]["remote-device-id"] = f"gw{n}.cloud.example"  # one ID pair per tunnel
    return params


def rss_kib() -> int:
    """Resident memory after a full collection, with freed heap given back to the OS:
    what the process keeps, not the high-water mark of the job's transient objects."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@contextlib.asynccontextmanager
async def running_agent(sock: Path, state: Path) -> AsyncIterator[tuple[Agent, ControllerDouble]]:
    ctl = ControllerDouble(machine_id=MACHINE, ping_interval=None, stats_interval=None,
                           job_timeout=600)
    await ctl.start()
    token = state.parent / "token"
    token.write_text("bench-token")
    cfg = parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "job_timeout": 600},
        "vpp": {"api_socket": str(sock), "call_timeout": 30.0},
        "state": {"dir": str(state)},
        "admin": {"socket": str(state.parent / f"admin-{state.name}.sock")},
    }, {})
    agent = Agent(cfg)
    task = asyncio.create_task(agent.run())
    try:
        await ctl.wait_connected(10)
        while not agent.manager.in_sync:
            await asyncio.sleep(0.01)
        yield agent, ctl
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ctl.stop()


async def bench_agent(sock: Path, workdir: Path, n: int) -> dict[str, Any]:
    requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                for i in range(1, n + 1)]
    async with running_agent(sock, workdir / f"state-{n}") as (agent, ctl):
        rss_before = rss_kib()
        writes_before = agent.manager.executor.writes
        t0 = time.perf_counter()
        reply = await ctl.send_job("aggregated", {"requests": requests})
        wall = time.perf_counter() - t0
        if reply["msg"]["ok"] != 1:
            raise SystemExit(f"aggregated job failed: {reply['msg']['message']}")
        writes = agent.manager.executor.writes - writes_before
        rss_after = rss_kib()
        # resync with VPP in sync: must write nothing
        w = agent.manager.executor.writes
        t1 = time.perf_counter()
        await agent.manager.reconcile()
        in_sync = time.perf_counter() - t1
        resync_writes = agent.manager.executor.writes - w
        return {"wall_s": round(wall, 3), "vpp_writes": writes,
                "calls_per_s": round(writes / wall), "rss_per_peer_kib":
                round((rss_after - rss_before) / n, 2),
                "resync_in_sync_s": round(in_sync, 3), "resync_in_sync_writes": resync_writes}


async def bench_memory(sock: Path, workdir: Path, n: int) -> dict[str, Any]:
    """Python heap the agent keeps per peer (tracemalloc; a separate, slower run).

    RSS in this process also holds the in-process controller double and the
    allocator's fragmentation after the job's transient objects, so the heap
    the agent still references after the job is the per-peer figure that scales.
    """
    requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                for i in range(1, n + 1)]
    async with running_agent(sock, workdir / f"state-mem-{n}") as (agent, ctl):
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        reply = await ctl.send_job("aggregated", {"requests": requests})
        if reply["msg"]["ok"] != 1:
            raise SystemExit(f"aggregated job failed: {reply['msg']['message']}")
        del reply
        await agent.monitor.device_stats()  # a stats period: monitor state is in place
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return {"heap_per_peer_kib": round((after - before) / 1024 / n, 2)}


async def bench_papi(sock: Path, n: int) -> dict[str, Any]:
    """vpp-papi's async client, same messages, one dependent chain per peer, all in flight."""
    from vpp_papi.vpp_papi_async import VPPApiClient

    from agent.jobs.validation import ValidationPolicy, normalize_add_tunnel

    specs: list[PeerSpec] = [normalize_add_tunnel(peer_params(i), ValidationPolicy())
                             for i in range(1, n + 1)]
    facts = VppFacts(wan_sw_if_index=1)
    client = VPPApiClient(server_address=str(sock))
    await client.connect("bench", asyncio.Queue())
    calls = 0

    async def chain(spec: PeerSpec) -> None:
        nonlocal calls
        refs: dict[str, int] = {}
        for op in plan_add_ops(spec, facts):
            reply = await getattr(client.api, op.message)(**resolve(op.args, refs))
            calls += 1
            if op.produces:
                refs[op.produces] = reply.sw_if_index

    t0 = time.perf_counter()
    await asyncio.gather(*(chain(s) for s in specs))
    wall = time.perf_counter() - t0
    await client.disconnect()
    return {"wall_s": round(wall, 3), "vpp_writes": calls, "calls_per_s": round(calls / wall)}


async def bench_vppsim_rate(sock: Path, count: int = 50000) -> dict[str, Any]:
    """vppsim alone: pre-packed requests written at once, replies counted."""
    from vpp_papi.vpp_papi import VPPApiJSONFiles

    from agent.vpp.client import VppClient

    client = VppClient(str(sock))
    await client.start()
    await client.wait_connected(5)
    conn = client._live()  # the raw connection: measure the emulator, not our client
    assert conn.api is not None
    entry = conn.api.by_name["show_version"]
    frames = []
    for ctx in range(1, count + 1):
        body = entry.msgdef.pack({"_vl_msg_id": entry.msg_id, "client_index": conn.client_index,
                                  "context": ctx})
        frames.append(struct.pack(">QII", 0, len(body), 0) + body)
    done = asyncio.Event()
    seen = 0

    def on_event(name: str, msg: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    client.add_event_listener(on_event)  # replies with no pending call land here
    assert conn.transport is not None
    t0 = time.perf_counter()
    conn.transport.write(b"".join(frames))
    await asyncio.wait_for(done.wait(), 120)
    wall = time.perf_counter() - t0
    await client.close()
    del VPPApiJSONFiles
    return {"messages": count, "wall_s": round(wall, 3), "msgs_per_s": round(count / wall)}


async def main(peers: list[int]) -> dict[str, Any]:
    configure_logging("error", json=True)
    results: dict[str, Any] = {"peers": {}}
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d:
        workdir = Path(d)
        with vppsim(workdir) as sock:
            results["vppsim"] = await bench_vppsim_rate(sock)
        for n in peers:
            with vppsim(workdir) as sock:
                agent = await bench_agent(sock, workdir, n)
            with vppsim(workdir) as sock:
                papi = await bench_papi(sock, n)
            with vppsim(workdir) as sock:
                agent.update(await bench_memory(sock, workdir, n))
            agent["ratio_to_papi"] = round(agent["wall_s"] / papi["wall_s"], 2)
            results["peers"][n] = {"agent": agent, "papi": papi}
    results["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    res = asyncio.run(main(args.peers))
    print(json.dumps(res, indent=2))
    for n, r in res["peers"].items():
        a, p = r["agent"], r["papi"]
        print(f"apply N={n}: agent {a['wall_s']} s ({a['calls_per_s']} calls/s), "
              f"papi pipelined {p['wall_s']} s, ratio {a['ratio_to_papi']}x, "
              f"heap {a['heap_per_peer_kib']} KiB/peer (RSS {a['rss_per_peer_kib']}), "
              f"in-sync resync {a['resync_in_sync_writes']} "
              f"writes in {a['resync_in_sync_s']} s; vppsim {res['vppsim']['msgs_per_s']} msg/s")
