"""Fault matrix (issue 15): faults at several points of a many-peer apply, against vppsim.

Each trial: a baseline peer is acknowledged, a job adds N peers, a fault hits at a
point of that apply, the fault clears, and the agent (its VPP reconnect listener and
its supervision loop, as the daemon runs them) must bring VPP back to the acknowledged
state with nothing leaked; then the controller's re-send must succeed. Prints a table:
trials, converged, seconds from the fault clearing to convergence, leaked objects.

    .venv/bin/python scripts/faults.py [--peers 200] [--trials 5] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.app import Agent as App  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.lab.controller_double import ControllerDouble  # noqa: E402
from agent.lab.offline import offline_name_resolver  # noqa: E402
from agent.lab.vppsim.server import VppSim  # noqa: E402
from agent.logsetup import configure_logging  # noqa: E402
from agent.peers.manager import AddPeer, JobError, PeerManager  # noqa: E402
from agent.peers.spec import PeerSpec  # noqa: E402
from agent.peers.store import PeerStore  # noqa: E402
from agent.vpp.client import VppClient  # noqa: E402
from tests.fixtures import example_request  # noqa: E402
from tests.spec_factory import numbered_spec  # noqa: E402
from tests.vpp_leaks import differences  # noqa: E402

WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
MACHINE = "3f1c0000-0000-4000-8000-00000000fa17"
STEPS_PER_PEER = 19  # VPP writes of one add (plan_add_ops of the test spec)
CONVERGE_LIMIT = 10.0


class Device:
    """The agent's VPP side as the daemon runs it: client, store, manager, supervision."""

    def __init__(self, socket: Path, state: Path) -> None:
        self.vpp = VppClient(str(socket), call_timeout=5.0, backoff_min=0.05, backoff_max=1.0)
        self.store = PeerStore(state)
        self.manager = PeerManager(self.vpp, self.store, {})
        self.manager.load()
        self.vpp.add_connect_listener(self.manager.on_vpp_connect)
        self._supervise: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.vpp.start()
        await self.vpp.wait_connected(10)
        self._supervise = asyncio.create_task(self.manager.supervise_forever())

    async def close(self) -> None:
        if self._supervise is not None:
            self._supervise.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervise
        await self.vpp.close()
        self.store.close()


@dataclass
class Row:
    trials: int = 0
    converged: int = 0
    seconds: list[float] = field(default_factory=list)
    leaks: int = 0
    resend_failed: int = 0


async def converge(dev: Device | AppDevice, sim: VppSim) -> tuple[float | None, int]:
    """Seconds until VPP shows the acknowledged state (None: not within the limit) and
    the number of differences left."""
    started = time.monotonic()
    while True:
        diff = differences(sim, dev.manager.desired, dev.manager.dynamic_routes)
        if dev.manager.in_sync and not diff:
            return time.monotonic() - started, 0
        if time.monotonic() - started > CONVERGE_LIMIT:
            print(f"  not converged: {diff}; in sync: {dev.manager.in_sync}; "
                  f"reconcile error: {dev.manager.reconcile_error}", file=sys.stderr)
            return None, len(diff)
        await asyncio.sleep(0.05)


async def until_writes(sim: VppSim, base: int, n: int) -> None:
    while sim.write_count - base < n:
        await asyncio.sleep(0.001)


Scenario = Callable[[VppSim, Path, list[PeerSpec], int, random.Random],
                    Awaitable[tuple["Device | AppDevice", float]]]


async def _apply_expecting_failure(dev: Device, specs: list[PeerSpec]) -> None:
    with contextlib.suppress(JobError):
        await dev.manager.apply([AddPeer(s) for s in specs])


async def vpp_killed(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                     rng: random.Random) -> tuple[Device, float]:
    dev = await _device(sim, state)
    base = sim.write_count
    job = asyncio.create_task(_apply_expecting_failure(dev, specs))
    await until_writes(sim, base, k)
    await sim.stop()  # VPP dies and loses everything
    await job
    await sim.start()
    return dev, time.monotonic()


async def api_dropped(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                      rng: random.Random) -> tuple[Device, float]:
    dev = await _device(sim, state)
    sim.inject_disconnect(after=k)  # VPP keeps its state, the client loses the socket
    await _apply_expecting_failure(dev, specs)
    return dev, time.monotonic()


async def write_failures(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                         rng: random.Random) -> tuple[Device, float]:
    dev = await _device(sim, state)
    total = len(specs) * STEPS_PER_PEER * 2  # the apply and its undo
    gaps = [g for g in (int(rng.expovariate(0.03)) for _ in range(total // 20)) if g >= 0]
    sim.inject_failure(after=k)
    for g in gaps:  # ~3 % of the writes after the first failure fail too (undo included)
        sim.inject_failure(after=g)
    await _apply_expecting_failure(dev, specs)
    sim._injections.clear()
    return dev, time.monotonic()


async def disk_full(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                    rng: random.Random) -> tuple[Device, float]:
    dev = await _device(sim, state)
    real = dev.store.commit

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    dev.store.commit = full  # type: ignore[method-assign]
    await _apply_expecting_failure(dev, specs)
    dev.store.commit = real  # type: ignore[method-assign]
    return dev, time.monotonic()


async def agent_killed(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                       rng: random.Random) -> tuple[Device, float]:
    first = min(s.tunnel_id for s in specs)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.apply_worker", str(sim.socket_path),
        str(state), str(first), str(len(specs)), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 20)  # ready
    base = sim.write_count
    await until_writes(sim, base, k)
    proc.kill()  # SIGKILL mid-apply
    await proc.wait()
    dev = await _device(sim, state, baseline=False)
    return dev, time.monotonic()


async def corrupt_store(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                        rng: random.Random) -> tuple[Device, float]:
    dev = await _device(sim, state)
    await dev.manager.apply([AddPeer(s) for s in specs])  # acknowledged
    acknowledged = list(dev.manager.desired.values())
    await dev.close()
    path = state / "peers.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: max(100, k % len(data))])  # truncated at some point
    dev = Device(sim.socket_path, state)
    await dev.start()
    cleared = time.monotonic()
    await dev.manager.sync(acknowledged)  # the controller's answer to "out of sync"
    return dev, cleared


class AppDevice:
    """The whole agent (link, jobs, manager, monitor) with a controller double."""

    def __init__(self, sim: VppSim, state: Path) -> None:
        state.mkdir(parents=True, exist_ok=True)
        token = state.parent / "device.token"
        token.write_text("faults-device-token")
        token.chmod(0o600)
        self.ctl = ControllerDouble(machine_id=MACHINE, device_token="faults-device-token",
                                    ping_interval=0.5, stats_interval=None, job_timeout=120.0)
        self.state, self.token, self.sim = state, token, sim
        self.agent: App | None = None
        self.resent_ok = False
        self._task: asyncio.Task[None] | None = None

    @property
    def manager(self) -> PeerManager:
        assert self.agent is not None
        return self.agent.manager

    async def start(self) -> None:
        await self.ctl.start()
        cfg = parse_config({
            "controller": {"url": self.ctl.url, "machine_id": MACHINE,
                           "token_file": str(self.token), "allow_insecure": True,
                           "backoff_min": 0.05, "backoff_max": 0.3, "ping_interval": 0.5,
                           "silence_timeout": 5.0},
            "vpp": {"api_socket": str(self.sim.socket_path), "call_timeout": 5.0},
            "state": {"dir": str(self.state)},
            "admin": {"socket": str(self.state.parent / "admin.sock")},
            "logging": {"level": "error"},
        }, {})
        self.agent = App(cfg, name_resolver=offline_name_resolver)
        self._task = asyncio.create_task(self.agent.run())
        await self.ctl.wait_connected(10)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.ctl.stop()


def _job(specs: list[PeerSpec]) -> dict[str, object]:
    """The controller's aggregated add-tunnel of `specs` (numbered_spec shapes)."""
    requests = []
    for spec in specs:
        p = example_request()["params"]
        p["tunnel-id"], p["dst"] = spec.tunnel_id, str(spec.dst)
        p["peer"]["addr"], p["peer"]["urls"] = str(spec.addr), []
        p["peer"]["ips"] = [str(ip) for ip in spec.monitor_ips]
        requests.append({"entity": "agent", "message": "add-tunnel", "params": p})
    return {"requests": requests}


async def websocket_drop(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                         rng: random.Random) -> tuple[AppDevice, float]:
    dev = AppDevice(sim, state)
    await dev.start()
    params = _job(specs)
    base = sim.write_count
    job = asyncio.create_task(dev.ctl.send_job("aggregated", params, jobid=77))
    await until_writes(sim, base, k)
    await dev.ctl.drop()  # mid-apply: the reply is lost
    with contextlib.suppress(ConnectionError, TimeoutError):
        await job
    await dev.ctl.wait_connected(20, count=2)
    cleared = time.monotonic()
    reply = await dev.ctl.send_job("aggregated", params, jobid=77)  # the controller re-sends
    dev.resent_ok = reply["msg"]["ok"] == 1
    if not dev.resent_ok:
        print(f"  re-sent job failed: {reply['msg']['message']}", file=sys.stderr)
    return dev, cleared


SCENARIOS: dict[str, Scenario] = {
    "vpp killed": vpp_killed,
    "VPP API dropped, VPP alive": api_dropped,
    "agent SIGKILL": agent_killed,
    "disk full at commit": disk_full,
    "corrupt store": corrupt_store,
    "3 % VPP write failures": write_failures,
    "websocket drop, job re-sent": websocket_drop,
}


async def _device(sim: VppSim, state: Path, baseline: bool = True) -> Device:
    dev = Device(sim.socket_path, state)
    await dev.start()
    if baseline and not dev.manager.desired:
        await dev.manager.apply([AddPeer(numbered_spec(1))])
    return dev


async def trial(name: str, peers: int, k: int, seed: int, row: Row) -> None:
    d = Path(tempfile.mkdtemp(prefix="pa-faults-", dir="/tmp"))
    sim = VppSim(d / "api.sock", interfaces=[WAN])
    await sim.start()
    specs = [numbered_spec(n) for n in range(10, 10 + peers)]
    dev: Device | AppDevice | None = None
    try:
        if name == "agent SIGKILL":  # the worker's own store starts with the baseline
            pre = await _device(sim, d / "state")
            await pre.close()
        dev, cleared = await SCENARIOS[name](sim, d / "state", specs, k, random.Random(seed))
        row.trials += 1
        seconds, leaked = await converge(dev, sim)
        if seconds is not None:
            row.converged += 1
            row.seconds.append(time.monotonic() - cleared)  # from the fault clearing
        row.leaks += leaked
        # the controller re-sends the job: it must now succeed
        if isinstance(dev, AppDevice):  # the controller already re-sent its job
            row.resend_failed += not dev.resent_ok
            return
        try:
            await dev.manager.apply([AddPeer(s) for s in specs])
            diff = differences(sim, dev.manager.desired, dev.manager.dynamic_routes)
            if diff:
                print(f"  after the re-send: {diff}", file=sys.stderr)
                row.resend_failed += 1
        except JobError as e:
            print(f"  re-send failed: {e}", file=sys.stderr)
            row.resend_failed += 1
    finally:
        if dev is not None:
            await dev.close()
        await sim.stop()
        shutil.rmtree(d, ignore_errors=True)


async def main(args: argparse.Namespace) -> int:
    rows: dict[str, Row] = {}
    total = args.peers * STEPS_PER_PEER
    points = [max(1, int(total * f)) for f in (0.02, 0.5, 0.97, 0.25, 0.75)]
    for name in SCENARIOS:
        if args.only and args.only not in name:
            continue
        row = rows.setdefault(name, Row())
        for t in range(args.trials):
            await trial(name, args.peers, points[t % len(points)] + t, t, row)
    width = max(len(n) for n in rows)
    print(f"{'fault':<{width}}  trials  converged  max s  mean s  leaks  re-send failed")
    bad = False
    for name, r in rows.items():
        mx = max(r.seconds, default=0.0)
        mean = statistics.mean(r.seconds) if r.seconds else 0.0
        print(f"{name:<{width}}  {r.trials:>6}  {r.converged:>9}  {mx:>5.2f}  {mean:>6.2f}  "
              f"{r.leaks:>5}  {r.resend_failed:>14}")
        bad |= r.converged != r.trials or r.leaks > 0 or r.resend_failed > 0
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, default=200)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--only", help="run the scenarios whose name contains this")
    configure_logging("critical")
    sys.exit(asyncio.run(main(p.parse_args())))
