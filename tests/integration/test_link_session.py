"""The device session against the controller double over a real websocket on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config import ControllerConfig
from agent.lab.controller_double import ControllerDouble
from agent.link.handler import Outcome
from agent.link.journal import Journal
from agent.link.session import LinkSession
from tests.agent_task import task_running
from tests.waiting import until

MACHINE = "ab-0001"
ADD = {"tunnel-id": 7, "peer": {"ips": ["8.8.8.8"]}, "ikev2": {"psk": "S3cr3tPSK"}}


class FakeHandler:
    """Records what the link hands over; jobs can be held at a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.applied: set[str] = set()

    async def run_job(self, message: str, params: Any, jobid: str,
                      original: Any = None) -> Outcome:
        self.calls.append((message, params, jobid))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)  # let other frames in between
            if message not in ("add-tunnel", "remove-tunnel"):
                return Outcome(False, f"{message} is not supported by this device")
            self.applied.add(jobid)
            return Outcome(True, f"{message} {jobid} done")
        finally:
            self.running -= 1
            self.finished.set()

    async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
        version = {"version": "6.3.0"}
        return {"device": "6.3.0", "components": {"agent": version, "router": version,
                                                  "vpp": {"version": "26.06"},
                                                  "frr": {"version": "8.4.4"}}}

    async def device_stats(self) -> list[dict[str, Any]]:
        return [{"ok": 1, "period": 10, "utc": 1.0, "stats": {}, "running": True,
                 "state": "running", "tunnel_stats": {}}]

    def cfg_hash(self) -> str:
        return f"hash-{len(self.applied)}"


def make_cfg(ctl: ControllerDouble, token_file: Path, **over: Any) -> ControllerConfig:
    values: dict[str, Any] = dict(
        url=ctl.url,
        machine_id=MACHINE,
        token_file=token_file,
        allow_insecure=True,
        connect_timeout=2.0,
        backoff_min=0.05,
        backoff_max=0.3,
        retry_quick_min=0.3,
        retry_quick_max=0.5,
        retry_slow_min=0.8,
        retry_slow_max=1.0,
        ping_interval=0.2,
        silence_timeout=1.0,
        close_timeout=0.3,
        max_frame_size=64 * 1024,
        job_timeout=3.0,
        query_timeout=2.0,
    )
    values.update(over)
    return ControllerConfig(**values)


def running(session: LinkSession) -> contextlib.AbstractAsyncContextManager[asyncio.Task[Any]]:
    return task_running(session.run())


class Env:
    def __init__(self, tmp_path: Path, token: str, ctl: ControllerDouble) -> None:
        self.tmp = tmp_path
        self.token = token
        self.ctl = ctl
        self.token_file = tmp_path / "device.token"
        self.token_file.write_text(token + "\n")
        self.journal_path = tmp_path / "state" / "journal.sqlite3"
        self.journals: list[Journal] = []
        self.logs: list[dict[str, Any]] = []  # structlog events of the test

    def session(self, handler: FakeHandler, **over: Any) -> LinkSession:
        journal = Journal(self.journal_path)
        self.journals.append(journal)
        return LinkSession(make_cfg(self.ctl, self.token_file, **over), handler, journal)


@pytest.fixture
async def env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Env]:
    # Characters that need URL quoting, to catch the quoted form leaking too.
    token = f"dev+{secrets.token_hex(12)}/="
    ctl = ControllerDouble(
        machine_id=MACHINE,
        device_token=token,
        ping_interval=0.2,
        stats_interval=None,
        job_timeout=5.0,
    )
    await ctl.start()
    caplog.set_level(logging.DEBUG)
    e = Env(tmp_path, token, ctl)
    with capture_logs() as logs:
        e.logs = logs
        try:
            yield e
        finally:
            await ctl.stop(abort=True)
            for j in e.journals:
                j.close()
    # The token must never reach a log line, in structlog or in stdlib logging.
    forms = {token, token.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")}
    lines = [json.dumps(entry, default=str) for entry in logs]
    records = caplog.get_records("setup") + caplog.get_records("call")
    # The double is the controller: it may log the URL it received; the agent may not.
    agent_records = [r for r in records if not r.name.startswith("agent.lab")]
    if ctl.handshakes:  # websockets' own debug lines (request path!) were checked too
        assert any(r.name == "agent.link.websockets" for r in agent_records)
    lines += [r.getMessage() for r in agent_records]
    assert lines, "no log output captured"
    for line in lines:
        for form in forms:
            assert form not in line


def events(logs: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [e for e in logs if text in str(e.get("event", ""))]


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def msg_of(reply: dict[str, Any]) -> dict[str, Any]:
    msg = reply["msg"]
    assert msg["entity"] == "agentReply"
    assert isinstance(msg["router-cfg-hash"], str)
    return msg


async def test_connect_info_and_stats_answered_while_job_runs(env: Env) -> None:
    handler = FakeHandler()
    handler.gate = asyncio.Event()
    async with running(env.session(handler)):
        await env.ctl.wait_connected(5)
        hs = env.ctl.connections[0]
        assert hs.user_agent == "fwagent/6.3.0" and hs.machine_id == MACHINE and hs.token_ok
        # like flexiManage (ws 6, permessage-deflate off): frames are not compressed
        assert hs.extensions == ""
        # flexiManage's get-device-info on connect is answered, seq echoed, jobs added.
        await env.ctl.wait_for(lambda: bool(env.ctl.info_replies), 5)
        info = env.ctl.info_replies[0]
        sent = json.loads(next(f.data for f in env.ctl.frames if f.direction == "out"))
        assert sent["msg"]["message"] == "get-device-info" and info["seq"] == sent["seq"]
        assert msg_of(info)["ok"] == 1
        assert info["msg"]["message"]["device"] == "6.3.0"
        assert info["msg"]["message"]["jobs"] == []

        job = asyncio.create_task(env.ctl.send_job("add-tunnel", ADD, jobid=11))
        await asyncio.wait_for(handler.started.wait(), 5)
        stats = await env.ctl.request("get-device-stats", timeout=2)
        assert msg_of(stats)["ok"] == 1 and stats["msg"]["message"][0]["state"] == "running"
        info2 = await env.ctl.request("get-device-info", {"jobs": [11, 999]}, timeout=2)
        # flexiagent's job records; ids never received are left out
        [running_job] = info2["msg"]["message"]["jobs"]
        assert {k: running_job[k] for k in ("job_id", "request", "errors", "state")} == {
            "job_id": "11", "request": "add-tunnel", "errors": [], "state": "running"}
        assert not job.done(), "queries must be answered before the running job finishes"
        handler.gate.set()
        reply = await asyncio.wait_for(job, 5)
        assert msg_of(reply) == {
            "ok": 1,
            "message": "add-tunnel 11 done",
            "entity": "agentReply",
            "router-cfg-hash": "hash-1",
        }
        info3 = await env.ctl.request("get-device-info", {"jobs": ["11"]}, timeout=2)
        [done] = info3["msg"]["message"]["jobs"]
        assert set(done) == {"job_id", "request", "received_at", "errors", "state"}
        assert (done["job_id"], done["state"], done["errors"]) == ("11", "complete", [])
    assert env.ctl.violations == []
    assert handler.calls == [("add-tunnel", ADD, "11")]


async def test_jobs_run_one_at_a_time_in_arrival_order(env: Env) -> None:
    handler = FakeHandler()
    handler.gate = asyncio.Event()
    session = env.session(handler)
    async with running(session):
        await env.ctl.wait_connected(5)
        # Bypass the double's one-job lock: a burst straight on the wire.
        seqs = []
        for jobid in (5, 3, 9, 1, 7):
            seq = env.ctl.new_seq()
            seqs.append(seq)
            frame = {
                "seq": seq,
                "hostId": "h",
                "jobid": jobid,
                "msg": {"entity": "agent", "message": "add-tunnel", "params": {"n": jobid}},
            }
            await env.ctl.send_raw(json.dumps(frame))
        await asyncio.wait_for(handler.started.wait(), 5)
        handler.gate.set()
        await env.ctl.wait_for(lambda: sum(r.get("seq") in seqs for r in env.ctl.replies) == 5, 5)
    assert [c[2] for c in handler.calls] == ["5", "3", "9", "1", "7"]
    assert handler.max_running == 1
    job_replies = [r for r in env.ctl.replies if r.get("seq") in seqs]
    assert [r["seq"] for r in job_replies] == seqs
    assert [r["msg"]["message"] for r in job_replies] == [
        f"add-tunnel {j} done" for j in (5, 3, 9, 1, 7)
    ]


async def test_same_jobid_applies_once_and_survives_restart(env: Env) -> None:
    handler = FakeHandler()
    async with running(env.session(handler)):
        await env.ctl.wait_connected(5)
        first = await env.ctl.send_job("add-tunnel", ADD, jobid=42)
        second = await env.ctl.send_job("add-tunnel", ADD, jobid=42)
    assert len(handler.calls) == 1
    assert first["seq"] != second["seq"] and first["msg"] == second["msg"]
    assert first["msg"]["ok"] == 1

    # A new agent process: fresh handler, journal reopened from the same file.
    for j in env.journals:
        j.close()
    handler2 = FakeHandler()
    handler2.applied = set(handler.applied)  # same stored config => same cfg hash
    session2 = env.session(handler2)
    async with running(session2):
        await env.ctl.wait_connected(5, count=2)
        third = await env.ctl.send_job("add-tunnel", ADD, jobid=42)
        info = await env.ctl.request("get-device-info", {"jobs": [42]}, timeout=2)
        # The same id with different content is a new job (controller DB reset).
        other = await env.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=42)
        # ... recorded under its own content: sent again, it is replayed
        again = await env.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=42)
    assert handler2.calls == [("remove-tunnel", {"tunnel-id": 7}, "42")]
    assert again["msg"] == other["msg"] and session2.counters.jobs_replayed == 2
    assert third["msg"] == first["msg"]
    assert [(j["job_id"], j["state"]) for j in info["msg"]["message"]["jobs"]] == [
        ("42", "complete")]
    assert other["msg"]["ok"] == 1


async def test_a_job_whose_connection_dropped_is_answered_on_the_next_one(env: Env) -> None:
    """flexiManage never re-sends a delivered job; it matches replies by seq while the
    job's timer runs, so the device finishes the job and replies on the new socket."""
    handler = FakeHandler()
    handler.gate = asyncio.Event()
    session = env.session(handler)
    async with running(session):
        await env.ctl.wait_ready(5)
        job = asyncio.create_task(env.ctl.send_job("add-tunnel", ADD, jobid=77))
        await asyncio.wait_for(handler.started.wait(), 5)
        env.ctl.refuse_status = 503  # keep the device out until the job is done
        await env.ctl.drop()
        await wait_until(lambda: not session.connected, 5)  # the device saw the drop
        handler.gate.set()
        await wait_until(lambda: session.counters.replies_held == 1, 5)
        env.ctl.refuse_status = None
        reply = await asyncio.wait_for(job, 5)
    assert reply["msg"]["ok"] == 1 and env.ctl.jobs[77].state == "complete"
    sent = [json.loads(f.data) for f in env.ctl.frames if f.direction == "out"]
    assert [m["jobid"] for m in sent if m["jobid"] != ""] == [77]  # never re-sent
    assert len(handler.calls) == 1


async def test_a_job_answered_after_the_send_timeout_is_recovered_not_resent(env: Env) -> None:
    """After Send Timeout flexiManage lists the job in get-device-info; the device's
    record says complete and the job flips to complete. It is never sent again."""
    env.ctl.job_timeout = 0.5
    handler = FakeHandler()
    handler.gate = asyncio.Event()
    async with running(env.session(handler)):
        await env.ctl.wait_ready(5)
        with pytest.raises(TimeoutError):
            await env.ctl.send_job("add-tunnel", ADD, jobid=78)
        assert env.ctl.jobs[78].error == "Send Timeout" and env.ctl.unanswered_jobs == [78]
        handler.gate.set()
        await env.ctl.wait_for(lambda: env.ctl.jobs[78].late_reply is not None, 5)
        await env.ctl.drop()
        await env.ctl.wait_ready(5, count=2)
    jobs = env.ctl.info_replies[-1]["msg"]["message"]["jobs"]
    assert [(j["job_id"], j["state"]) for j in jobs] == [("78", "complete")]
    assert env.ctl.jobs[78].state == "complete" and env.ctl.unanswered_jobs == []
    assert len(handler.calls) == 1 and env.ctl.jobs[78].sends == 1


async def test_agent_is_back_within_backoff_bound_after_controller_restart(env: Env) -> None:
    handler = FakeHandler()
    session = env.session(handler)
    async with running(session):
        await env.ctl.wait_connected(5)
        await env.ctl.stop(abort=True)
        await wait_until(lambda: not session.connected, 5)
        attempts = session.counters.attempts
        await wait_until(lambda: session.counters.attempts >= attempts + 3, 5)  # failing meanwhile
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        await env.ctl.start()
        await wait_until(lambda: session.counters.connections == 2, 5)
        back_after = loop.time() - restarted
    # backoff_max = 0.3 s bounds the wait for the next attempt; allow connect time.
    assert back_after < 0.3 + 0.5, back_after
    assert session.counters.connections == 2


async def test_handshake_retry_timing_follows_flexiagent(env: Env) -> None:
    """403 (not approved yet) is retried quickly (retry_quick_*), any other status
    slowly (retry_slow_*); never hammered, never ten minutes."""
    env.ctl.approved = False
    handler = FakeHandler()
    session = env.session(handler, backoff_min=0.01, backoff_max=0.02)
    async with running(session):
        await env.ctl.wait_for(lambda: len(env.ctl.handshakes) >= 3, 5)
        times = [h.at for h in env.ctl.handshakes]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.3 <= g < 0.5 + 0.3 for g in gaps), gaps
        assert session.counters.last_refusal == 403 and session.counters.connections == 0
        assert all(h.status == 403 and h.origin.startswith("http://") for h in env.ctl.handshakes)
        env.ctl.approved = True
        env.ctl.refuse_status = 404
        n = len(env.ctl.handshakes)
        await env.ctl.wait_for(lambda: len(env.ctl.handshakes) >= n + 2, 5)
        times = [h.at for h in env.ctl.handshakes[n:]]
        assert all(b - a >= 0.8 for a, b in itertools.pairwise(times))
        env.ctl.refuse_status = None
        await env.ctl.wait_ready(5)
    assert handler.calls == []


async def test_refusal_is_logged_plainly(env: Env) -> None:
    env.ctl.refuse_status = 404
    session = env.session(FakeHandler())
    async with running(session):
        await env.ctl.wait_for(lambda: len(env.ctl.handshakes) >= 1, 5)
        await wait_until(lambda: session.counters.refusals >= 1, 5)
    refused = events(env.logs, "controller refused the device: 404 unknown device")
    assert refused and refused[0]["log_level"] == "error"


def hostile_frames() -> tuple[list[str | bytes], int]:
    """(frames, how many carry a usable seq and must get an ok:0 reply)."""
    with_seq: list[str | bytes] = []
    without: list[str | bytes] = []
    n = 0

    def seq() -> str:
        nonlocal n
        n += 1
        return f"{n}:hostile{n}"

    secret = {"psk": "S3cr3tPSK"}
    for i in range(20):
        without += [f"not json {i}", "{" * (i + 1), "", "null", f"[{i}]", f'"{i}"', "1e999999"]
        without += [json.dumps({"msg": {"entity": "agent", "message": "add-tunnel"}, "jobid": i})]
        without += [json.dumps({"seq": i, "msg": {"entity": "agent", "message": "add-tunnel"}})]
        without += [json.dumps({"seq": ["x"], "jobid": i})]
        with_seq += [
            json.dumps({"seq": seq(), "jobid": i}),
            json.dumps({"seq": seq(), "msg": "add-tunnel", "jobid": i}),
            json.dumps({"seq": seq(), "msg": {"entity": 1, "message": "add-tunnel"}, "jobid": i}),
            json.dumps({"seq": seq(), "msg": {"entity": "agent", "message": ["x"]}, "jobid": i}),
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "add-tunnel", "params": secret},
                    "jobid": 1.5,
                }
            ),
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "add-tunnel", "params": secret},
                    "jobid": True,
                }
            ),
            json.dumps(
                {"seq": seq(), "msg": {"entity": "agent", "message": "rm -rf /"}, "jobid": i}
            ),
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "format-disk", "params": secret},
                    "jobid": "",
                }
            ),
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {
                        "entity": "agent",
                        "message": "get-device-info",
                        "params": {"jobs": "all"},
                    },
                    "jobid": "",
                }
            ),
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "add-tunnel", "params": secret},
                    "jobid": "x" * 100,
                }
            ),
        ]
        # Deep nesting that still parses: rejected by the depth limit, seq echoed.
        deep: Any = {"psk": "S3cr3tPSK"}
        for _ in range(100):
            deep = [deep]
        with_seq.append(
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "add-tunnel", "params": deep},
                    "jobid": i,
                }
            )
        )
        # Binary frames: refused, with a reply when the content has a seq.
        with_seq.append(
            json.dumps(
                {
                    "seq": seq(),
                    "msg": {"entity": "agent", "message": "get-device-stats"},
                    "jobid": "",
                }
            ).encode()
        )
        without.append(b"\xff\xfe\x00garbage")
    # Nesting too deep for the JSON parser itself.
    without.append("[" * 30000 + "]" * 30000)  # under max_frame_size (64 KiB)
    return with_seq + without, len(with_seq)


async def test_hostile_frames_never_kill_the_session_nor_reach_the_handler(env: Env) -> None:
    handler = FakeHandler()
    session = env.session(handler)
    frames, replies_expected = hostile_frames()
    assert len(frames) >= 300
    async with running(session):
        await env.ctl.wait_connected(5)
        await env.ctl.wait_for(lambda: bool(env.ctl.info_replies), 5)
        before = len(env.ctl.replies)
        for frame in frames:
            await env.ctl.send_raw(frame)
        await env.ctl.wait_for(lambda: len(env.ctl.replies) - before >= replies_expected, 10)
        hostile_replies = env.ctl.replies[before:]
        assert all(
            r["msg"]["ok"] == 0 and r["msg"]["entity"] == "agentReply" for r in hostile_replies
        )
        assert sorted(r["seq"] for r in hostile_replies) == sorted(
            json.loads(f)["seq"] for f in frames[:replies_expected]
        )
        assert not any("S3cr3tPSK" in json.dumps(r) for r in hostile_replies)
        assert session.counters.rejected_frames == len(frames)
        # Still fully working on the same connection.
        stats = await env.ctl.request("get-device-stats", timeout=2)
        assert stats["msg"]["ok"] == 1 and len(env.ctl.connections) == 1
        # A frame over max_frame_size: the connection is closed (1009), the session reconnects.
        await env.ctl.send_raw("x" * (64 * 1024 + 1))
        await env.ctl.wait_connected(5, count=2)
        assert (await env.ctl.request("get-device-stats", timeout=2))["msg"]["ok"] == 1
        # An unknown message sent as a job is the handler's call ("not supported").
        reply = await env.ctl.send_job("format-disk", {"x": 1})
        assert reply["msg"] == {  # no router-cfg-hash in a failure reply
            "ok": 0,
            "message": "format-disk is not supported by this device",
            "entity": "agentReply",
        }
    assert [c[0] for c in handler.calls] == ["format-disk"]
    assert events(env.logs, "larger than controller.max_frame_size")
    assert len(events(env.logs, "rejected a frame")) == len(frames)


async def test_silent_connection_is_declared_dead_and_replaced(env: Env) -> None:
    session = env.session(FakeHandler(), silence_timeout=0.6, ping_interval=0.15)
    async with running(session):
        await env.ctl.wait_connected(5)
        await env.ctl.wait_for(lambda: bool(env.ctl.info_replies), 5)
        loop = asyncio.get_running_loop()
        silent_at = loop.time()
        await env.ctl.go_silent()
        await env.ctl.wait_connected(5, count=2)
        took = loop.time() - silent_at
    assert session.counters.silence_drops == 1
    assert events(env.logs, "treating the connection as dead")
    assert 0.6 <= took < 0.6 + 0.3 + 1.0, took  # silence bound + backoff_max + slack


async def test_idle_but_alive_connection_is_kept(env: Env) -> None:
    # The controller pings (0.2 s) and answers pings: silence_timeout never trips.
    session = env.session(FakeHandler(), silence_timeout=0.5, ping_interval=0.1)
    async with running(session):
        await env.ctl.wait_connected(5)
        deadline = asyncio.get_running_loop().time() + 1.5
        with pytest.raises(TimeoutError):
            await env.ctl.wait_for(
                lambda: len(env.ctl.connections) > 1, deadline - asyncio.get_running_loop().time()
            )
    assert session.counters.silence_drops == 0 and session.counters.connections == 1


async def test_job_timeout_and_handler_crash_become_failed_outcomes(env: Env) -> None:
    class Broken(FakeHandler):
        async def run_job(self, message: str, params: Any, jobid: str,
                          original: Any = None) -> Outcome:
            if jobid == "1":
                raise RuntimeError("psk S3cr3tPSK rejected")
            await asyncio.Event().wait()  # hangs forever
            raise AssertionError

    session = env.session(Broken(), job_timeout=0.3)
    async with running(session):
        await env.ctl.wait_connected(5)
        crashed = await env.ctl.send_job("add-tunnel", ADD, jobid=1)
        hung = await env.ctl.send_job("add-tunnel", ADD, jobid=2)
        info = await env.ctl.request("get-device-info", {"jobs": [1, 2]}, timeout=2)
    assert crashed["msg"]["ok"] == 0
    assert crashed["msg"]["message"] == (
        "internal error while running add-tunnel (RuntimeError); see the device log"
    )
    assert hung["msg"] == {
        "ok": 0,
        "entity": "agentReply",
        "message": "add-tunnel did not finish within 0.3 s and was cancelled",
    }
    assert [j["state"] for j in info["msg"]["message"]["jobs"]] == ["failed", "failed"]
    assert info["msg"]["message"]["jobs"][1]["errors"] == [hung["msg"]["message"]]


async def test_missing_token_file_is_reported_and_nothing_is_sent(env: Env) -> None:
    env.token_file.unlink()
    session = env.session(FakeHandler(), backoff_max=0.2)
    async with running(session):
        await wait_until(lambda: bool(events(env.logs, "no device token")), 5)
    assert env.ctl.handshakes == [] and session.counters.attempts == 0


async def test_the_double_disconnects_on_an_invalid_device_info(env: Env) -> None:
    """flexiManage drops a device whose get-device-info fails its schemas (3.3)."""

    class OldInfo(FakeHandler):
        async def device_info(self, params: dict[str, Any]) -> dict[str, Any]:
            version = {"version": "0.1.0"}
            return {"device": "0.1.0", "components": {"agent": version, "router": version,
                                                      "vpp": {"version": ""},
                                                      "frr": {"version": ""}},
                    "tunnels": [], "reconfig": "vpp-out-of-sync"}

    session = env.session(OldInfo())
    async with running(session):
        await env.ctl.wait_for(lambda: len(env.ctl.info_replies) >= 2, 5)
    assert not env.ctl.ready
    assert any("frr.version is not allowed to be empty" in v for v in env.ctl.violations)
    assert any("reconfig without network" in v for v in env.ctl.violations)
    assert session.counters.connections >= 2  # dropped, reconnected, dropped again


async def test_the_double_gives_up_after_two_automatic_syncs(env: Env) -> None:
    """A device that never matches the chain gets two sync-device jobs, then not-synced."""
    handler = FakeHandler()  # its hash is never flexiManage's chain; sync-device fails
    async with running(env.session(handler)):
        await env.ctl.wait_ready(5)
        env.ctl.queue("add-ospf", {"custom": [], "redistributeBgp": False})  # hash advances
        for trial in (1, 2):
            await env.ctl.poll_stats(timeout=2)
            assert env.ctl.sync_state == "syncing"
            await env.ctl.wait_for(lambda t=trial: len(env.ctl.sync_jobs) == t  # type: ignore[misc]
                                   and env.ctl.sync_jobs[-1].state == "failed", 5)
        await env.ctl.poll_stats(timeout=2)
        assert env.ctl.sync_state == "not-synced" and not env.ctl.auto_sync_on
        await env.ctl.poll_stats(timeout=2)
        assert len(env.ctl.sync_jobs) == 2
    assert [c[0] for c in handler.calls] == ["sync-device", "sync-device"]
    ospf = handler.calls[0][1]["requests"]
    assert {"entity": "agent", "message": "add-ospf",
            "params": {"custom": [], "redistributeBgp": False}} in ospf

class GatedDirect:
    """A DirectHandler whose answers wait at a gate (a slow command)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def answer(self, message: str, params: Any) -> Outcome:
        self.waiting += 1
        await self.gate.wait()
        return Outcome(True, {"output": message, "error": "", "returncode": 0})


async def test_slow_direct_messages_never_hold_stats_jobs_or_the_reader(env: Env) -> None:
    from agent.link.session import MAX_CONCURRENT_DIRECT, MAX_DIRECT_IN_FLIGHT

    handler, direct = FakeHandler(), GatedDirect()
    journal = Journal(env.journal_path)
    env.journals.append(journal)
    session = LinkSession(make_cfg(env.ctl, env.token_file), handler, journal, direct=direct)
    async with running(session):
        await env.ctl.wait_connected(5)
        pending = [asyncio.create_task(env.ctl.direct("exec_timeout", {"cmd": "x"}))
                   for _ in range(MAX_DIRECT_IN_FLIGHT)]
        try:
            await _slow_directs_do_not_block(env, direct, pending, MAX_CONCURRENT_DIRECT,
                                             MAX_DIRECT_IN_FLIGHT)
        finally:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _slow_directs_do_not_block(env: Env, direct: GatedDirect,
                                     pending: list[asyncio.Task[dict[str, Any]]],
                                     concurrent: int, in_flight: int) -> None:
    await until(lambda: direct.waiting == concurrent)
    await until(lambda: sum('"exec_timeout"' in str(f.data) for f in env.ctl.frames
                            if f.direction == "out") == in_flight)  # all sent before the next
    busy = await env.ctl.direct("get-device-logs", {"lines": 1, "filter": "vpp"})
    assert busy["ok"] == 0 and busy["message"].startswith("device busy")
    stats = await env.ctl.request("get-device-stats", timeout=2)
    assert stats["msg"]["ok"] == 1
    job = await env.ctl.send_job("add-tunnel", ADD, jobid=4242)
    assert job["msg"]["ok"] == 1
    assert direct.waiting == concurrent  # the rest wait for a slot
    direct.gate.set()
    replies = await asyncio.gather(*pending)
    assert all(r["ok"] == 1 and r["entity"] == "osReply" for r in replies)
    assert direct.waiting == in_flight


async def test_direct_messages_without_a_handler_are_refused(env: Env) -> None:
    async with running(env.session(FakeHandler())):
        await env.ctl.wait_connected(5)
        msg = await env.ctl.direct("get-device-config")
        assert msg["ok"] == 0 and msg["message"] == \
            "get-device-config is not supported by this device"


async def test_each_job_runs_and_is_answered_inside_the_job_scope(env: Env) -> None:
    """The daemon pauses the collector for a job (`job_scope`): entered before the job
    runs, left once it is answered and journaled, for every job."""
    events: list[str] = []
    journal = Journal(env.journal_path)
    env.journals.append(journal)

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        events.append("enter")
        try:
            yield
        finally:
            events.append(f"exit, {len(journal)} journaled")

    class Recording(FakeHandler):
        async def run_job(self, message: str, params: Any, jobid: str,
                          original: Any = None) -> Outcome:
            events.append(f"run {jobid}")
            return await super().run_job(message, params, jobid, original)

    session = LinkSession(make_cfg(env.ctl, env.token_file), Recording(), journal,
                          job_scope=scope)
    async with running(session):
        await env.ctl.wait_ready(5)
        for jobid in (31, 32):
            reply = await env.ctl.send_job("add-tunnel", ADD, jobid=jobid)
            assert reply["msg"]["ok"] == 1
        await until(lambda: len(events) == 6)
    assert events == ["enter", "run 31", "exit, 1 journaled",
                      "enter", "run 32", "exit, 2 journaled"]
