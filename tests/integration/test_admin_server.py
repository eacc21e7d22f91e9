"""The admin socket and peerctl against a real PeerManager + VppClient over vppsim."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.admin import protocol as proto
from agent.admin.backend import AdminError, ManagerBackend, PeerView
from agent.admin.client import AdminRequestError, call
from agent.admin.export import render_sheet, render_swanctl
from agent.admin.peerctl import main
from agent.admin.server import AdminServer
from agent.lab.vppsim.server import VppSim
from agent.peers.changes import AddPeer
from agent.peers.manager import PeerManager
from agent.peers.spec import PeerSpec
from agent.peers.store import PeerStore
from agent.vpp.client import VppClient
from agent.vpp.readers import VppSummary
from tests.spec_factory import TEST_PSK, example_spec

REPO = Path(__file__).resolve().parents[2]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


class Device:
    """What the daemon wires: manager + VPP client behind ManagerBackend + AdminServer."""

    def __init__(self, sim: VppSim, short_dir: Path) -> None:
        self.vpp = VppClient(str(sim.socket_path), call_timeout=2.0, backoff_min=0.05,
                             backoff_max=0.2)
        self.store = PeerStore(short_dir / "state")
        self.manager = PeerManager(self.vpp, self.store, {}, sa_init_timeout=5.0,
                                   reinit_backoff_min=0.05)
        self.manager.load()
        self.vpp.add_connect_listener(self.manager.on_vpp_connect)
        self.levels: list[str] = []
        self.jobs = [{"jobid": "41", "message": "add-tunnel", "ok": True, "reply": "success",
                      "recorded_at": 1717000000.0}]
        self.backend = ManagerBackend(self.manager, self.vpp, jobs=lambda n: self.jobs[:n],
                                      apply_log_level=self.levels.append)
        self.socket = short_dir / "admin.sock"
        self.server = AdminServer(self.backend, self.socket)

    async def start(self) -> None:
        await self.vpp.start()
        await self.vpp.wait_connected(5)
        await until(lambda: self.manager.in_sync)
        await self.server.start()

    async def close(self) -> None:
        await self.server.stop()
        await self.vpp.close()
        self.store.close()


@pytest.fixture
async def device(sim: VppSim, short_dir: Path) -> AsyncIterator[Device]:
    d = Device(sim, short_dir)
    await d.start()
    try:
        yield d
    finally:
        await d.close()


async def peer_up(device: Device) -> None:
    await device.manager.apply([AddPeer(example_spec())])
    deadline = time.monotonic() + 5
    while device.manager.states[7].status != "up":
        assert time.monotonic() < deadline, device.manager.states[7]
        await device.manager.supervise_once()
        await asyncio.sleep(0.02)


async def peerctl(*argv: str) -> tuple[int, str, str]:
    """peerctl's main() on a thread (it runs its own event loop), output captured."""
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


async def raw_exchange(path: Path, payload: bytes, answers: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(payload)
        await writer.drain()
        return [await asyncio.wait_for(reader.readline(), 5) for _ in range(answers)]
    finally:
        writer.close()


async def test_socket_is_0600_and_owned_by_the_daemon(device: Device) -> None:
    st = os.stat(device.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


async def test_show_peers_table_and_json(device: Device) -> None:
    await peer_up(device)
    rc, out, err = await peerctl("--socket", str(device.socket), "show", "peers")
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "REMOTE", "IKE", "CHILD", "SPIS", "UPTIME", "RTT",
                                "JITTER", "DROP", "STATUS", "REASON"]
    cells = lines[1].split(maxsplit=11)
    assert cells[:5] == ["7", "peer-7", "203.0.113.10", "AUTHENTICATED", "1"]
    assert re.fullmatch(r"[0-9a-f]{8}/[0-9a-f]{8}", cells[5]), cells
    assert cells[10] == "up"
    rc, out, _ = await peerctl("--socket", str(device.socket), "--json", "show", "peers")
    data = json.loads(out)
    assert rc == 0 and len(data) == 1
    assert data[0]["tunnel_id"] == 7 and data[0]["status"] == "up"
    assert data[0]["remote_id"] == "gw.cloud.example"


async def test_ikev2_profile_psk_is_masked_on_the_wire_unless_asked(device: Device) -> None:
    await peer_up(device)
    sock = device.socket
    raw = await raw_exchange(sock, proto.request(proto.VPP, {"command": "show ikev2 profile"}))
    assert TEST_PSK.encode() not in raw[0]
    assert b"auth data ******" in raw[0]
    rc, out, _ = await peerctl("--socket", str(sock), "show", "ikev2", "profile")
    assert rc == 0
    assert "  auth-method shared-key-mic auth data ******\n" in out
    assert TEST_PSK not in out
    rc, out, _ = await peerctl("--socket", str(sock), "show", "ikev2", "profile",
                               "--show-secrets")
    assert rc == 0
    assert f"  auth-method shared-key-mic auth data {TEST_PSK}\n" in out


async def test_sa_details_keys_are_masked_unless_asked(sim: VppSim, device: Device) -> None:
    await peer_up(device)
    sa = next(iter(sim.state.sas.values()))
    keys = [k.hex() for k in sa.keys.values()]
    child_keys = [k.hex() for c in sa.children for k in c.keys.values() if k]
    assert keys and child_keys
    rc, out, _ = await peerctl("--socket", str(device.socket), "show", "ikev2", "sa", "details")
    assert rc == 0
    assert "state: AUTHENTICATED" in out and "SK_d    ******" in out
    assert not [k for k in keys + child_keys if k in out]
    assert sa.nonces[0].hex() in out  # nonces are public
    rc, out, _ = await peerctl("--socket", str(device.socket), "--show-secrets",
                               "show", "ikev2", "sa", "details")
    assert rc == 0
    assert all(k in out for k in keys + child_keys)


async def test_peer_export_through_the_socket(device: Device) -> None:
    await peer_up(device)
    sock = str(device.socket)
    rc, out, _ = await peerctl("--socket", sock, "peer", "export", "7")
    assert rc == 0 and out == render_swanctl(example_spec())
    assert TEST_PSK not in out
    rc, out, _ = await peerctl("--socket", sock, "peer", "export", "7", "--show-secrets")
    assert rc == 0 and out == render_swanctl(example_spec(), show_secrets=True)
    rc, out, _ = await peerctl("--socket", sock, "peer", "export", "7", "--format", "text")
    assert rc == 0 and out == render_sheet(example_spec())
    rc, out, err = await peerctl("--socket", sock, "peer", "export", "99")
    assert (rc, out) == (1, "")
    assert err == ("peerctl: unknown peer: tunnel 99 is not configured "
                   "(configured tunnels: 7)\n")


async def test_vpp_passthrough_and_its_errors(device: Device) -> None:
    sock = str(device.socket)
    rc, out, _ = await peerctl("--socket", sock, "vpp", "show", "version")
    assert rc == 0 and out.startswith("vpp v26.06-release")
    rc, out, err = await peerctl("--socket", sock, "vpp", "show", "bogus")
    assert (rc, out) == (1, "")
    assert err == "peerctl: VPP refused the command: unknown input `bogus'\n"



async def test_seed_ike_logging_commands_are_translated_for_vpp_26_06(sim: VppSim,
                                                                  device: Device) -> None:
    """VPP 26.06 lost `ikev2 set logging level` and IKE's event-logger output: the
    seed's spellings run their vlib-logging equivalents and say so."""
    sock = str(device.socket)
    rc, out, _ = await peerctl("--socket", sock, "ikev2", "set", "logging", "level", "4")
    assert rc == 0
    assert "ran 'set logging class ikev2 level debug' instead" in out
    sim.state.log("ispi 1 IKE_INIT request received")  # a debug message of the plugin
    rc, out, _ = await peerctl("--socket", sock, "show", "event-logger")
    assert rc == 0 and "ran 'show logging' instead" in out
    assert any(ln.split()[2:5] == ["debug", "ikev2", "ispi"] for ln in out.splitlines())
    rc, out, _ = await peerctl("--socket", sock, "event-logger", "clear")
    assert rc == 0 and "ran 'clear logging' instead" in out
    rc, out, _ = await peerctl("--socket", sock, "vpp", "show", "logging")
    assert "IKE_INIT" not in out


async def test_show_vpp_jobs_and_log_level(device: Device) -> None:
    sock = str(device.socket)
    rc, out, _ = await peerctl("--socket", sock, "show", "vpp")
    assert rc == 0
    assert out.startswith("VPP version 26.06-release")
    assert "all messages the agent needs are present" in out
    rc, out, _ = await peerctl("--socket", sock, "show", "jobs")
    assert rc == 0 and "41   add-tunnel  ok      2024-05-29T16:26:40Z  success\n" in out
    rc, out, _ = await peerctl("--socket", sock, "log", "level", "debug")
    assert (rc, out) == (0, "log level debug\n")
    assert device.levels == ["debug"]
    rc, out, _ = await peerctl("--socket", sock, "log", "level")
    assert (rc, out) == (0, "log level debug\n")


async def test_daemon_not_running_is_one_clear_line(short_dir: Path) -> None:
    missing = short_dir / "nothing.sock"
    rc, out, err = await peerctl("--socket", str(missing), "show", "peers")
    assert (rc, out) == (1, "")
    assert err == (f"peerctl: cannot reach the agent: {missing} does not exist "
                   "(is peering-agent running? see --config / --socket)\n")
    dead = short_dir / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))  # bound, never listening: what a crashed daemon leaves
    s.close()
    rc, _, err = await peerctl("--socket", str(dead), "show", "peers")
    assert rc == 1 and "nothing listens on" in err and err.count("\n") == 1


async def test_real_peerctl_process_uses_the_config_file(device: Device,
                                                         short_dir: Path) -> None:
    cfg = short_dir / "agent.toml"
    cfg.write_text(f'[admin]\nsocket = "{device.socket}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERING_AGENT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.admin.peerctl", "--config", str(cfg), "show", "peers",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out, err) == (0, b"no peers configured\n", b"")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.admin.peerctl", "--config", str(cfg), "show", "tunnels",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert err.startswith(b"peerctl: unknown command 'show tunnels'") and err.count(b"\n") == 1


async def test_bad_input_never_breaks_the_server(device: Device) -> None:
    sock = device.socket
    answers = await raw_exchange(
        sock,
        b"not json\n[1,2]\n" + proto.request("reboot") + proto.request(proto.VPP, {})
        + proto.request(proto.PEER_EXPORT, {"tunnel_id": "7"}) + b"\xff\xfe\n"
        + proto.request(proto.SHOW_PEERS),
        answers=7)
    parsed = [json.loads(a) for a in answers]
    assert [p["ok"] for p in parsed] == [False] * 6 + [True]
    assert parsed[0]["error"] == "malformed request: not a JSON object on one line"
    assert parsed[2]["error"].startswith("unknown command 'reboot'")
    assert parsed[3]["error"] == '"command" must be a non-empty string'
    assert all("\n" not in p["error"] for p in parsed[:6])
    huge = b'{"cmd": "show peers", "args": {"x": "' + b"a" * proto.MAX_REQUEST + b'"}}\n'
    (answer,) = await raw_exchange(sock, huge)
    assert json.loads(answer) == {
        "ok": False, "error": f"request too large (limit {proto.MAX_REQUEST} bytes)"}
    assert await call(sock, proto.SHOW_PEERS) == []


class SlowBackend:
    """A fake backend whose VPP never answers."""

    def peers(self) -> list[PeerView]:
        return []

    def spec(self, tunnel_id: int) -> PeerSpec | None:
        return None

    async def vpp_cli(self, cmd: str) -> str:
        await asyncio.sleep(3600)
        return ""

    async def vpp_summary(self) -> VppSummary:
        raise AdminError("no VPP here")

    def recent_jobs(self, limit: int) -> list[dict[str, Any]]:
        raise RuntimeError("journal exploded")

    def log_level(self) -> str:
        return "info"

    def set_log_level(self, level: str) -> None:
        raise AdminError("nope")


async def test_request_deadline_internal_errors_and_uid_check(short_dir: Path) -> None:
    server = AdminServer(SlowBackend(), short_dir / "a.sock", request_timeout=0.2)
    await server.start()
    try:
        with pytest.raises(AdminRequestError, match=r"^'vpp' did not finish within 0.2 s$"):
            await call(server.socket_path, proto.VPP, {"command": "show version"})
        with pytest.raises(AdminRequestError, match=r"internal error while running 'show jobs'"
                                                    r" \(RuntimeError\); see the agent's log"):
            await call(server.socket_path, proto.SHOW_JOBS)
        assert await call(server.socket_path, proto.SHOW_PEERS) == []
    finally:
        await server.stop()
    assert not server.socket_path.exists()
    strict = AdminServer(SlowBackend(), short_dir / "b.sock", allowed_uids=frozenset({12345}))
    await strict.start()
    try:
        with pytest.raises(AdminRequestError,
                           match=f"permission denied: the admin socket serves root only "
                                 f"\\(you are uid {os.geteuid()}\\)"):
            await call(strict.socket_path, proto.SHOW_PEERS)
    finally:
        await strict.stop()


async def test_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not(
        short_dir: Path) -> None:
    path = short_dir / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    first = AdminServer(SlowBackend(), path)
    await first.start()
    try:
        assert await call(path, proto.SHOW_PEERS) == []
        with pytest.raises(AdminError, match="is in use: is another agent running"):
            await AdminServer(SlowBackend(), path).start()
    finally:
        await first.stop()
    regular = short_dir / "file"
    regular.write_text("x")
    with pytest.raises(AdminError, match="exists and is not a socket"):
        await AdminServer(SlowBackend(), regular).start()
    assert regular.read_text() == "x"


async def test_idle_connections_do_not_lock_out_peerctl(device: Device) -> None:
    """16 idle admin connections (the limit), kept at 16 by re-opening: peerctl still works."""
    idle = [await asyncio.open_unix_connection(str(device.socket)) for _ in range(16)]
    try:
        await until(lambda: len(device.server._tasks) == 16)
        for _ in range(5):
            rc, _, err = await peerctl("--socket", str(device.socket), "show", "jobs")
            assert (rc, err) == (0, ""), err
            idle.append(await asyncio.open_unix_connection(str(device.socket)))
    finally:
        for _, w in idle:
            w.close()


async def test_peerctl_vpp_is_read_only_unless_forced(sim: VppSim, device: Device) -> None:
    sock = str(device.socket)
    rc, out, err = await peerctl("--socket", sock, "vpp", "set", "interface", "state",
                                 "GigabitEthernet0/3/0", "down")
    assert rc == 1 and "only read-only VPP commands (show ...) pass without --force" in err
    assert sim.state.interfaces[1].flags & 1  # still admin-up
    rc, out, _ = await peerctl("--socket", sock, "vpp", "sh", "version")
    assert rc == 0 and "vpp" in out.lower()
    rc, _, err = await peerctl("--socket", sock, "ikev2", "set", "logging", "level", "4")
    assert rc == 0, err
    # forced, it reaches VPP (vppsim's CLI does not implement it and says so)
    rc, _, err = await peerctl("--socket", sock, "--force", "vpp", "set", "interface", "state",
                               "GigabitEthernet0/3/0", "down")
    assert "VPP refused the command: unknown input" in err
