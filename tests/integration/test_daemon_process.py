"""`peering-agent run` as systemd runs it: a process, a notify socket, a watchdog, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.lab.controller_double import ControllerDouble
from agent.lab.vppsim.server import VppSim
from tests.conftest import WAN

ROOT = Path(__file__).resolve().parents[2]
MACHINE = "3f1c0000-0000-4000-8000-0000000da3e0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def datagrams_until(sock: socket.socket, wanted: str, got: list[str],
                          timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while not any(wanted in d for d in got):
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} within {timeout} s; got {got}"
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
        got.append(data.decode())


def write_config(short_dir: Path, ctl: ControllerDouble, api_socket: Path,
                 port: int) -> Path:
    token = short_dir / "device.token"
    token.write_text("daemon-token")
    token.chmod(0o600)
    config = short_dir / "agent.toml"
    config.write_text(f"""
[controller]
url = "{ctl.url}"
machine_id = "{MACHINE}"
token_file = "{token}"
allow_insecure = true
[vpp]
api_socket = "{api_socket}"
[state]
dir = "{short_dir / 'state'}"
[admin]
socket = "{short_dir / 'admin.sock'}"
[metrics]
listen = "127.0.0.1:{port}"
""")
    return config


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    ctl: ControllerDouble
    notify: socket.socket
    port: int


@contextlib.asynccontextmanager
async def daemon(short_dir: Path, api_socket: Path,
                 env: dict[str, str] | None = None) -> AsyncIterator[Daemon]:
    """`peering-agent run` with a controller double and a notify socket of its own."""
    ctl = ControllerDouble(machine_id=MACHINE, stats_interval=None)
    await ctl.start()
    port = free_port()
    config = write_config(short_dir, ctl, api_socket, port)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(short_dir / "notify"))
    notify.setblocking(False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.main", "run", "--config", str(config), cwd=ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(short_dir / "notify"), **(env or {})},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield Daemon(proc, ctl, notify, port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()
        await ctl.stop()


async def test_daemon_notifies_ready_pings_watchdog_serves_metrics_and_stops_cleanly(
        sim: VppSim, short_dir: Path) -> None:
    async with daemon(short_dir, sim.socket_path, {"WATCHDOG_USEC": "600000"}) as d:
        got: list[str] = []
        await datagrams_until(d.notify, "READY=1", got, 20)
        assert sim.message_counts["sockclnt_create"] >= 1  # READY only after VPP
        await d.ctl.wait_connected(10)
        got.clear()
        await datagrams_until(d.notify, "WATCHDOG=1", got, 5)  # every 0.3 s
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=5)
            .read().decode())
        assert "peering_agent_vpp_connected 1.0\n" in body
        # the daemon wires the controller link's and the probe engine's counters in
        assert "# TYPE peering_agent_link_connections_total counter\n" in body
        assert "# TYPE peering_agent_probe_sent_total counter\n" in body
        d.proc.send_signal(signal.SIGTERM)
        await datagrams_until(d.notify, "STOPPING=1", got, 10)
        assert await asyncio.wait_for(d.proc.wait(), 10) == 0
    assert not (short_dir / "admin.sock").exists()


async def test_while_vpp_is_down_start_up_is_extended_and_the_controller_link_is_up(
        short_dir: Path) -> None:
    """A VPP that is not up at boot must not get the agent killed by TimeoutStartSec
    (and its controller link dropped) every two minutes: the agent extends its start
    and says what it waits for; READY follows once VPP answers."""
    api_socket = short_dir / "vpp-api.sock"
    sim = VppSim(api_socket, interfaces=[WAN])
    try:
        async with daemon(short_dir, api_socket) as d:
            got: list[str] = []
            await datagrams_until(d.notify, "EXTEND_TIMEOUT_USEC=", got, 20)
            await datagrams_until(d.notify, f"STATUS=waiting for VPP at {api_socket}", got, 5)
            await d.ctl.wait_connected(10)  # the controller's tabs work meanwhile
            assert not any("READY=1" in g for g in got)
            await sim.start()
            await datagrams_until(d.notify, "READY=1", got, 30)
            d.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(d.proc.wait(), 10) == 0
    finally:
        await sim.stop()
