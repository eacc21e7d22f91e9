"""Fault matrix (issue 15): faults at several points of a many-peer apply, against vppsim.

Each trial: a baseline peer is acknowledged, a job adds N peers, a fault hits at a
point of that apply, the fault clears, and the agent (its VPP reconnect listener and
its supervision loop, as the daemon runs them) must bring VPP back to the acknowledged
state with nothing leaked; then the controller's re-send must succeed. Prints a table:
trials, converged, seconds from the fault clearing to convergence, leaked objects.
A peer restart converges when, besides that, every tunnel has exactly one IKE SA, a
new established one, and the agent reports every tunnel up.

    .venv/bin/python scripts/faults.py [--peers 200] [--trials 5] [--only NAME] [--short]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
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
from agent.lab.vppsim.state import AUTHENTICATED  # noqa: E402
from agent.logsetup import configure_logging  # noqa: E402
from agent.peers.manager import AddPeer, JobError, PeerManager  # noqa: E402
from agent.peers.spec import PeerSpec  # noqa: E402
from agent.peers.store import PeerStore  # noqa: E402
from agent.vpp.client import VppClient  # noqa: E402
from agent.vpp.kinds.profile import profile_name  # noqa: E402
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
        # a scenario's own convergence condition: None when met, else what is missing
        self.extra_check: Callable[[], str | None] | None = None
        self.vpp_up_at: float | None = None  # peer restart: VPP's SAs all back (monotonic)
        self.restarted = 0  # peer restart: tunnels whose SAs were lost

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
    vpp_seconds: list[float] = field(default_factory=list)  # peer restart: VPP's side alone
    reinitiations: int = 0  # peer restart: initiations the agent added to VPP's own
    restarted: int = 0  # peer restart: tunnels whose SAs were lost, all trials


async def converge(dev: Device | AppDevice, sim: VppSim) -> tuple[float | None, int]:
    """Seconds until VPP shows the acknowledged state (None: not within the limit) and
    the number of differences left."""
    started = time.monotonic()
    while True:
        diff = differences(sim, dev.manager.desired, dev.manager.dynamic_routes)
        extra = dev.extra_check() if isinstance(dev, Device) and dev.extra_check else None
        if dev.manager.in_sync and not diff and extra is None:
            return time.monotonic() - started, 0
        if time.monotonic() - started > CONVERGE_LIMIT:
            print(f"  not converged: {diff}; in sync: {dev.manager.in_sync}; "
                  f"reconcile error: {dev.manager.reconcile_error}; {extra or ''}",
                  file=sys.stderr)
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


async def peer_restart(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                       rng: random.Random, vpp_reinitiates: bool = True
                       ) -> tuple[Device, float]:
    """Every remote gateway restarts (during or after the apply): it forgets its SAs, VPP's
    liveness check drops them and VPP re-initiates by itself, as VPP 26.06 does after DPD
    (without `vpp_reinitiates` only the agent's re-initiation brings them back), while the
    agent's SA supervision (the daemon's default poll and backoff) sees the loss too.
    Converged: every tunnel has exactly one IKE SA, a new one, established with a child
    SA, and the agent reports every tunnel up from a poll made after that."""
    dev = await _device(sim, state)
    mgr = dev.manager
    last_pass = [0.0]  # when the last completed SA poll started
    real_pass = mgr.supervise_once

    async def counted() -> None:
        started = time.monotonic()
        await real_pass()
        last_pass[0] = started

    mgr.supervise_once = counted  # type: ignore[method-assign]
    base = sim.write_count
    job = asyncio.create_task(mgr.apply([AddPeer(s) for s in specs]))  # must succeed
    if k < len(specs) * STEPS_PER_PEER:
        await until_writes(sim, base, k)  # mid-apply: the peers added so far restart
    else:
        await job  # after the apply: every peer restarts
    old = set(sim.state.sas)
    # every peer with an SA so far (mid-apply the job's peers are not in `desired` yet)
    for name in sorted({sa.profile for sa in sim.state.sas.values()}):
        if sim.ike.peer_restart(name):  # the peer forgot it; VPP's DPD gave up on it
            dev.restarted += 1
            if vpp_reinitiates:
                profile = sim.state.profiles[name]
                sim.ike.initiate(profile, sim.state.new_sa(profile))
    cleared = time.monotonic()
    await job
    vpp_ok_since: list[float | None] = [None]

    def ike_converged() -> str | None:
        by_profile: dict[str, list[int]] = {}
        for sa in sim.state.sas.values():  # hidden initiations included
            by_profile.setdefault(sa.profile, []).append(sa.index)
        for tid in mgr.desired:
            mine = by_profile.get(profile_name(tid), [])
            if len(mine) != 1:
                vpp_ok_since[0] = None
                return f"tunnel {tid}: {len(mine)} IKE SAs in VPP"
            sa = sim.state.sas[mine[0]]
            if sa.index in old or sa.hidden or sa.state != AUTHENTICATED or not sa.children:
                vpp_ok_since[0] = None
                return (f"tunnel {tid}: VPP's IKE SA not re-established (old: {sa.index in old}, "
                        f"hidden: {sa.hidden}, state {sa.state}, "
                        f"{len(sa.children)} child SAs)")
        if vpp_ok_since[0] is None:
            vpp_ok_since[0] = time.monotonic()
            dev.vpp_up_at = vpp_ok_since[0]
        if last_pass[0] < vpp_ok_since[0]:
            return "the agent has not polled VPP's SAs since"
        down = [t for t in mgr.desired if mgr.states.get(t) is None
                or mgr.states[t].status != "up"]
        return f"the agent reports {len(down)} tunnels not up" if down else None

    dev.extra_check = ike_converged
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
            "routing": {"vtysh": ""},  # VPP faults only: routing recorded, no FRR needed
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
    "peer restart, VPP re-initiates": peer_restart,
    "peer restart, only the agent re-initiates": functools.partial(
        peer_restart, vpp_reinitiates=False),
}
SHORT_SKIPS = {"peer restart, only the agent re-initiates"}  # ~4 s a trial: the full form


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
            if isinstance(dev, Device) and dev.vpp_up_at is not None:
                row.vpp_seconds.append(dev.vpp_up_at - cleared)
                row.reinitiations += sum(st.reinitiations for st in dev.manager.states.values())
                row.restarted += dev.restarted
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
        if (args.only and args.only not in name) or (args.short and name in SHORT_SKIPS):
            continue
        row = rows.setdefault(name, Row())
        for t in range(args.trials):
            k = points[t % len(points)] + t
            if name.startswith("peer restart") and t % 2:
                k = total  # every other trial: the peers restart after the apply
            await trial(name, args.peers, k, t, row)
    width = max(len(n) for n in rows)
    print(f"{'fault':<{width}}  trials  converged  max s  mean s  leaks  re-send failed")
    bad = False
    for name, r in rows.items():
        mx = max(r.seconds, default=0.0)
        mean = statistics.mean(r.seconds) if r.seconds else 0.0
        print(f"{name:<{width}}  {r.trials:>6}  {r.converged:>9}  {mx:>5.2f}  {mean:>6.2f}  "
              f"{r.leaks:>5}  {r.resend_failed:>14}")
        bad |= r.converged != r.trials or r.leaks > 0 or r.resend_failed > 0
    for name, r in rows.items():
        if r.vpp_seconds:
            print(f"{name}: {r.restarted} tunnels lost their SAs; VPP's SAs were all back "
                  f"within {max(r.vpp_seconds):.2f} s (mean {statistics.mean(r.vpp_seconds):.2f})"
                  f"; {r.reinitiations} re-initiations by the agent")
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, default=200)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--only", help="run the scenarios whose name contains this")
    p.add_argument("--short", action="store_true", help="CI: skip the slowest scenarios")
    configure_logging("critical")
    sys.exit(asyncio.run(main(p.parse_args())))
