"""Fault matrix (issue 15): faults at several points of a many-peer apply, against vppsim.

Each trial: a baseline peer is acknowledged, a job adds N peers, a fault hits at a
point of that apply, the fault clears, and the agent (its VPP reconnect listener and
its supervision loop, as the daemon runs them) must bring VPP back to the acknowledged
state with nothing leaked; then the job sent again must succeed. Prints a table:
trials, converged, seconds from the fault clearing to convergence, leaked objects.
A peer restart converges when, besides that, every tunnel has exactly one IKE SA, a
new established one, and the agent reports every tunnel up.

The websocket rows run the whole agent under the controller double, which (like
flexiManage) never re-sends a job: the job keeps running through the drop and its
reply reaches the controller on the next connection (or, once the controller's job
timer has expired, get-device-info reports it complete). They converge when VPP holds
the acknowledged state, the controller has the job complete and a stats poll finds the
device's configuration hash equal to the controller's.

Every trial has a deadline (TRIAL_DEADLINE): one that does not finish is reported as a
failure with what it was waiting for, and the matrix goes on.

    .venv/bin/python scripts/faults.py [--peers 200] [--trials 5] [--only NAME] [--short]
                                       [--deadline S]
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
import traceback
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.app import Agent as App  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.lab.controller_double import ControllerDouble  # noqa: E402
from agent.lab.offline import offline_name_resolver  # noqa: E402
from agent.lab.vppsim.server import VppSim  # noqa: E402
from agent.lab.vppsim.state import AUTHENTICATED  # noqa: E402
from agent.logsetup import configure_logging  # noqa: E402
from agent.peers.changes import AddPeer  # noqa: E402
from agent.peers.manager import JobError, PeerManager  # noqa: E402
from agent.peers.spec import PeerSpec  # noqa: E402
from agent.peers.store import PeerStore  # noqa: E402
from agent.vpp.client import VppClient  # noqa: E402
from agent.vpp.kinds.profile import profile_name  # noqa: E402
from agent.vpp.ops import VppFacts  # noqa: E402
from agent.vpp.plan import plan_add_ops  # noqa: E402
from tests.fixtures import example_request  # noqa: E402
from tests.spec_factory import numbered_spec  # noqa: E402
from tests.vpp_leaks import differences  # noqa: E402

WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")
MACHINE = "3f1c0000-0000-4000-8000-00000000fa17"
# VPP writes of one add: the plan's own length for the test spec (vppsim's facts: its
# WAN is interface 1, it has linux-cp and the MSS clamp)
STEPS_PER_PEER = len(plan_add_ops(numbered_spec(1), VppFacts(1)))
CONVERGE_LIMIT = 10.0
TRIAL_DEADLINE = 120.0  # seconds for one whole trial (set-up, fault, convergence, clean-up)


# the devices a trial opened, closed by trial() however the trial ends (deadline included)
OPENED: ContextVar[list[Device | AppDevice]] = ContextVar("OPENED")


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
        self._closed = False
        OPENED.get().append(self)

    async def start(self) -> None:
        await self.vpp.start()
        await self.vpp.wait_connected(10)
        self._supervise = asyncio.create_task(self.manager.supervise_forever())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
    aborted: int = 0  # trials that missed their deadline or raised (not converged)
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
        if isinstance(dev, AppDevice) and dev.manager.in_sync and not diff:
            extra = await dev.acknowledged()
        if dev.manager.in_sync and not diff and extra is None:
            return time.monotonic() - started, 0
        if time.monotonic() - started > CONVERGE_LIMIT:
            print(f"  not converged: {diff}; in sync: {dev.manager.in_sync}; "
                  f"reconcile error: {dev.manager.reconcile_error}; {extra or ''}",
                  file=sys.stderr)
            return None, len(diff)
        await asyncio.sleep(0.05)


async def until_writes(sim: VppSim, base: int, n: int,
                       job: asyncio.Future[Any] | None = None) -> None:
    """Wait for the n-th VPP write since `base`; fail loudly if `job` ends before it
    (a job refused before any write would otherwise leave the fault waiting forever)."""
    while sim.write_count - base < n:
        if job is not None and job.done():
            raise RuntimeError(
                f"the job ended after {sim.write_count - base} of the {n} VPP writes the "
                f"fault waits for: {_outcome(job)}")
        await asyncio.sleep(0.001)


def _outcome(job: asyncio.Future[Any]) -> str:
    if job.cancelled():
        return "cancelled"
    if job.exception() is not None:
        return f"{type(job.exception()).__name__}: {job.exception()}"
    return f"{job.result()!r:.300}"


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
    await until_writes(sim, base, k, job)
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
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 20)  # ready
        base = sim.write_count
        await until_writes(sim, base, k, asyncio.ensure_future(proc.wait()))
    finally:
        if proc.returncode is None:
            proc.kill()  # SIGKILL mid-apply (or the trial's deadline passed)
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
                       rng: random.Random, vpp_reinitiates: bool = True,
                       sa_init_timeout: float | None = None) -> tuple[Device, float]:
    """Every remote gateway restarts (during or after the apply): it forgets its SAs, VPP's
    liveness check drops them and VPP re-initiates by itself, as VPP 26.06 does after DPD
    (without `vpp_reinitiates` only the agent's re-initiation brings them back), while the
    agent's SA supervision (the daemon's default poll and backoff) sees the loss too.
    Converged: every tunnel has exactly one IKE SA, a new one, established with a child
    SA, and the agent reports every tunnel up from a poll made after that.
    `sa_init_timeout` (peers.sa_init_timeout) is how long the agent leaves a lost SA to
    VPP's own re-initiation, or waits for an initiation it never saw answered, before it
    restarts the negotiation itself (daemon default 30 s)."""
    dev = await _device(sim, state)
    mgr = dev.manager
    if sa_init_timeout is not None:
        mgr.sa_init_timeout = sa_init_timeout
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
        await until_writes(sim, base, k, job)  # mid-apply: the peers added so far restart
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
        since = vpp_ok_since[0]
        if since is None:
            since = vpp_ok_since[0] = dev.vpp_up_at = time.monotonic()
        if last_pass[0] < since:
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
        self.jobid: int | None = None  # the job whose acknowledgement converge() waits for
        self.reply_ok = False  # the controller got the job's ok:1 (reply or get-device-info)
        self._task: asyncio.Task[None] | None = None
        OPENED.get().append(self)

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
                           "retry_slow_min": 0.2, "retry_slow_max": 0.5,
                           "silence_timeout": 5.0},
            "vpp": {"api_socket": str(self.sim.socket_path), "call_timeout": 5.0},
            "state": {"dir": str(self.state)},
            "admin": {"socket": str(self.state.parent / "admin.sock")},
            "logging": {"level": "error"},
            "routing": {"vtysh": ""},  # VPP faults only: routing recorded, no FRR needed
        }, {})
        self.agent = App(cfg, name_resolver=offline_name_resolver)
        self._task = asyncio.create_task(self.agent.run())
        await self.ctl.wait_ready(10)

    async def acknowledged(self) -> str | None:
        """None when the controller holds the job as complete and the device's hash as
        its own (a stats poll, as flexiManage's periodic check), else what is missing."""
        job = self.ctl.jobs.get(self.jobid) if self.jobid is not None else None
        if job is None or job.state != "complete":
            return f"the controller has job {self.jobid} {job.state if job else 'unknown'}"
        self.reply_ok = True
        if not self.ctl.ready:
            return "the device is not ready at the controller"
        try:
            await self.ctl.poll_stats(2.0)
        except (TimeoutError, ConnectionError) as e:
            return f"stats poll failed ({type(e).__name__})"
        if self.ctl.sync_state != "synced":
            return f"the controller's sync state is {self.ctl.sync_state}"
        return None

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.ctl.stop(abort=True)


def _job(specs: list[PeerSpec]) -> dict[str, object]:
    """The controller's aggregated add-tunnel of `specs` (numbered_spec shapes)."""
    requests = []
    for spec in specs:
        p = example_request()["params"]
        p["tunnel-id"], p["dst"] = spec.tunnel_id, str(spec.dst)
        p["peer"]["addr"], p["peer"]["urls"] = str(spec.addr), []
        p["peer"]["ips"] = [str(ip) for ip in spec.monitor_ips]
        # one local/remote ID pair per tunnel, or the job is refused before any write
        p["ikev2"]["remote-device-id"] = spec.remote_id.value
        requests.append({"entity": "agent", "message": "add-tunnel", "params": p})
    return {"requests": requests}


async def websocket_drop(sim: VppSim, state: Path, specs: list[PeerSpec], k: int,
                         rng: random.Random, past_timer: bool = False
                         ) -> tuple[AppDevice, float]:
    """The controller connection drops mid-apply. flexiManage never re-sends a job: the
    job goes on, and its reply reaches the controller on the next connection while the
    controller's job timer runs. With `past_timer` the controller refuses the device
    until that timer has expired (the job fails there with Send Timeout, which the
    double stands for by expiring it at once); on the reconnect, get-device-info lists
    the job and the device's journal reports it complete."""
    dev = AppDevice(sim, state)
    await dev.start()
    dev.jobid = 77
    base = sim.write_count
    job = asyncio.create_task(dev.ctl.send_job("aggregated", _job(specs), jobid=dev.jobid))
    await until_writes(sim, base, k, job)
    if past_timer:
        dev.ctl.refuse_status = 503  # the controller is unreachable for the device
    await dev.ctl.drop()  # mid-apply
    if past_timer:
        dev.ctl.expire_active_job()  # ... for longer than the job's 180 s timer,
        with contextlib.suppress(TimeoutError):
            await job
        journal = dev.agent.journal if dev.agent is not None else None
        assert journal is not None
        while await asyncio.to_thread(journal.lookup, str(dev.jobid)) is None:
            await asyncio.sleep(0.05)  # ... so the device finished the job meanwhile
        dev.ctl.refuse_status = None
        cleared = time.monotonic()
        await dev.ctl.wait_ready(20, count=2)
    else:
        await dev.ctl.wait_connected(20, count=2)
        cleared = time.monotonic()
        reply = await job  # the reply of the job, on the new connection
        if reply["msg"]["ok"] != 1:
            print(f"  job failed: {reply['msg']['message']}", file=sys.stderr)
    return dev, cleared


SCENARIOS: dict[str, Scenario] = {
    "vpp killed": vpp_killed,
    "VPP API dropped, VPP alive": api_dropped,
    "agent SIGKILL": agent_killed,
    "disk full at commit": disk_full,
    "corrupt store": corrupt_store,
    "3 % VPP write failures": write_failures,
    "websocket drop mid-job, reply on the next connection": websocket_drop,
    "websocket down past the job timer, get-device-info": functools.partial(
        websocket_drop, past_timer=True),
    "peer restart, VPP re-initiates": peer_restart,
    # without VPP's re-initiation the agent restarts after peers.sa_init_timeout: 30 s by
    # default (VPP's own comes first in 26.06); this row runs it at 5 s
    "peer restart, only the agent re-initiates (sa_init_timeout 5 s)": functools.partial(
        peer_restart, vpp_reinitiates=False, sa_init_timeout=5.0),
}
# ~8 s a trial: the full form only
SHORT_SKIPS = {"peer restart, only the agent re-initiates (sa_init_timeout 5 s)"}


async def _device(sim: VppSim, state: Path, baseline: bool = True) -> Device:
    dev = Device(sim.socket_path, state)
    await dev.start()
    if baseline and not dev.manager.desired:
        await dev.manager.apply([AddPeer(numbered_spec(1))])
    return dev


async def trial(name: str, peers: int, k: int, seed: int, row: Row,
                deadline: float = TRIAL_DEADLINE) -> None:
    """One trial within TRIAL_DEADLINE; a trial that misses it or raises is a loud failure
    (its stack says what it was waiting for) and everything it opened is closed."""
    row.trials += 1
    d = Path(tempfile.mkdtemp(prefix="pa-faults-", dir="/tmp"))
    sim = VppSim(d / "api.sock", interfaces=[WAN])
    opened: list[Device | AppDevice] = []
    token = OPENED.set(opened)
    scope = asyncio.timeout(deadline)
    try:
        await sim.start()
        async with scope:
            await _trial(name, sim, d, peers, k, seed, row)
    except TimeoutError as e:
        row.aborted += 1
        if scope.expired():
            where = "".join(traceback.format_exception(e.__context__ or e)[-6:])
            print(f"  TRIAL DEADLINE: {name!r} (fault at write {k}) did not finish within "
                  f"{deadline:g} s; it was at:\n{where}", file=sys.stderr)
        else:
            where = "".join(traceback.format_exception(e)[-6:])
            print(f"  TRIAL FAILED: {name!r} (fault at write {k}): a wait timed out:\n{where}",
                  file=sys.stderr)
    except Exception as e:
        row.aborted += 1
        print(f"  TRIAL FAILED: {name!r} (fault at write {k}): {type(e).__name__}: {e}",
              file=sys.stderr)
    finally:
        OPENED.reset(token)
        for dev in reversed(opened):
            try:
                async with asyncio.timeout(15):
                    await dev.close()
            except Exception as e:
                print(f"  clean-up of {name!r} failed: {type(e).__name__}: {e}",
                      file=sys.stderr)
        await sim.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _trial(name: str, sim: VppSim, d: Path, peers: int, k: int, seed: int,
                 row: Row) -> None:
    specs = [numbered_spec(n) for n in range(10, 10 + peers)]
    if name == "agent SIGKILL":  # the worker's own store starts with the baseline
        pre = await _device(sim, d / "state")
        await pre.close()
    dev, cleared = await SCENARIOS[name](sim, d / "state", specs, k, random.Random(seed))
    seconds, leaked = await converge(dev, sim)
    if seconds is not None:
        row.converged += 1
        row.seconds.append(time.monotonic() - cleared)  # from the fault clearing
        if isinstance(dev, Device) and dev.vpp_up_at is not None:
            row.vpp_seconds.append(dev.vpp_up_at - cleared)
            row.reinitiations += sum(st.reinitiations for st in dev.manager.states.values())
            row.restarted += dev.restarted
    row.leaks += leaked
    if isinstance(dev, AppDevice):  # flexiManage never re-sends: its ack is the check
        row.resend_failed += not dev.reply_ok
        return
    try:  # the job sent again (a new job of the same content) must now succeed
        await dev.manager.apply([AddPeer(s) for s in specs])
        diff = differences(sim, dev.manager.desired, dev.manager.dynamic_routes)
        if diff:
            print(f"  after the re-send: {diff}", file=sys.stderr)
            row.resend_failed += 1
    except JobError as e:
        print(f"  re-send failed: {e}", file=sys.stderr)
        row.resend_failed += 1


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
            await trial(name, args.peers, k, t, row, args.deadline)
    width = max(len(n) for n in rows)
    print(f"{'fault':<{width}}  trials  converged  max s  mean s  leaks  re-send failed")
    bad = False
    for name, r in rows.items():
        mx = max(r.seconds, default=0.0)
        mean = statistics.mean(r.seconds) if r.seconds else 0.0
        print(f"{name:<{width}}  {r.trials:>6}  {r.converged:>9}  {mx:>5.2f}  {mean:>6.2f}  "
              f"{r.leaks:>5}  {r.resend_failed:>14}")
        bad |= r.converged != r.trials or r.leaks > 0 or r.resend_failed > 0
        if r.aborted:
            print(f"  {name}: {r.aborted} trial(s) missed the deadline or failed (see above)")
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
    p.add_argument("--deadline", type=float, default=TRIAL_DEADLINE,
                   help="seconds one trial may take before it fails (default %(default)s)")
    configure_logging("critical")
    sys.exit(asyncio.run(main(p.parse_args())))
