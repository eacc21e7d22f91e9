"""The remote diagnostics runner with real processes, files and a scripted VPP CLI."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.config import RemoteConfig
from agent.jobs.messages import DIRECT_MESSAGES, EXEC_TIMEOUT
from agent.remote.logs import LogSource
from agent.remote.service import RemoteService

PSK = "Top-Secret-Key-4711"


class FakeVpp:
    def __init__(self, replies: dict[str, tuple[int, str]] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[str] = []

    async def __call__(self, cmd: str) -> tuple[int, str]:
        self.calls.append(cmd)
        return self.replies.get(cmd, (-1, f"unknown input `{cmd}'\n"))


def service(vpp: FakeVpp | None = None, *, allow: Iterable[str] | None = None,
            config: list[dict[str, Any]] | None = None, output_max: int = 65536,
            sources: dict[str, LogSource] | None = None) -> RemoteService:
    cfg = RemoteConfig() if allow is None else RemoteConfig(allow=tuple(allow))
    cfg = cfg.model_copy(update={"output_max": output_max})
    return RemoteService(cfg, vpp_cli=vpp or FakeVpp(), config=lambda: config or [],
                         secrets=lambda: [PSK], log_sources=sources)


def _running(cmdline: str) -> bool:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().replace(b"\0", b" ").strip() == cmdline.encode():
                    return True
            except OSError:
                continue
    return False


# params each direct message refuses (or answers) at once, without running anything long
_QUICK: dict[str, Any] = {EXEC_TIMEOUT: {"cmd": ""}, "get-device-logs": {"lines": "x"},
                          "get-device-packet-traces": {"packets": 0}}


@pytest.mark.parametrize("message", sorted(DIRECT_MESSAGES))
async def test_every_direct_message_of_the_registry_is_answered(message: str) -> None:
    out = await service().answer(message, _QUICK.get(message))
    assert "not a remote diagnostics message" not in str(out.message)
    unknown = await service().answer("get-device-nothing", None)
    assert not unknown.ok and "not a remote diagnostics message" in str(unknown.message)


async def test_allowed_program_runs_without_a_shell() -> None:
    out = await service().answer("exec_timeout", {"cmd": "ip -br link", "timeout": 10})
    assert out.ok and out.message["returncode"] == 0 and out.message["error"] == ""
    assert any(line.startswith("lo ") for line in out.message["output"].splitlines())


async def test_timeout_kills_the_command_and_returns_what_it_printed() -> None:
    started = time.monotonic()
    out = await service().answer("exec_timeout",
                                 {"cmd": "ping -c 100 -W 1 127.0.0.1", "timeout": 2})
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 3.5, elapsed
    assert out.ok and out.message["returncode"] == -9
    assert "timed out after 2 s: the command was killed" in out.message["error"]
    assert "PING 127.0.0.1" in out.message["output"]
    assert not _running("ping -c 100 -W 1 127.0.0.1")


async def test_timeout_is_capped_by_the_configuration() -> None:
    svc = RemoteService(RemoteConfig(allow=("sleep <n>",), max_timeout=1.0), vpp_cli=FakeVpp(),
                        config=list, secrets=list)
    started = time.monotonic()
    out = await svc.answer("exec_timeout", {"cmd": "sleep 30", "timeout": 3600})
    assert time.monotonic() - started < 2.5
    assert out.message["returncode"] == -9 and "timed out after 1 s" in out.message["error"]


async def test_output_is_cut_and_says_so() -> None:
    out = await service(allow=["seq <n>"], output_max=1024).answer(
        "exec_timeout", {"cmd": "seq 100000", "timeout": 10})
    text = out.message["output"]
    assert text.startswith("1\n2\n3\n")
    assert text.endswith("[output cut at 1024 characters; the command printed 588895 bytes]")
    assert len(text) < 1100


async def test_missing_program_and_refusals() -> None:
    out = await service(allow=["no-such-program-x"]).answer(
        "exec_timeout", {"cmd": "no-such-program-x", "timeout": 5})
    assert out.ok and out.message["returncode"] == 127
    assert "not installed" in out.message["error"]
    out = await service().answer("exec_timeout", {"cmd": "cat /etc/shadow", "timeout": 5})
    assert not out.ok
    assert out.message.startswith("exec_timeout refused: 'cat' with these arguments is not in "
                                  "this device's allow-list")
    for bad in ({"cmd": 7}, {"timeout": 5}, "x", {"cmd": "ip -br addr", "timeout": -1},
                {"cmd": "ip -br addr", "timeout": "soon"}):
        assert not (await service().answer("exec_timeout", bad)).ok


async def test_vppctl_runs_through_the_api_masked_and_translated() -> None:
    from agent.lab.vppsim.cli import hex_bytes

    key = bytes(range(100, 136))  # a 36-byte AES-256-GCM SK_e: a two-row dump
    sa = (" SK_e  i:" + hex_bytes(key, 9) + "\n       r:" + hex_bytes(key[::-1], 9) + "\n"
          " identifier (r) id-type fqdn data gw.cloud.example\n")
    vpp = FakeVpp({"show ikev2 sa details": (0, sa),
                   "set logging class ikev2 level debug": (0, ""),
                   "show bogus": (-1, "unknown input `bogus'\n")})
    svc = service(vpp)
    out = await svc.answer("exec_timeout", {"cmd": "vppctl show ikev2 sa details",
                                            "timeout": 60})
    text = out.message["output"]
    assert out.ok and "gw.cloud.example" in text
    assert key.hex()[8:16] not in text.replace("\n", "").replace(" ", "")
    assert text.count("******") == 4
    out = await svc.answer("exec_timeout", {"cmd": "vppctl ikev2 set logging level 5",
                                            "timeout": 60})
    assert vpp.calls[-1] == "set logging class ikev2 level debug"
    assert out.message["output"].startswith("note: VPP 26.06 has no 'ikev2 set logging level 5'")
    out = await svc.answer("exec_timeout", {"cmd": "vppctl show bogus", "timeout": 60})
    assert out.ok and out.message == {"output": "", "error": "unknown input `bogus'\n",
                                      "returncode": 1}


async def test_logs_from_a_file_last_lines_masked(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("".join(f"line {i}\n" for i in range(500)) + f"charon: psk {PSK} loaded\n"
                   "  auth-method shared-key-mic auth data whatever-psk\nlast\n")
    svc = service(sources={"fwagent": LogSource(log, None),
                           "vpp": LogSource(tmp_path / "missing.log", None)})
    out = await svc.answer("get-device-logs", {"lines": "4", "filter": "fwagent"})
    assert out.ok and out.message == ["line 499", "charon: psk ****** loaded",
                                      "  auth-method shared-key-mic auth data ******", "last"]
    out = await svc.answer("get-device-logs", {"lines": 1000, "filter": "fwagent"})
    assert len(out.message) == 503
    assert (await svc.answer("get-device-logs", {"lines": 10, "filter": "vpp"})).message == []
    assert (await svc.answer("get-device-logs", {"lines": 10, "filter": "all"})).message == []
    out = await svc.answer("get-device-logs", {"lines": 10, "filter": "kernel"})
    assert not out.ok and "unknown filter 'kernel'" in out.message


async def test_config_is_masked() -> None:
    items = [{"message": "add-tunnel", "params": {"tunnel-id": 7, "ikev2": {"psk": PSK}}}]
    out = await service(config=items).answer("get-device-config", None)
    assert out.ok and out.message == [{"message": "add-tunnel",
                                       "params": {"tunnel-id": 7, "ikev2": {"psk": "******"}}}]
    assert items[0]["params"]["ikev2"]["psk"] == PSK  # the source is not modified


async def test_os_routes_from_this_host() -> None:
    out = await service().answer("get-device-os-routes", None)
    assert out.ok and isinstance(out.message, list)
    for r in out.message:
        assert set(r) == {"destination", "gateway", "metric", "interface", "protocol"}
        assert "/" in r["destination"] and isinstance(r["metric"], int)


async def test_packet_traces_and_bgp() -> None:
    trace = ("------------------- Start of thread 0 vpp_main -------------------\n"
             "Packet 1\n\n00:00:01:000000: af-packet-input\n")
    vpp = FakeVpp({"clear trace": (0, ""), "trace add af-packet-input 10": (0, ""),
                   "show trace max 10": (0, trace)})
    out = await service(vpp).answer("get-device-packet-traces", {"packets": 10, "timeout": 0})
    assert out.ok and out.message == ["Packet 1", "", "00:00:01:000000: af-packet-input"]
    assert vpp.calls[0] == "clear trace" and vpp.calls[-1] == "show trace max 10"
    out = await service(FakeVpp()).answer("get-device-packet-traces", {"timeout": 0})
    assert not out.ok and "none of the input nodes" in out.message
    assert (await service().answer("get-bgp-status", None)).message == {}


async def test_bgp_status_when_frr_does_not_answer_is_a_failure_not_an_empty_page() -> None:
    """flexiagent answers ok:0; `{}` would make flexiManage replace the BGP page's
    stored status with no peers."""
    async def frr_down() -> dict[str, Any]:
        raise RuntimeError("vtysh -c 'show bgp summary json' failed (1): FRR is not running")

    remote = RemoteService(RemoteConfig(), vpp_cli=FakeVpp(), config=lambda: [],
                           secrets=lambda: [PSK], bgp_status=frr_down)
    out = await remote.answer("get-bgp-status", None)
    assert (out.ok, out.message) == (False, "failed to get BGP status: vtysh -c 'show bgp "
                                            "summary json' failed (1): FRR is not running")


@pytest.mark.parametrize("packets", [0, -1, "x"])
async def test_packet_trace_params(packets: object) -> None:
    out = await service().answer("get-device-packet-traces", {"packets": packets})
    assert not out.ok


async def test_logs_from_the_journal_when_the_file_is_missing(tmp_path: Path) -> None:
    fake = tmp_path / "journalctl"
    argv_file = tmp_path / "argv"
    fake.write_text("#!/bin/sh\n"
                    f'echo "$@" > {argv_file}\n'
                    "i=0; while [ $i -lt 30 ]; do echo \"2026-11-29T09:00:00 vpp[1]: msg $i\"; "
                    "i=$((i+1)); done\n"
                    f'echo "vpp[1]: profile peer-7 auth data {PSK}"\n')
    fake.chmod(0o755)
    svc = RemoteService(RemoteConfig(), vpp_cli=FakeVpp(), config=list, secrets=lambda: [PSK],
                        log_sources={"vpp": LogSource(tmp_path / "missing.log", "vpp")},
                        journalctl=str(fake))
    out = await svc.answer("get-device-logs", {"lines": 3, "filter": "vpp"})
    assert out.ok and out.message == ["2026-11-29T09:00:00 vpp[1]: msg 28",
                                      "2026-11-29T09:00:00 vpp[1]: msg 29",
                                      "vpp[1]: profile peer-7 auth data ******"]
    assert argv_file.read_text().split() == ["--no-pager", "-q", "-o", "short-iso", "-n", "3",
                                             "-u", "vpp"]
    fake.write_text("#!/bin/sh\nexit 1\n")  # no journal on this box: flexiagent's []
    assert (await svc.answer("get-device-logs", {"lines": 3, "filter": "vpp"})).message == []


async def test_vpp_down_is_said_not_crashed() -> None:
    async def down(cmd: str) -> tuple[int, str]:
        raise ConnectionError("VPP API socket not connected")

    svc = RemoteService(RemoteConfig(), vpp_cli=down, config=list, secrets=list)
    out = await svc.answer("exec_timeout", {"cmd": "vppctl show version", "timeout": 5})
    assert out.ok and out.message == {"output": "",
                                      "error": "VPP is not reachable: ConnectionError",
                                      "returncode": 1}
    out = await svc.answer("get-device-packet-traces", {"timeout": 0})
    assert not out.ok and "VPP is not reachable (ConnectionError)" in out.message
