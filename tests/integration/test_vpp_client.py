"""The agent's VPP client against vppsim over a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from agent.vpp.client import FLUSH_FRAMES, ConnectInfo, VppClient, decode_ikev2_id
from agent.vpp.errors import VppApiError, VppMissingMessage, VppTimeout, VppUnavailable
from tests.conftest import WAN
from tests.waiting import until

PSK = b"Integration-PSK-never-logged"


@contextlib.asynccontextmanager
async def connected(path: Path, **kwargs: Any) -> AsyncIterator[VppClient]:
    client = VppClient(str(path), **kwargs)
    await client.start()
    try:
        await client.wait_connected(5)
        yield client
    finally:
        await client.close()



async def program_peer(vpp: VppClient) -> int:
    tun = await vpp.call("ipip_add_tunnel", tunnel={
        "instance": 7, "src": "192.168.1.10", "dst": "203.0.113.10", "table_id": 0,
        "flags": 0, "mode": 0, "dscp": 0})
    sw = int(tun.sw_if_index)
    await vpp.call("sw_interface_add_del_address", sw_if_index=sw, is_add=True,
                   prefix="10.100.0.16/31")
    name = "peer-7"
    await vpp.call("ikev2_profile_add_del", name=name, is_add=True)
    await vpp.call("ikev2_profile_set_auth", name=name, auth_method=2, is_hex=False,
                   data_len=len(PSK), data=PSK)
    ip4 = IPv4Address("198.51.100.7").packed
    await vpp.call("ikev2_profile_set_id", name=name, is_local=True, id_type=1,
                   data_len=4, data=ip4)
    await vpp.call("ikev2_profile_set_id", name=name, is_local=False, id_type=2,
                   data_len=16, data=b"gw.cloud.example")
    for local in (True, False):
        await vpp.call("ikev2_profile_set_ts", name=name, ts={
            "is_local": local, "protocol_id": 0, "start_port": 0, "end_port": 65535,
            "start_addr": "0.0.0.0", "end_addr": "255.255.255.255"})
    await vpp.call("ikev2_set_ike_transforms", name=name, tr={
        "crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12, "prf_alg": 5, "dh_group": 14})
    await vpp.call("ikev2_set_esp_transforms", name=name, tr={
        "crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12})
    await vpp.call("ikev2_set_sa_lifetime", name=name, lifetime=3600, lifetime_jitter=10,
                   handover=5, lifetime_maxdata=0)
    await vpp.call("ikev2_set_tunnel_interface", name=name, sw_if_index=sw)
    await vpp.call("ikev2_set_responder", name=name,
                   responder={"sw_if_index": 1, "addr": "203.0.113.10"})
    await vpp.call("ikev2_initiate_sa_init", name=name)
    return sw


async def test_programs_and_reads_back_a_peer_with_an_ip4_identity(sim: VppSim) -> None:
    async with connected(sim.socket_path) as vpp:
        sw = await program_peer(vpp)
        (profile,) = await vpp.dump("ikev2_profile_dump")
        p = profile.profile
        # papi's own decoder fails on these raw bytes; ours yields the address
        assert decode_ikev2_id(p.loc_id) == (1, "198.51.100.7")
        assert decode_ikev2_id(p.rem_id) == (2, "gw.cloud.example")
        assert int(p.tun_itf) == sw
        async def up() -> bool:
            sas = await vpp.dump("ikev2_sa_v2_dump")
            return bool(sas) and int(sas[0].sa.state) == 4
        deadline = time.monotonic() + 5
        while not await up():
            assert time.monotonic() < deadline, "SA never reached AUTHENTICATED"
            await asyncio.sleep(0.01)
        (sa,) = await vpp.dump("ikev2_sa_v2_dump")
        assert decode_ikev2_id(sa.sa.i_id) == (1, "198.51.100.7")
        children = await vpp.dump("ikev2_child_sa_dump", sa_index=sa.sa.sa_index)
        assert len(children) == 1
        text = await vpp.cli("show ikev2 profile")
        assert "profile peer-7" in text and "198.51.100.7" in text


async def test_agent_messages_use_the_compiled_codec_and_batched_writes(sim: VppSim) -> None:
    async with connected(sim.socket_path) as vpp:
        stats = vpp.codec_stats
        packed, unpacked = stats.packed, stats.unpacked
        await program_peer(vpp)
        (profile,) = await vpp.dump("ikev2_profile_dump")
        assert decode_ikev2_id(profile.profile.loc_id) == (1, "198.51.100.7")
        assert stats.packed - packed == 14 + 2  # the peer, the dump and its ping
        assert stats.unpacked - unpacked == 14 + 2  # replies, the details, the ping reply
        assert (stats.pack_fallbacks, stats.unpack_fallbacks) == (0, 0)
        # a value the codec refuses goes to papi, which raises its own error
        with pytest.raises(ValueError, match="Exception while packing"):
            await vpp.call("sw_interface_set_flags", sw_if_index="one", flags=1)
        assert stats.pack_fallbacks == 1
        # 200 calls made in one loop iteration leave in writes of FLUSH_FRAMES frames
        writes, frames = vpp.io.writes, vpp.io.frames_out
        replies = await asyncio.gather(*(vpp.call("show_version") for _ in range(200)))
        assert {str(r.version) for r in replies} == {str(replies[0].version)}
        assert vpp.io.frames_out - frames == 200
        assert vpp.io.writes - writes == math.ceil(200 / FLUSH_FRAMES)
        assert vpp.io.reads <= vpp.io.frames_in


async def test_vpp_errors_surface_with_their_codes(sim: VppSim) -> None:
    async with connected(sim.socket_path) as vpp:
        await vpp.call("ikev2_profile_add_del", name="p", is_add=True)
        with pytest.raises(VppApiError) as e:
            await vpp.call("ikev2_profile_add_del", name="p", is_add=True)
        assert e.value.retval == -1
        with pytest.raises(VppApiError, match="INVALID_SW_IF_INDEX"):
            await vpp.call("ikev2_set_tunnel_interface", name="p", sw_if_index=999)
        reply = await vpp.call("ikev2_set_tunnel_interface", name="p", sw_if_index=999,
                               _check=False)
        assert reply.retval == -2
        with pytest.raises(ValueError, match="no field"):
            await vpp.call("ikev2_profile_add_del", name="p", bogus=1)


async def test_events_and_many_pipelined_calls_do_not_break_it(sim: VppSim) -> None:
    events: list[str] = []
    async with connected(sim.socket_path) as vpp:
        vpp.add_event_listener(lambda name, msg: events.append(name))
        await vpp.call("want_interface_events", enable_disable=True, pid=os.getpid())
        await vpp.call("sw_interface_set_flags", sw_if_index=1, flags=0)
        await vpp.call("sw_interface_set_flags", sw_if_index=1, flags=1)
        await until(lambda: len(events) >= 2)
        assert set(events) == {"sw_interface_event"}
        replies = await asyncio.gather(*(vpp.call("show_version") for _ in range(500)))
        assert {r.version for r in replies} == {replies[0].version}
        assert len(await vpp.dump("sw_interface_dump", sw_if_index=0xFFFFFFFF)) == 2


async def test_missing_message_is_named_at_connect(short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN],
                 omit_messages=["ikev2_initiate_sa_init"])
    await sim.start()
    try:
        async with connected(sim.socket_path) as vpp:
            assert vpp.table_check.missing == {
                "ikev2_initiate_sa_init":
                    "ikev2_initiate_sa_init missing: is ikev2_plugin.so enabled?"}
            with pytest.raises(VppMissingMessage, match="is ikev2_plugin.so enabled"):
                await vpp.call("ikev2_initiate_sa_init", name="x")
            assert (await vpp.call("show_version")).retval == 0
    finally:
        await sim.stop()


async def test_unanswered_call_fails_at_its_deadline(short_dir: Path) -> None:
    """A VPP that accepts but stops answering: the call ends at its deadline."""
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    try:
        async with connected(sim.socket_path, call_timeout=0.3) as vpp:
            sim.handlers.table.pop("show_version")  # vppsim now drops this request
            start = time.monotonic()
            with pytest.raises(VppTimeout, match="show_version within 0.3 s"):
                await vpp.call("show_version")
            assert time.monotonic() - start < 1.0
            assert (await vpp.call("ikev2_plugin_get_version")).major >= 1
    finally:
        await sim.stop()


async def test_each_call_keeps_its_own_deadline(short_dir: Path) -> None:
    """One timer serves all deadlines: a short call made after a long one still ends
    at its own deadline, and the long one at its own."""
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    try:
        async with connected(sim.socket_path, call_timeout=5) as vpp:
            sim.handlers.table.pop("show_version")  # vppsim now drops this request
            loop = asyncio.get_running_loop()
            start = loop.time()

            async def timed(timeout: float) -> float:
                with pytest.raises(VppTimeout, match=f"within {timeout:g} s"):
                    await vpp.call("show_version", _timeout=timeout)
                return loop.time() - start

            long_call = asyncio.create_task(timed(1.2))
            await asyncio.sleep(0)  # the long call is in flight first
            short = await timed(0.3)
            assert 0.3 <= short < 0.9
            assert 1.2 <= await long_call < 2.5
            # answered calls leave nothing behind to expire
            assert (await vpp.call("ikev2_plugin_get_version", _timeout=0.5)).major >= 1
    finally:
        await sim.stop()


def _start_vppsim(sock: Path) -> subprocess.Popen[bytes]:
    ready = sock.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.lab.vppsim", "--socket", str(sock),
         "--interface", f"{WAN[0]}={WAN[1]}", "--ready-file", str(ready),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("vppsim did not start")
        time.sleep(0.02)
    return proc


async def test_vpp_killed_during_calls_then_restarted(short_dir: Path) -> None:
    sock = short_dir / "api.sock"
    proc = _start_vppsim(sock)
    infos: list[ConnectInfo] = []
    client = VppClient(str(sock), call_timeout=2.0, backoff_min=0.05, backoff_max=0.2)

    async def on_connect(info: ConnectInfo) -> None:
        infos.append(info)

    client.add_connect_listener(on_connect)
    await client.start()
    try:
        await client.wait_connected(5)
        await until(lambda: len(infos) == 1)
        assert not infos[0].reconnected
        await program_peer(client)
        calls = [asyncio.ensure_future(client.dump("sw_interface_dump", sw_if_index=0xFFFFFFFF))
                 for _ in range(200)]
        proc.send_signal(signal.SIGKILL)
        start = time.monotonic()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert time.monotonic() - start < 2.0 + 0.5
        failures = [r for r in results if isinstance(r, Exception)]
        assert all(isinstance(f, (VppUnavailable, VppTimeout)) for f in failures)
        await until(lambda: not client.connected)
        start = time.monotonic()
        with pytest.raises(VppUnavailable, match="not connected"):
            await client.call("show_version")
        assert time.monotonic() - start < 0.1  # fails fast while VPP is away
        proc.wait()
        proc = _start_vppsim(sock)
        await client.wait_connected(5)
        await until(lambda: len(infos) == 2)
        assert infos[1].reconnected and infos[1].generation == 2
        # the restarted VPP lost its state, as a real restart does
        assert await client.dump("ikev2_profile_dump") == []
    finally:
        await client.close()
        proc.kill()
        proc.wait()


async def test_debug_log_of_calls_redacts_the_psk(sim: VppSim) -> None:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    try:
        async with connected(sim.socket_path) as vpp:
            await program_peer(vpp)
    finally:
        configure_logging("warning", json=True, stream=sys.stderr)
    text = out.getvalue()
    assert "ikev2_profile_set_auth" in text
    assert PSK.decode() not in text and repr(PSK) not in text


async def test_a_log_level_change_at_run_time_reaches_the_client(sim: VppSim) -> None:
    """`peerctl log level debug` on a running agent must show the VPP calls."""
    configure_logging("info", json=True, stream=io.StringIO())
    async with connected(sim.socket_path) as vpp:
        out = io.StringIO()
        configure_logging("debug", json=True, stream=out)
        try:
            await vpp.call("show_version")
        finally:
            configure_logging("warning", json=True, stream=sys.stderr)
    assert '"message": "show_version"' in out.getvalue()


class Outcomes:
    """What `submit` handed its callback, in arrival order."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, BaseException | None]] = []

    def __call__(self, reply: Any, error: BaseException | None) -> None:
        self.got.append((reply, error))


async def test_submit_hands_replies_unchecked_to_the_callback(sim: VppSim) -> None:
    async with connected(sim.socket_path) as vpp:
        out = Outcomes()
        vpp.submit("ikev2_profile_add_del", {"name": "p", "is_add": True}, out)
        vpp.submit("ikev2_profile_add_del", {"name": "p", "is_add": True}, out)
        assert out.got == []  # sent, not answered yet: submit does not wait
        await until(lambda: len(out.got) == 2)
        (first, e1), (second, e2) = out.got
        assert (first.retval, e1, second.retval, e2) == (0, None, -1, None)
        # what keeps a request from being sent raises at once, and nothing is left pending
        with pytest.raises(ValueError, match="no field"):
            vpp.submit("ikev2_profile_add_del", {"name": "p", "bogus": 1}, out)
        with pytest.raises(ValueError, match="is a dump"):
            vpp.submit("sw_interface_dump", {"sw_if_index": 0xFFFFFFFF}, out)
        assert vpp._live().pending == {}


async def test_submit_reports_a_deadline_and_survives_a_failing_callback(
        short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    try:
        async with connected(sim.socket_path, call_timeout=0.3) as vpp:
            sim.handlers.table.pop("show_version")  # vppsim now drops this request
            out = Outcomes()

            def broken(reply: Any, error: BaseException | None) -> None:
                raise RuntimeError("a buggy callback")

            vpp.submit("show_version", {}, broken)
            vpp.submit("show_version", {}, out)
            await until(lambda: len(out.got) == 1, timeout=2)
            [(reply, error)] = out.got
            assert reply is None and isinstance(error, VppTimeout)
            # the broken callback cost nothing else: the connection still answers
            assert (await vpp.call("ikev2_plugin_get_version")).major >= 1
    finally:
        await sim.stop()


async def test_submit_reports_a_lost_connection(short_dir: Path) -> None:
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    async with connected(sim.socket_path, call_timeout=5.0) as vpp:
        sim.handlers.table.pop("show_version")  # unanswered until the connection drops
        out = Outcomes()
        for _ in range(50):
            vpp.submit("show_version", {}, out)
        await sim.stop()
        await until(lambda: len(out.got) == 50, timeout=3)  # well before the deadline
        assert all(r is None and isinstance(e, VppUnavailable) for r, e in out.got)


async def test_a_callback_may_call_again_while_the_connection_is_being_lost(
        short_dir: Path) -> None:
    """Callbacks run at once, inside the connection's own bookkeeping: one that answers
    a lost call with another call must not upset the others' delivery."""
    sim = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await sim.start()
    async with connected(sim.socket_path, call_timeout=5.0) as vpp:
        sim.handlers.table.pop("show_version")  # unanswered until the connection drops
        out = Outcomes()
        again: list[BaseException] = []

        def retry(reply: Any, error: BaseException | None) -> None:
            out(reply, error)
            try:
                vpp.submit("show_version", {}, out)
            except Exception as e:  # what a caller sees when it can no longer send
                again.append(e)

        for _ in range(50):
            vpp.submit("show_version", {}, retry)
        await sim.stop()
        await until(lambda: len(out.got) >= 50, timeout=3)
        first = out.got[:50]
        assert all(r is None and isinstance(e, VppUnavailable) for r, e in first)
        await until(lambda: len(out.got) + len(again) == 100, timeout=3)
