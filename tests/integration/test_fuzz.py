"""Structure-aware fuzzing of controller jobs through the real path: envelope parsing,
the dispatcher (validation), the manager and the executor, against vppsim with
injected faults (VPP write failures, the API connection reset while VPP keeps its
state). Invariants after every job:

* the daemon answers it (no exception, no hang), ok:1 or ok:0 with a readable
  message that holds no PSK of the job and is not the internal-error path;
* a refused job changes nothing (all-or-nothing), the store holds what is acknowledged;
* VPP equals the acknowledged state, at once, or after reconcile when a fault was
  injected: no leaked or missing tunnel, profile, address or route.

`FUZZ_EXAMPLES` scales it (scripts/fuzz.sh); the suite runs a fast profile.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.jobs.cfgstore import ConfigStore
from agent.jobs.dispatch import JobDispatcher
from agent.jobs.validation import ValidationPolicy
from agent.lab.vppsim.server import VppSim
from agent.link.envelope import Rejected, parse_frame
from tests.conftest import WAN
from tests.fixtures import example_request
from tests.integration.test_peers_vpp import Agent
from tests.vpp_leaks import differences

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "45"))
SUMMARY = os.environ.get("FUZZ_SUMMARY")  # a file the long campaign writes its totals to

PSKS = ("Top-Secret-Key-4711-alpha", "Top-Secret-Key-4711-bravo", "Top-Secret-Key-4711")
BAD_PSKS = ("short", "has a space in it!", "abc\ud800defghijkl", "p\u00e4sswort-geheim-1")
TIDS = (1, 2, 3, 4, 5, 6, 7, 8)  # 1-5 are seeded, 6-8 start absent
DSTS = ("203.0.113.1", "203.0.113.2", "203.0.113.3", "198.51.100.77")
ADDRS = ("10.100.0.16/31", "10.100.0.18/31", "10.100.0.20/31")
GOOD_IPS = ("8.8.8.8", "8.8.8.8", "9.9.9.9", "198.51.100.9", "10.100.0.17")
BAD_IPS = ("203.0.113.1", "192.168.1.1", "192.168.1.10", "127.0.0.1", "0.0.0.0", "not-an-ip")
IP = st.one_of(*[st.sampled_from(GOOD_IPS)] * 6, st.sampled_from(BAD_IPS))
IPS = st.lists(IP, min_size=1, max_size=2, unique=True) | st.just([])
REMOTE_TS = (None, None, None, None, ("172.16.0.0", "172.16.0.255"),
             ("172.16.0.0", "172.16.255.255"),
             ("0.0.0.0", "255.255.255.254"), ("203.0.113.0", "203.0.113.255"),
             ("10.9.0.0", "10.9.0.128"))
GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


NEW_TID = st.sampled_from(TIDS[5:] * 3 + TIDS[:5])  # mostly one that is not there yet


@st.composite
def add_params(draw: st.DrawFn, tid_of: int | None = None) -> dict[str, Any]:
    """An add-tunnel; `tid_of`: take over that tunnel's endpoints and /31 (a move)."""
    p: dict[str, Any] = copy.deepcopy(example_request()["params"])
    tid = p["tunnel-id"] = draw(NEW_TID)
    if tid_of is not None:
        p["dst"], p["peer"]["addr"] = f"203.0.113.{tid_of}", f"10.100.0.{16 + 2 * tid_of}/31"
    elif draw(st.integers(0, 4)):  # mostly the tunnel's own endpoint and /31, else a clash
        p["dst"], p["peer"]["addr"] = f"203.0.113.{tid}", f"10.100.0.{16 + 2 * tid}/31"
    else:
        p["dst"] = draw(st.sampled_from(DSTS))
        p["peer"]["addr"] = draw(st.sampled_from(ADDRS))
    p["peer"]["ips"] = draw(IPS)
    p["peer"]["urls"] = draw(st.sampled_from(([], ["monitoring.example.com"])))
    psk = draw(st.sampled_from(PSKS))
    p["ikev2"]["psk"] = psk
    ts = draw(st.sampled_from(REMOTE_TS))
    if ts is not None:
        p["ikev2"]["remote-ts"]["start-addr"], p["ikev2"]["remote-ts"]["end-addr"] = ts
    p["ikev2"]["ike"]["dh-group"] = draw(st.sampled_from(
        ("modp-2048", "ecp-256") * 5 + ("modp-2048-224", "modp-1024")))
    mutation = draw(st.sampled_from(("none",) * 16 + ("psk-elsewhere", "garbage", "delete",
                                                      "bad-psk")))
    if mutation == "psk-elsewhere":
        where = draw(st.sampled_from(("dev_id", "srcPort", "tunnel-id", "remote-device-id")))
        target = p["ikev2"] if where == "remote-device-id" else p
        target[where] = psk
    elif mutation in ("garbage", "delete"):
        path = draw(st.sampled_from((("dev_id",), ("src",), ("peer", "mtu"), ("peer", "addr"),
                                     ("ikev2", "role"), ("ikev2", "lifetime"),
                                     ("ikev2", "ike", "key-size"), ("ikev2", "esp"),
                                     ("ikev2", "local-ts", "end-port"))))
        holder = p
        for key in path[:-1]:
            holder = holder[key]
        if mutation == "delete":
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = draw(GARBAGE)
    elif mutation == "bad-psk":
        p["ikev2"]["psk"] = draw(st.sampled_from(BAD_PSKS))
    return p


def sub(message: str, params: Any) -> dict[str, Any]:
    return {"entity": "agent", "message": message, "params": params}


@st.composite
def request(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(("add", "add", "remove", "modify", "aggregated", "move",
                                 "sync", "garbage")))
    if kind == "add":
        return "add-tunnel", draw(add_params())
    if kind == "move":  # the controller re-creating a peer under a new tunnel id
        old = draw(st.sampled_from(TIDS))
        return "aggregated", {"requests": [sub("remove-tunnel", {"tunnel-id": old}),
                                           sub("add-tunnel", draw(add_params(old)))]}
    if kind == "remove":
        return "remove-tunnel", {"tunnel-id": draw(st.sampled_from((*TIDS, 99)))}
    if kind == "modify":
        return "modify-tunnel", {"tunnel-id": draw(st.sampled_from(TIDS)), "peer": {
            "ips": draw(IPS), "urls": []}}
    if kind == "aggregated":
        parts = draw(st.lists(st.one_of(
            add_params().map(lambda p: sub("add-tunnel", p)),
            st.sampled_from(TIDS).map(lambda t: sub("remove-tunnel", {"tunnel-id": t}))),
            min_size=1, max_size=4))
        return "aggregated", {"requests": parts}
    if kind == "sync":
        adds = draw(st.lists(add_params(), max_size=3))
        return "sync-device", {"requests": [sub("add-tunnel", p) for p in adds]}
    return draw(st.sampled_from(("add-tunnel", "aggregated", "sync-device", "reboot"))), \
        draw(GARBAGE)


FAULT = st.one_of(st.just(None), st.just(None),
                  st.tuples(st.sampled_from(("fail", "fail", "failures", "disconnect")),
                            st.integers(0, 25)))


@dataclass
class Totals:
    jobs: int = 0
    ok: int = 0
    faults: int = 0
    by_message: Counter[str] = field(default_factory=Counter)
    converge_max_s: float = 0.0
    scenarios: int = 0
    violations: int = 0  # scenarios that broke an invariant (crash, hang, leak, secret ...)


TOTALS = Totals()


def _psks_in(params: Any) -> set[str]:
    text = json.dumps(params, default=str)
    return {p for p in PSKS + BAD_PSKS if p in text or json.dumps(p)[1:-1] in text}


async def _converge(agent: Agent, sim: VppSim, timeout: float = 10.0) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if agent.vpp.connected and not agent.manager.in_sync:
            await agent.manager.reconcile()
        diff = differences(sim, agent.manager.desired)
        if agent.manager.in_sync and not diff:
            return time.monotonic() - started
        assert time.monotonic() < deadline, ("did not converge", diff,
                                             agent.manager.reconcile_error)
        await asyncio.sleep(0.02)


def _seed() -> tuple[str, Any]:
    """Every scenario starts from peers that share things: 1-3 monitor 8.8.8.8, 4 and 5
    are a policy-based pair to one remote subnet."""
    requests = []
    for tid in TIDS[:5]:
        p: dict[str, Any] = copy.deepcopy(example_request()["params"])
        p["tunnel-id"], p["dst"] = tid, f"203.0.113.{tid}"
        p["peer"]["addr"], p["peer"]["urls"] = f"10.100.0.{16 + 2 * tid}/31", []
        p["peer"]["ips"] = ["8.8.8.8"] if tid <= 3 else ["198.51.100.9"]
        p["ikev2"]["psk"] = PSKS[tid % len(PSKS)]
        if tid > 3:
            p["ikev2"]["remote-ts"]["start-addr"] = "172.16.0.0"
            p["ikev2"]["remote-ts"]["end-addr"] = "172.16.0.255"
        requests.append(sub("add-tunnel", p))
    return "aggregated", {"requests": requests}


async def _scenario(jobs: list[tuple[tuple[str, Any], Any]]) -> None:
    jobs = [(_seed(), None), *jobs]
    TOTALS.scenarios += 1
    d = Path(tempfile.mkdtemp(prefix="pa-fz-", dir="/tmp"))
    sim = VppSim(d / "api.sock", interfaces=[WAN])
    await sim.start()
    agent = Agent(sim.socket_path, d / "state")
    try:
        await agent.start()
        dispatcher = JobDispatcher(agent.manager, ValidationPolicy(), stats=_no_stats,
                                   config=ConfigStore(d / "state"))
        for n, ((message, params), fault) in enumerate(jobs, 1):
            frame = json.dumps({"seq": str(n), "jobid": n,
                                "msg": {"entity": "agent", "message": message,
                                        "params": params}})
            parsed = parse_frame(frame)
            assert not isinstance(parsed, Rejected), parsed
            if fault is not None:
                kind, after = fault
                if kind == "fail":
                    sim.inject_failure(after=after)
                elif kind == "failures":  # the undo fails too: an incomplete rollback
                    for gap in (after, 1, 3, 0, 5):
                        sim.inject_failure(after=gap)
                else:
                    sim.inject_disconnect(after=after)
            before = dict(agent.manager.desired)
            async with asyncio.timeout(30):
                outcome = await dispatcher.run_job(parsed.message, parsed.params,
                                                   parsed.jobid, parsed.msg)
            TOTALS.jobs += 1
            TOTALS.ok += outcome.ok
            TOTALS.by_message[f"{message}:{'ok' if outcome.ok else 'refused'}"] += 1
            text = json.dumps(outcome.message)
            assert isinstance(outcome.message, str) and outcome.message.strip()
            assert "internal error" not in outcome.message, outcome.message
            for psk in _psks_in(params):
                assert psk not in outcome.message and json.dumps(psk)[1:-1] not in text, \
                    "a PSK in the reply"
            if not outcome.ok:
                assert agent.manager.desired == before, "a refused job changed the state"
            assert agent.manager.desired == agent.store.load()[0]
            sim._injections.clear()  # a fault the job did not reach must not hit the next
            sim._disconnect_after = None
            if fault is not None:
                TOTALS.faults += 1
                await agent.vpp.wait_connected(5)
                TOTALS.converge_max_s = max(TOTALS.converge_max_s,
                                            await _converge(agent, sim))
            else:
                assert differences(sim, agent.manager.desired) == []
    finally:
        await agent.close()
        await sim.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _no_stats() -> list[dict[str, Any]]:
    return []


@pytest.mark.fuzz
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize=not os.environ.get("FUZZ_SEED"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(jobs=st.lists(st.tuples(request(), FAULT), min_size=1, max_size=12))
def test_fuzzed_jobs_keep_every_invariant(jobs: list[tuple[tuple[str, Any], Any]]) -> None:
    try:
        asyncio.run(_scenario(jobs))
    except BaseException:
        TOTALS.violations += 1  # hypothesis goes on to shrink it; the test fails
        raise


def teardown_module() -> None:
    if SUMMARY and TOTALS.jobs:
        Path(SUMMARY).write_text(json.dumps({
            "scenarios": TOTALS.scenarios,
            "jobs": TOTALS.jobs, "seed_jobs": TOTALS.scenarios,
            "ok": TOTALS.ok, "refused": TOTALS.jobs - TOTALS.ok,
            "faults_injected": TOTALS.faults,
            "converge_max_s": round(TOTALS.converge_max_s, 3),
            "by_outcome": dict(sorted(TOTALS.by_message.items())),
            "scenarios_violating_an_invariant": TOTALS.violations}, indent=2) + "\n")
