"""Apply cost: one aggregated job of N peers, the agent against bare vpp-papi, same run.

Side by side, in the same run and against the same kind of VPP (a fresh one
for each measurement, in its own process so that VPP and the agent each have a
core):

- agent: the full path — controller double -> websocket -> link -> validation ->
  plan -> executor -> VPP client -> VPP; wall time from sending the job to its
  reply's arrival, timed by the double on a thread and event loop of its own (as
  flexiManage is a process of its own: the agent's work after replying is not
  counted); the double's hash-chain bookkeeping and its serialising of the job's
  params are done when it is queued: that is the controller's own work, on another
  machine in production; plus the socket traffic it
  took (reads = wake-ups for VPP's replies, writes) and an in-sync resync
  (reconcile with nothing to change);
- papi: the raw baseline — vpp-papi's own async client sending the same
  messages (the agent's plan for the same VPP), one dependent chain per peer,
  all peers in flight;
- targets: `vppsim` (the project's emulator) and `vpp` (real VPP 26.06 as
  bootstrap installed it, see realvpp.py; without linux-cp, which cannot run here);
  `vpp` is skipped with the reason when it cannot run;
- memory: Python heap the agent keeps per peer (tracemalloc, a separate run)
  and resident memory per peer;
- vppsim alone: its pipelined message rate, to show what bounds the vppsim runs.

Every figure is repeated --runs times (agent and papi alternate who goes
first) and summarised as median, min and max.

    .venv/bin/python scripts/bench/apply.py --peers 1000 5000 --runs 5 --out bench.json
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
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.app import Agent  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.daemon.gctune import tune_gc  # noqa: E402
from agent.lab.controller_double import ControllerDouble, Job  # noqa: E402
from agent.logsetup import configure_logging  # noqa: E402
from agent.peers.spec import PeerSpec  # noqa: E402
from agent.vpp.plan import VppFacts, plan_add_ops, resolve  # noqa: E402
from tests.fixtures import numbered_add_tunnel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realvpp  # noqa: E402

WAN = "GigabitEthernet0/3/0=192.168.1.10/24"
MACHINE = "3f1c0000-0000-4000-8000-0000000be0c0"
DEV_ID = "pci:0000:00:03.00"  # the fixture's WAN dev_id
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """A VPP the benchmark can start fresh, and what the agent's plan needs to know of it."""

    kind: str  # "vppsim" or "vpp"
    interfaces: dict[str, str]  # the agent's [interfaces] table for it
    facts: VppFacts

    @contextlib.contextmanager
    def start(self, workdir: Path, tag: str) -> Iterator[tuple[Path, int]]:
        """A fresh VPP of this kind: its socket and its process id."""
        if self.kind == "vppsim":
            with vppsim_process(workdir) as started:
                yield started
        else:
            with realvpp.real_vpp(workdir, tag) as started:
                yield started


TARGETS = {
    "vppsim": Target("vppsim", {}, VppFacts(wan_sw_if_index=1)),
    # loop0 is sw_if_index 1; linux-cp cannot run on these machines (no /dev/vhost-net)
    "vpp": Target("vpp", {DEV_ID: realvpp.WAN_NAME},
                  VppFacts(wan_sw_if_index=1, has_lcp=False)),
}


@contextlib.contextmanager
def vppsim(workdir: Path) -> Iterator[Path]:
    with vppsim_process(workdir) as (sock, _pid):
        yield sock


@contextlib.contextmanager
def vppsim_process(workdir: Path) -> Iterator[tuple[Path, int]]:
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
        yield sock, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def peer_params(n: int) -> dict[str, Any]:
    return numbered_add_tunnel(n, "bench-psk")


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


class ControllerThread:
    """The controller double on a thread and event loop of its own, as flexiManage is a
    process of its own: the reply is timed where it arrives, so the agent's work after
    sending it (its journal entry, the monitor's sync) is not counted, and the double's
    own work does not run on the agent's loop. Only the GIL is shared."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="controller",
                                        daemon=True)
        self._thread.start()
        self.ctl: ControllerDouble | None = None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """`coro` run on the controller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    @property
    def double(self) -> ControllerDouble:
        assert self.ctl is not None, "start() first"
        return self.ctl

    async def start(self) -> str:
        async def make() -> str:
            self.ctl = ControllerDouble(machine_id=MACHINE, ping_interval=None,
                                        stats_interval=None, job_timeout=600)
            await self.ctl.start()
            return self.ctl.url
        return await self.call(make())

    async def queue(self, message: str, params: Any) -> Job:
        async def queue() -> Job:
            return self.double.queue(message, params)
        return await self.call(queue())

    async def deliver(self, job: Job) -> tuple[dict[str, Any], float]:
        """The job's reply and the seconds from sending the job to its arrival."""
        async def timed() -> tuple[dict[str, Any], float]:
            t0 = time.perf_counter()
            reply = await self.double.deliver(job)
            return reply, time.perf_counter() - t0
        return await self.call(timed())

    async def send_job(self, message: str, params: Any) -> dict[str, Any]:
        return await self.call(self.double.send_job(message, params))

    async def wait_connected(self, timeout: float) -> None:
        await self.call(self.double.wait_connected(timeout))

    async def stop(self) -> None:
        if self.ctl is not None:
            await self.call(self.ctl.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()


@contextlib.asynccontextmanager
async def running_agent(sock: Path, state: Path, interfaces: dict[str, str] | None = None
                        ) -> AsyncIterator[tuple[Agent, ControllerThread]]:
    ctl = ControllerThread()
    url = await ctl.start()
    token = state.parent / "token"
    token.write_text("bench-token")
    cfg = parse_config({
        "controller": {"url": url, "machine_id": MACHINE, "token_file": str(token),
                       "allow_insecure": True, "job_timeout": 600},
        # with thousands of calls queued in VPP, a call's reply may take tens of seconds
        "vpp": {"api_socket": str(sock), "call_timeout": 300.0},
        "state": {"dir": str(state)},
        "admin": {"socket": str(state.parent / f"admin-{state.name}.sock")},
        "interfaces": interfaces or {},
        # no FRR beside these VPPs: routing is recorded, not applied (as in the lab demo)
        "routing": {"vtysh": ""},
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


class CpuMeter:
    """CPU seconds VPP and this process spend between start() and stop()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.vpp0 = self.own0 = 0.0

    def start(self) -> None:
        self.vpp0, self.own0 = realvpp.cpu_seconds(self.pid), time.process_time()

    def stop(self) -> dict[str, float]:
        return {"vpp_cpu_s": round(realvpp.cpu_seconds(self.pid) - self.vpp0, 2),
                "client_cpu_s": round(time.process_time() - self.own0, 2)}


async def bench_agent(sock: Path, workdir: Path, n: int, target: Target,
                      tag: str, pid: int) -> dict[str, Any]:
    requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                for i in range(1, n + 1)]
    async with running_agent(sock, workdir / f"state-{tag}", target.interfaces) as (agent, ctl):
        rss_before = rss_kib()
        writes_before = agent.manager.executor.writes
        io = agent.vpp.io
        io_before = (io.reads, io.frames_in, io.writes, io.frames_out)
        codec = agent.vpp.codec_stats
        fallbacks_before = codec.pack_fallbacks + codec.unpack_fallbacks
        # the controller's own bookkeeping (its hash chain, its model) before the clock
        job = await ctl.queue("aggregated", {"requests": requests})
        meter = CpuMeter(pid)
        meter.start()
        reply, wall = await ctl.deliver(job)
        cpu = meter.stop()  # client = the agent and the controller double (one process)
        if reply["msg"]["ok"] != 1:
            raise SystemExit(f"aggregated job failed: {reply['msg']['message']}")
        writes = agent.manager.executor.writes - writes_before
        reads, frames_in, sock_writes, frames_out = (
            now - before for now, before in zip(
                (io.reads, io.frames_in, io.writes, io.frames_out), io_before, strict=True))
        rss_after = rss_kib()
        # resync with VPP in sync: must write nothing
        w = agent.manager.executor.writes
        t1 = time.perf_counter()
        await agent.manager.reconcile()
        in_sync = time.perf_counter() - t1
        resync_writes = agent.manager.executor.writes - w
        return {"wall_s": round(wall, 3), "vpp_writes": writes,
                "calls_per_s": round(writes / wall), **cpu,
                "socket_reads": reads, "frames_in": frames_in,
                "socket_writes": sock_writes, "frames_out": frames_out,
                "codec_fallbacks": codec.pack_fallbacks + codec.unpack_fallbacks
                - fallbacks_before,
                "rss_per_peer_kib": round((rss_after - rss_before) / n, 2),
                "resync_in_sync_s": round(in_sync, 3), "resync_in_sync_writes": resync_writes}


async def bench_memory(sock: Path, workdir: Path, n: int, target: Target) -> dict[str, Any]:
    """Python heap the agent keeps per peer (tracemalloc; a separate, slower run).

    RSS in this process also holds the in-process controller double and the
    allocator's fragmentation after the job's transient objects, so the heap
    the agent still references after the job is the per-peer figure that scales.
    """
    requests = [{"entity": "agent", "message": "add-tunnel", "params": peer_params(i)}
                for i in range(1, n + 1)]
    async with running_agent(sock, workdir / f"state-mem-{n}", target.interfaces) as (agent, ctl):
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


async def bench_papi(sock: Path, n: int, target: Target, pid: int) -> dict[str, Any]:
    """vpp-papi's async client, same messages, one dependent chain per peer, all in flight."""
    from vpp_papi.vpp_papi_async import VPPApiClient

    from agent.jobs.validation import ValidationPolicy, normalize_add_tunnel

    specs: list[PeerSpec] = [normalize_add_tunnel(peer_params(i), ValidationPolicy())
                             for i in range(1, n + 1)]
    facts = target.facts
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

    meter = CpuMeter(pid)
    meter.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(chain(s) for s in specs))
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    await client.disconnect()
    return {"wall_s": round(wall, 3), "vpp_writes": calls, "calls_per_s": round(calls / wall),
            **cpu}


async def bench_client(sock: Path, n: int, target: Target, pid: int) -> dict[str, Any]:
    """The agent's VPP client and executor alone: the same plan as papi's loop, no link,
    validation or journal; isolates what the codec and the batching save."""
    from agent.jobs.validation import ValidationPolicy, normalize_add_tunnel
    from agent.vpp.client import VppClient
    from agent.vpp.executor import Executor

    specs = [normalize_add_tunnel(peer_params(i), ValidationPolicy()) for i in range(1, n + 1)]
    chains = [plan_add_ops(s, target.facts) for s in specs]
    client = VppClient(str(sock), call_timeout=300)
    await client.start()
    await client.wait_connected(10)
    executor = Executor(client)
    meter = CpuMeter(pid)
    meter.start()
    t0 = time.perf_counter()
    await executor.apply(chains, {})
    wall = time.perf_counter() - t0
    cpu = meter.stop()
    await client.close()
    return {"wall_s": round(wall, 3), "vpp_writes": executor.writes,
            "calls_per_s": round(executor.writes / wall), **cpu,
            "socket_reads": client.io.reads, "socket_writes": client.io.writes}


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


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


@contextlib.contextmanager
def daemon_logging(workdir: Path) -> Iterator[Path]:
    """Log as the daemon does by default (info, JSON lines; journald there, a file here),
    so that what the agent logs per peer is part of what is measured."""
    path = workdir / "agent.log"
    with path.open("w") as stream:
        configure_logging("info", json=True, stream=stream)
        try:
            yield path
        finally:
            configure_logging("error", json=True)


async def main(peers: list[int], runs: int, targets: list[str],
               out_path: Path | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": runs, "cpus": os.cpu_count(),
                               "loadavg_start": os.getloadavg()[0], "targets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as d, \
            daemon_logging(Path(d)):
        workdir = Path(d)
        if "vppsim" in targets:
            with vppsim(workdir) as sock:
                results["vppsim_rate"] = await bench_vppsim_rate(sock)
        memory_done: set[int] = set()
        for kind in targets:
            target = TARGETS[kind]
            if kind == "vpp" and (why := realvpp.unavailable()):
                results["targets"][kind] = {"skipped": why}
                continue
            out: dict[str, Any] = {}
            for n in peers:
                per_run: list[dict[str, Any]] = []
                for r in range(runs):
                    tag = f"{kind}{n}r{r}"
                    order = (("agent", "client", "papi") if r % 2 == 0
                             else ("papi", "client", "agent"))
                    run: dict[str, Any] = {}
                    failed = False
                    for side in order:
                        with target.start(workdir, f"{tag}{side[0]}") as (sock, pid):
                            try:
                                if side == "agent":
                                    run["agent"] = await bench_agent(sock, workdir, n, target,
                                                                     tag, pid)
                                elif side == "client":
                                    run["client"] = await bench_client(sock, n, target, pid)
                                else:
                                    run["papi"] = await bench_papi(sock, n, target, pid)
                            except (Exception, SystemExit) as e:  # recorded, the rest goes on
                                run[side] = {"failed": str(e) or repr(e)}
                                failed = True
                    if failed:
                        per_run.append(run)
                        print(f"{kind} N={n} run {r + 1}/{runs} failed: {run}", file=sys.stderr)
                        continue
                    run["ratio_to_papi"] = round(run["agent"]["wall_s"] / run["papi"]["wall_s"], 2)
                    run["client_ratio_to_papi"] = round(
                        run["client"]["wall_s"] / run["papi"]["wall_s"], 2)
                    per_run.append(run)
                    print(f"{kind} N={n} run {r + 1}/{runs}: agent {run['agent']['wall_s']} s, "
                          f"client {run['client']['wall_s']} s, papi {run['papi']['wall_s']} s, "
                          f"ratio {run['ratio_to_papi']}x",
                          file=sys.stderr)
                failures = [x for x in per_run if any("failed" in v for v in x.values()
                                                       if isinstance(v, dict))]
                per_run_ok = [x for x in per_run if x not in failures]
                out[str(n)] = {"failed_runs": failures}
                if not per_run_ok:
                    continue
                ok_runs, per_run = per_run, per_run_ok
                summary: dict[str, Any] = {
                    "agent_s": spread([x["agent"]["wall_s"] for x in per_run]),
                    "papi_s": spread([x["papi"]["wall_s"] for x in per_run]),
                    "client_s": spread([x["client"]["wall_s"] for x in per_run]),
                    "client_ratio_to_papi": spread([x["client_ratio_to_papi"] for x in per_run]),
                    "client_cpu_s": spread([x["client"]["client_cpu_s"] for x in per_run]),
                    "ratio_to_papi": spread([x["ratio_to_papi"] for x in per_run]),
                    "resync_in_sync_s": spread([x["agent"]["resync_in_sync_s"]
                                                for x in per_run]),
                    "rss_per_peer_kib": spread([x["agent"]["rss_per_peer_kib"]
                                                for x in per_run]),
                    "agent_cpu_s": spread([x["agent"]["client_cpu_s"] for x in per_run]),
                    "papi_cpu_s": spread([x["papi"]["client_cpu_s"] for x in per_run]),
                    "vpp_cpu_s_agent_run": spread([x["agent"]["vpp_cpu_s"] for x in per_run]),
                    "vpp_cpu_s_papi_run": spread([x["papi"]["vpp_cpu_s"] for x in per_run]),
                    "agent_socket_reads": per_run[0]["agent"]["socket_reads"],
                    "agent_socket_writes": per_run[0]["agent"]["socket_writes"],
                    "vpp_writes": per_run[0]["agent"]["vpp_writes"],
                    "papi_writes": per_run[0]["papi"]["vpp_writes"],
                }
                if n not in memory_done:
                    with target.start(workdir, f"{n}mem") as (sock, _pid):
                        try:
                            summary.update(await bench_memory(sock, workdir, n, target))
                        except (Exception, SystemExit) as e:
                            summary["memory_failed"] = str(e) or repr(e)
                    memory_done.add(n)
                out[str(n)].update({"summary": summary, "runs": ok_runs})
                results["targets"][kind] = out
                if out_path is not None:  # partial results survive a later failure
                    out_path.write_text(json.dumps(results, indent=2) + "\n")  # noqa: ASYNC240
            if len(peers) > 1 and all("summary" in out[str(p)] for p in peers):
                lo, hi = min(peers), max(peers)
                out["scaling"] = {
                    f"agent_{hi}_over_{lo}": round(out[str(hi)]["summary"]["agent_s"]["median"]
                                                   / out[str(lo)]["summary"]["agent_s"]["median"],
                                                   2)}
            results["targets"][kind] = out
    results["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["loadavg_end"] = os.getloadavg()[0]
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=["vppsim", "vpp"])
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector settings instead of the daemon's")
    args = parser.parse_args()
    if not args.default_gc:
        tune_gc()  # as `peering-agent run` does; papi's loop runs in this process too
    res = asyncio.run(main(args.peers, args.runs, args.targets, args.out))
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for kind, per_n in res["targets"].items():
        if "skipped" in per_n:
            print(f"{kind}: skipped: {per_n['skipped']}")
            continue
        for n, r in per_n.items():
            if n == "scaling":
                print(f"{kind}: {r}")
                continue
            if r["failed_runs"]:
                print(f"{kind} apply N={n}: {len(r['failed_runs'])} runs failed")
            if "summary" not in r:
                continue
            sm = r["summary"]
            a, p, q = sm["agent_s"], sm["papi_s"], sm["ratio_to_papi"]
            print(f"{kind} apply N={n} ({res['runs']} runs): agent {a['median']} s "
                  f"({a['min']}-{a['max']}), papi {p['median']} s ({p['min']}-{p['max']}), "
                  f"ratio {q['median']}x ({q['min']}-{q['max']}); client alone "
                  f"{sm['client_s']['median']} s ({sm['client_ratio_to_papi']['median']}x papi); "
                  f"{sm['vpp_writes']} writes "
                  f"(papi {sm['papi_writes']}); heap {sm.get('heap_per_peer_kib')} KiB/peer; "
                  f"in-sync resync {sm['resync_in_sync_s']['median']} s; CPU agent "
                  f"{sm['agent_cpu_s']['median']} s / papi {sm['papi_cpu_s']['median']} s, VPP "
                  f"{sm['vpp_cpu_s_agent_run']['median']} / {sm['vpp_cpu_s_papi_run']['median']} "
                  f"s; socket reads {sm['agent_socket_reads']}, writes "
                  f"{sm['agent_socket_writes']} for {sm['vpp_writes']} calls")
