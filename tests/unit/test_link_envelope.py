"""Envelope parsing and backoff maths (pure; no socket)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from agent.link.backoff import Backoff
from agent.link.envelope import Rejected, Request, encode_reply, parse_frame


def frame(**over: Any) -> str:
    doc: dict[str, Any] = {
        "seq": "42:a1B2c3D4",
        "hostId": "h1",
        "msg": {"entity": "agent", "message": "add-tunnel", "params": {"tunnel-id": 7}},
        "jobid": 1234,
    }
    doc.update(over)
    return json.dumps(doc)


def test_job_and_queries() -> None:
    req = parse_frame(frame())
    assert req == Request("42:a1B2c3D4", "add-tunnel", {"tunnel-id": 7}, "1234", "h1",
                          {"entity": "agent", "message": "add-tunnel", "params": {"tunnel-id": 7}})
    assert req.is_job
    info = parse_frame(
        frame(
            jobid="",
            msg={
                "entity": "agent",
                "message": "get-device-info",
                "params": {"tunnels": [], "jobs": [1, "2"]},
            },
        )
    )
    assert isinstance(info, Request) and not info.is_job
    stats = parse_frame(frame(jobid="", msg={"entity": "agent", "message": "get-device-stats"}))
    assert isinstance(stats, Request) and not stats.is_job and stats.params is None


@pytest.mark.parametrize(
    ("data", "seq", "reason"),
    [
        ("{", None, "not valid JSON"),
        ("[1]", None, "JSON object"),
        (json.dumps({"msg": {}}), None, "no valid seq"),
        (json.dumps({"seq": 5}), None, "no valid seq"),
        (json.dumps({"seq": "x" * 200}), None, "no valid seq"),
        (frame(msg="x"), "42:a1B2c3D4", "no msg object"),
        (frame(msg={"entity": "agent", "message": 5}), "42:a1B2c3D4", "non-empty string"),
        (frame(msg={"entity": "other", "message": "a"}), "42:a1B2c3D4", "entity"),
        (frame(jobid=1.5), "42:a1B2c3D4", "jobid must be"),
        (frame(jobid=False), "42:a1B2c3D4", "jobid must be"),
        (frame(jobid=""), "42:a1B2c3D4", "'add-tunnel' is not supported without a jobid"),
        (frame(msg={"entity": "agent", "message": "x<script>"}), "42:a1B2c3D4", "not a known"),
        (
            frame(msg={"entity": "agent", "message": "get-device-info", "params": {"jobs": 3}}),
            "42:a1B2c3D4",
            "get-device-info params",
        ),
        (
            frame(msg={"entity": "agent", "message": "a", "params": [[[[[[[[]]]]]]]] * 1}),
            "42:a1B2c3D4",
            None,
        ),
    ],
)
def test_rejections(data: str, seq: str | None, reason: str | None) -> None:
    out = parse_frame(data)
    if reason is None:  # 8 levels deep is fine
        assert isinstance(out, Request)
        return
    assert isinstance(out, Rejected) and out.seq == seq and reason in out.reason


def test_depth_limit_and_binary() -> None:
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    out = parse_frame(frame(msg={"entity": "agent", "message": "add-tunnel", "params": deep}))
    assert isinstance(out, Rejected) and out.seq == "42:a1B2c3D4" and "deeper" in out.reason
    assert parse_frame("[" * 50000 + "]" * 50000) == Rejected(None, "request is not valid JSON")
    b = parse_frame(frame().encode())
    assert isinstance(b, Rejected) and b.seq == "42:a1B2c3D4" and "binary" in b.reason
    assert parse_frame(b"\xff\x00") == Rejected(None, b.reason)


def test_rejections_never_echo_content() -> None:
    out = parse_frame(frame(msg={"entity": "S3cr3tPSK", "message": "add-tunnel"}))
    assert isinstance(out, Rejected) and "S3cr3tPSK" not in out.reason


def test_reply_shape() -> None:
    assert json.loads(encode_reply("1:x", True, "success", "abc")) == {
        "seq": "1:x",
        "msg": {"ok": 1, "message": "success", "entity": "agentReply", "router-cfg-hash": "abc"},
    }
    with pytest.raises(ValueError):
        encode_reply("1:x", True, float("nan"), "abc")


def test_failure_reply_has_no_hash() -> None:
    """flexiagent leaves router-cfg-hash out of failure replies."""
    assert json.loads(encode_reply("1:x", False, "bad", "abc")) == {
        "seq": "1:x", "msg": {"ok": 0, "message": "bad", "entity": "agentReply"}}


def test_msg_without_entity_is_accepted_and_kept_as_received() -> None:
    """flexiManage omits entity in modify-vxlan-config; the hash chain signs msg as sent."""
    req = parse_frame(frame(msg={"message": "modify-vxlan-config", "params": {"port": "4790"}}))
    assert isinstance(req, Request)
    assert req.msg == {"message": "modify-vxlan-config", "params": {"port": "4790"}}


def test_float_text_is_preserved() -> None:
    req = parse_frame(frame(msg={"entity": "agent", "message": "x", "params": {}}).replace(
        '"params": {}', '"params": {"v": 0.00001}'))
    assert isinstance(req, Request)
    assert req.params["v"].text == "0.00001"


def test_backoff_is_capped_full_jitter() -> None:
    b = Backoff(0.5, 8.0, random.Random(1))
    bounds = []
    for _ in range(8):
        bounds.append(b.bound())
        delay = b.next_delay()
        assert 0 <= delay <= bounds[-1]
    assert bounds == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.bound() == 0.5
    delays = [Backoff(1, 1, random.Random(i)).next_delay() for i in range(50)]
    assert min(delays) < 0.3 and max(delays) > 0.7  # jittered, not constant


@pytest.mark.parametrize("message", ["exec_timeout", "get-device-logs", "get-device-config",
                                     "get-device-os-routes", "get-device-packet-traces",
                                     "get-bgp-status"])
def test_direct_messages_need_no_jobid(message: str) -> None:
    req = parse_frame(frame(jobid="", msg={"entity": "agent", "message": message}))
    assert isinstance(req, Request) and req.is_direct and not req.is_job
    as_job = parse_frame(frame(msg={"entity": "agent", "message": message}))
    assert isinstance(as_job, Request) and as_job.is_job and not as_job.is_direct


def test_exec_timeout_alone_is_answered_as_os_reply() -> None:
    from agent.link.handler import reply_entity

    assert reply_entity("exec_timeout") == "osReply"
    assert reply_entity("get-device-logs") == reply_entity("add-tunnel") == "agentReply"
    assert json.loads(encode_reply("1:x", True, {}, "h", "osReply"))["msg"]["entity"] == "osReply"
