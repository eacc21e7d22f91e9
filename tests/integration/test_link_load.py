"""The link under load: the job queue is bounded in bytes, a query flood never stops
the reader (issue 15). Against the controller double over a real websocket."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.lab.controller_double import ControllerDouble
from agent.link.session import MAX_CONCURRENT_QUERIES, LinkSession
from tests.integration.test_link_session import MACHINE, Env, FakeHandler, running


@pytest.fixture
async def lenv(tmp_path: Path) -> AsyncIterator[Env]:
    token = secrets.token_hex(12)
    ctl = ControllerDouble(machine_id=MACHINE, device_token=token, ping_interval=0.2,
                           stats_interval=None, job_timeout=5.0)
    await ctl.start()
    e = Env(tmp_path, token, ctl)
    try:
        yield e
    finally:
        await ctl.stop(abort=True)
        for j in e.journals:
            j.close()


def _frame(ctl: ControllerDouble, message: str, jobid: int | str, params: Any) -> tuple[str, str]:
    seq = ctl.new_seq()
    return seq, json.dumps({"seq": seq, "hostId": "h", "jobid": jobid,
                            "msg": {"entity": "agent", "message": message, "params": params}})


def _reply(ctl: ControllerDouble, seq: str) -> dict[str, Any] | None:
    return next((r for r in ctl.replies if r.get("seq") == seq), None)


async def test_the_job_queue_is_bounded_in_bytes(lenv: Env) -> None:
    handler = FakeHandler()
    handler.gate = asyncio.Event()
    session: LinkSession = lenv.session(handler, max_frame_size=8 * 1024 * 1024,
                                        job_timeout=30.0)
    async with running(session):
        await lenv.ctl.wait_connected(5)
        big = {"blob": "x" * (7 * 1024 * 1024)}  # a 7 MB job frame
        seqs = []
        for jobid in range(1, 6):
            seq, text = _frame(lenv.ctl, "add-tunnel", jobid, big)
            seqs.append(seq)
            await lenv.ctl.send_raw(text)
            if jobid == 1:
                await asyncio.wait_for(handler.started.wait(), 5)
        # job 1 runs, 2 and 3 are queued (14 MB), 4 and 5 would pass 16 MB: refused
        await lenv.ctl.wait_for(lambda: all(_reply(lenv.ctl, s) for s in seqs[3:]), 10)
        for s in seqs[3:]:
            reply = _reply(lenv.ctl, s)
            assert reply is not None and reply["msg"]["ok"] == 0
            assert reply["msg"]["message"] == "device job queue is full"
        assert all(_reply(lenv.ctl, s) is None for s in seqs[:3])
        handler.gate.set()
        await lenv.ctl.wait_for(lambda: all(_reply(lenv.ctl, s) for s in seqs[:3]), 10)
    assert [c[2] for c in handler.calls] == ["1", "2", "3"]


class SlowStats(FakeHandler):
    def __init__(self) -> None:
        super().__init__()
        self.stats_gate = asyncio.Event()

    async def device_stats(self) -> list[dict[str, Any]]:
        await self.stats_gate.wait()
        return await super().device_stats()


async def test_a_query_flood_never_stops_the_reader(lenv: Env) -> None:
    handler = SlowStats()
    async with running(lenv.session(handler, query_timeout=10.0)):
        await lenv.ctl.wait_connected(5)
        seqs = []
        for _ in range(MAX_CONCURRENT_QUERIES + 6):
            seq, text = _frame(lenv.ctl, "get-device-stats", "", None)
            seqs.append(seq)
            await lenv.ctl.send_raw(text)
        # the queries beyond the slots are answered at once, and a job behind them runs
        await lenv.ctl.wait_for(
            lambda: all(_reply(lenv.ctl, s) for s in seqs[MAX_CONCURRENT_QUERIES:]), 5)
        busy = _reply(lenv.ctl, seqs[-1])
        assert busy is not None and busy["msg"]["ok"] == 0
        assert "device busy" in busy["msg"]["message"]
        job = await asyncio.wait_for(lenv.ctl.send_job("add-tunnel", {"n": 1}, jobid=3), 5)
        assert job["msg"]["ok"] == 1
        handler.stats_gate.set()
        await lenv.ctl.wait_for(lambda: all(_reply(lenv.ctl, s) for s in seqs), 5)
        answers = [_reply(lenv.ctl, s)["msg"] for s in seqs]  # type: ignore[index]
        served = [a for a in answers if a["ok"] == 1]
        # every query answered: served, or refused as busy (the connect-time
        # get-device-info may have held a slot)
        assert len(served) >= MAX_CONCURRENT_QUERIES - 1
        assert all("device busy" in a["message"] for a in answers if a["ok"] == 0)
