"""peerctl's table rendering and command parsing (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.admin import protocol as proto
from agent.admin.peerctl import Request, UsageError, build_request, resolve_socket
from agent.admin.render import fmt_duration, render_jobs, render_peers, render_table, render_vpp


def test_table_columns_are_aligned_and_unpadded_at_the_end() -> None:
    assert render_table(("A", "LONGER"), [["xyz", "1"], ["q", "22222222"]]) == (
        "A    LONGER\n"
        "xyz  1\n"
        "q    22222222\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3723, "1h02m03s"),
     (90061, "1d01h01m")],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_peers_table() -> None:
    peers = [
        {"tunnel_id": 7, "name": "peer-7", "remote": "203.0.113.10", "remote_id": "gw",
         "ike_state": "AUTHENTICATED", "reason": "IKE SA established, child SA installed",
         "child_sas": 1, "spis": "c1a2b3c4/d5e6f7a8", "uptime": 3723.4, "rtt_ms": 23.44,
         "jitter_ms": 1.25,
         "drop_rate": 0.0, "status": "up"},
        {"tunnel_id": 12, "name": "peer-12", "remote": "203.0.113.12", "remote_id": "x",
         "ike_state": None, "reason": "waiting for the peer to initiate", "child_sas": 0,
         "uptime": None, "rtt_ms": None, "jitter_ms": None, "drop_rate": None,
         "status": "down"},
    ]
    assert render_peers(peers) == (
        "ID  NAME     REMOTE        IKE            CHILD  SPIS               UPTIME    RTT     "
        "JITTER  DROP  STATUS  REASON\n"
        "7   peer-7   203.0.113.10  AUTHENTICATED  1      c1a2b3c4/d5e6f7a8  1h02m03s  23.4ms  "
        "1.2ms   0.0%  up      IKE SA established, child SA installed\n"
        "12  peer-12  203.0.113.12  -              0      -                  -         -       "
        "-       -     down    waiting for the peer to initiate\n"
    )
    assert render_peers([]) == "no peers configured\n"


def test_jobs_table() -> None:
    jobs = [{"jobid": "1234", "message": "add-tunnel", "ok": False,
             "reply": "tunnel 7: src 192.168.1.99 is not an address\nof eth0",
             "recorded_at": 1717000000.5}]
    assert render_jobs(jobs) == (
        "JOB   MESSAGE     RESULT  WHEN (UTC)            REPLY\n"
        "1234  add-tunnel  failed  2024-05-29T16:26:40Z  "
        "tunnel 7: src 192.168.1.99 is not an address of eth0\n"
    )
    assert render_jobs([]) == "no jobs recorded\n"


def test_vpp_summary() -> None:
    summary = {
        "version": "v26.06-release", "build_date": "2026-06-24T00:00:00",
        "interfaces": [[{"sw_if_index": 1, "name": "GigabitEthernet0/3/0", "admin_up": True,
                         "mtu": 9000}, ["192.168.1.10/24"]]],
        "ikev2_plugin": "1.0", "profiles": 1, "sas": 0,
        "missing": {"ikev2_set_responder": "ikev2_set_responder missing: enable ikev2"},
        "optional_present": ["ikev2_sa_v3_dump"],
    }
    assert render_vpp(summary) == (
        "VPP version v26.06-release (built 2026-06-24T00:00:00)\n"
        "ikev2 plugin 1.0; profiles 1, IKE SAs 0\n"
        "\n"
        "IDX  INTERFACE             STATE  MTU   ADDRESSES\n"
        "1    GigabitEthernet0/3/0  up     9000  192.168.1.10/24\n"
        "missing capabilities (the agent needs these):\n"
        "  ikev2_set_responder missing: enable ikev2\n"
        "optional capabilities found: ikev2_sa_v3_dump\n"
        "optional capabilities absent: ikev2_set_ike_lifetime, ikev2_set_pfs, acl_add_replace, "
        "acl_del, acl_dump, abf_policy_add_del, abf_policy_dump, abf_itf_attach_add_del, "
        "abf_itf_attach_dump\n"
    )


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("show peers", Request(proto.SHOW_PEERS, {}, "peers")),
        ("show policies", Request(proto.SHOW_POLICIES, {}, "policies")),
        ("sh peers", Request(proto.SHOW_PEERS, {}, "peers")),
        ("show ikev2 sa details",
         Request(proto.VPP, {"command": "show ikev2 sa details", "show_secrets": False}, "text")),
        ("show ikev2 profile",
         Request(proto.VPP, {"command": "show ikev2 profile", "show_secrets": False}, "text")),
        ("show jobs 5", Request(proto.SHOW_JOBS, {"limit": 5}, "jobs")),
        ("show vpp", Request(proto.SHOW_VPP, {}, "vpp")),
        ("event-logger clear",
         Request(proto.VPP, {"command": "event-logger clear", "show_secrets": False}, "text")),
        ("ikev2 set logging level 3",  # translated by the daemon (agent/vpp/cli_compat.py)
         Request(proto.VPP, {"command": "ikev2 set logging level 3", "show_secrets": False},
                 "text")),
        ("vpp show ip fib",
         Request(proto.VPP, {"command": "show ip fib", "show_secrets": False}, "text")),
        ("log level DEBUG", Request(proto.LOG_LEVEL, {"level": "debug"}, "level")),
        ("log level", Request(proto.LOG_LEVEL, {"level": None}, "level")),
        ("peer export 7",
         Request(proto.PEER_EXPORT, {"tunnel_id": 7, "format": "swanctl", "show_secrets": False},
                 "text")),
    ],
)
def test_commands_map_to_requests(words: str, expected: Request) -> None:
    assert build_request(words.split()) == expected


def test_secrets_and_format_flags_reach_the_request() -> None:
    req = build_request(["peer", "export", "7"], fmt="text", show_secrets=True)
    assert req.args == {"tunnel_id": 7, "format": "text", "show_secrets": True}
    req = build_request(["show", "ikev2", "profile"], show_secrets=True)
    assert req.args["show_secrets"] is True


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("show tunnels", "unknown command 'show tunnels'"),
        ("", r"unknown command '\(none\)'"),
        ("peer export seven", "expected a tunnel id"),
        ("ikev2 set logging level 9", "expected a level from 0 to 5"),
        ("log level loud", "expected one of debug, info, warning, error"),
        ("vpp", "expected a vppctl command"),
        ("show jobs 0", "not a positive number"),
    ],
)
def test_bad_commands_are_usage_errors(words: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_request(words.split())


def test_format_outside_export_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--format only applies"):
        build_request(["show", "peers"], fmt="text")


def test_socket_comes_from_option_config_env_or_default(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[admin]\nsocket = "/tmp/x/admin.sock"\n')
    assert resolve_socket("/tmp/opt.sock", str(cfg), {}) == "/tmp/opt.sock"
    assert resolve_socket(None, str(cfg), {}) == "/tmp/x/admin.sock"
    env = {"PEERING_AGENT_ADMIN__SOCKET": "/tmp/env.sock"}
    assert resolve_socket(None, str(cfg), env) == "/tmp/env.sock"
    # a setting the daemon would refuse does not stop peerctl from finding its socket
    cfg.write_text('[admin]\nsocket = "/tmp/y.sock"\n[controller]\nurl = "ftp://x"\n')
    assert resolve_socket(None, str(cfg), {}) == "/tmp/y.sock"
    with pytest.raises(UsageError, match="does not exist"):
        resolve_socket(None, str(tmp_path / "missing.toml"), {})
