"""VPP's error codes and IKE/state semantics, over the wire with a raw client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from vppsim_helpers import WAN, wait_for
from vppsim_rawclient import RawClient

from agent.lab.vppsim.server import VppSim
from agent.lab.vppsim.state import swap32, swap64
from agent.vpp.client import VppClient
from agent.vpp.errors import VppError
from agent.vpp.readers import read_sas

TUN = {
    "instance": 0xFFFFFFFF,
    "src": "192.168.1.10",
    "dst": "203.0.113.1",
    "table_id": 0,
    "mode": 0,
}


async def call(c: RawClient, msg: str, /, **fields: Any) -> Any:
    c.send(msg, context=7, **fields)
    return await c.recv()


async def dump(c: RawClient, msg: str, /, **fields: Any) -> list[Any]:
    c.send(msg, context=9, **fields)
    c.send("control_ping", context=9)
    out = []
    while True:
        m = await c.recv()
        if type(m).__name__ == "control_ping_reply":
            return out
        out.append(m)


@pytest.fixture
async def raw(sim: VppSim) -> Any:
    c = RawClient(sim.catalog)
    await c.connect(str(sim.socket_path))
    yield c
    await c.close()


async def complete_profile(c: RawClient, name: str, tunnel: int = 2) -> None:
    ts = {
        "protocol_id": 0,
        "start_port": 0,
        "end_port": 65535,
        "start_addr": "0.0.0.0",
        "end_addr": "255.255.255.255",
    }
    calls: list[tuple[str, dict[str, Any]]] = [
        ("ikev2_profile_add_del", {"name": name, "is_add": True}),
        ("ikev2_profile_set_auth", {"name": name, "auth_method": 2, "data_len": 3, "data": b"psk"}),
        (
            "ikev2_profile_set_id",
            {"name": name, "is_local": True, "id_type": 2, "data_len": 1, "data": b"a"},
        ),
        (
            "ikev2_profile_set_id",
            {"name": name, "is_local": False, "id_type": 2, "data_len": 1, "data": b"b"},
        ),
        ("ikev2_profile_set_ts", {"name": name, "ts": ts | {"is_local": True}}),
        ("ikev2_profile_set_ts", {"name": name, "ts": ts | {"is_local": False}}),
        (
            "ikev2_set_ike_transforms",
            {
                "name": name,
                "tr": {
                    "crypto_alg": 12,
                    "crypto_key_size": 256,
                    "integ_alg": 12,
                    "prf_alg": 5,
                    "dh_group": 14,
                },
            },
        ),
        (
            "ikev2_set_esp_transforms",
            {"name": name, "tr": {"crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12}},
        ),
        ("ikev2_set_tunnel_interface", {"name": name, "sw_if_index": tunnel}),
        (
            "ikev2_set_responder",
            {"name": name, "responder": {"sw_if_index": 1, "addr": "203.0.113.1"}},
        ),
    ]
    for n, f in calls:
        assert (await call(c, n, **f)).retval == 0, n


async def test_error_codes(sim: VppSim, raw: RawClient) -> None:
    first = await call(raw, "ipip_add_tunnel", tunnel=TUN)
    assert (first.retval, first.sw_if_index) == (0, 2)
    dup = await call(raw, "ipip_add_tunnel", tunnel=TUN)
    assert (dup.retval, dup.sw_if_index) == (-79, 2)
    assert (await call(raw, "sw_interface_set_flags", sw_if_index=99, flags=1)).retval == -2
    assert (await call(raw, "ipip_del_tunnel", sw_if_index=99)).retval == -6
    assert (await call(raw, "ikev2_profile_add_del", name="p", is_add=True)).retval == 0
    assert (await call(raw, "ikev2_profile_add_del", name="p", is_add=True)).retval == -1
    assert (await call(raw, "ikev2_profile_add_del", name="q", is_add=False)).retval == -1
    assert (await call(raw, "ikev2_set_tunnel_interface", name="p", sw_if_index=99)).retval == -2
    assert (
        await call(
            raw, "ikev2_profile_set_id", name="p", is_local=True, id_type=9, data_len=1, data=b"x"
        )
    ).retval == -1
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == -1  # no responder
    assert (await call(raw, "ikev2_initiate_sa_init", name="nope")).retval == -1
    prefix = "10.0.0.0/31"
    ok = await call(raw, "sw_interface_add_del_address", sw_if_index=2, is_add=True, prefix=prefix)
    assert ok.retval == 0
    gone = await call(
        raw, "sw_interface_add_del_address", sw_if_index=2, is_add=False, prefix="10.9.9.9/32"
    )
    assert gone.retval == -60
    route = {
        "table_id": 0,
        "prefix": "10.20.0.0/16",
        "n_paths": 1,
        "paths": [
            {
                "sw_if_index": 2,
                "proto": 0,
                "nh": {"address": {"ip4": "0.0.0.0"}},
                "label_stack": [{} for _ in range(16)],
            }
        ],
    }
    # VPP 26.06 answers 0 to deleting an absent route
    assert (await call(raw, "ip_route_add_del", is_add=False, route=route)).retval == 0
    assert (await call(raw, "ip_route_add_del", is_add=True, route=route)).retval == 0
    routes = await dump(raw, "ip_route_dump", table={"table_id": 0})
    prefixes = {str(r.route.prefix) for r in routes}
    # the whole table, VPP's own routes too: special prefixes, the WAN's connected and
    # local routes, the tunnel address's /31, its own /32 and the other end's /32
    assert {"10.20.0.0/16", "0.0.0.0/0", "224.0.0.0/4", "192.168.1.0/24",
            "192.168.1.10/32", "10.0.0.0/31", "10.0.0.0/32", "10.0.0.1/32"} <= prefixes
    again = await call(raw, "sw_interface_add_del_address", sw_if_index=2, is_add=True,
                       prefix=prefix)
    assert again.retval == -105  # VPP 26.06: the same address twice is ADDRESS_IN_USE
    assert (
        await call(raw, "ip_route_add_del", is_add=True, route=route | {"table_id": 5})
    ).retval == -3
    tap = await call(
        raw,
        "lcp_itf_pair_add_del_v2",
        is_add=True,
        sw_if_index=2,
        host_if_name="t0",
        host_if_type=0,
    )
    assert tap.retval != 0
    tun = await call(
        raw,
        "lcp_itf_pair_add_del_v2",
        is_add=True,
        sw_if_index=2,
        host_if_name="t0",
        host_if_type=1,
    )
    assert tun.retval == 0
    raw.send("lcp_itf_pair_get", context=3, cursor=0xFFFFFFFF)
    details, reply = await raw.recv(), await raw.recv()
    assert (details.phy_sw_if_index, details.host_if_name, type(reply).__name__) == (
        2,
        "t0",
        "lcp_itf_pair_get_reply",
    )


async def test_unknown_cli_command(raw: RawClient) -> None:
    r = await call(raw, "cli_inband", cmd="frobnicate the widget")
    assert r.retval == -1 and r.reply == "unknown input `frobnicate the widget'\n"
    r = await call(raw, "cli_inband", cmd="show version")
    assert r.retval == 0 and r.reply.startswith("vpp v26.06")
    # VPP 26.06 has no `ikev2 set logging level`: IKE logs through vlib's log classes
    assert (await call(raw, "cli_inband", cmd="ikev2 set logging level 4")).retval == -1
    assert (await call(raw, "cli_inband", cmd="set logging class ikev2 level debug")).retval == 0
    r = await call(raw, "cli_inband", cmd="set logging class nosuch level debug")
    assert r.retval == -1 and r.reply.startswith("unknown log class")


@pytest.mark.parametrize(
    "outcome,state", [("AUTH_FAILED", 3), ("NO_PROPOSAL_CHOSEN", 7), ("TS_UNACCEPTABLE", 6)]
)
async def test_scripted_failures(sim: VppSim, raw: RawClient, outcome: str, state: int) -> None:
    assert (await call(raw, "ipip_add_tunnel", tunnel=TUN)).retval == 0
    await complete_profile(raw, "p")
    sim.ike.script("p", outcome)
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == 0

    async def failed() -> Any:
        sas = await dump(raw, "ikev2_sa_v2_dump")
        return sas if sas and sas[0].sa.state == state else None

    sas = await wait_for(failed)
    # as in VPP: the offered first child stays, never keyed; the responder's SPI is
    # there only when the peer chose a proposal (it narrowed the selectors)
    children = await dump(raw, "ikev2_child_sa_dump", sa_index=sas[0].sa.sa_index)
    assert [(c.child_sa.keys.sk_ei_len, bool(c.child_sa.r_spi)) for c in children] == [
        (0, outcome == "TS_UNACCEPTABLE")]
    assert sim.state.interfaces[2].admin_up is False
    await wait_for(lambda: not sim.state.sas)  # VPP cleans failed SAs up


async def test_timeout_outcome(sim: VppSim, raw: RawClient) -> None:
    assert (await call(raw, "ipip_add_tunnel", tunnel=TUN)).retval == 0
    await complete_profile(raw, "p")
    sim.ike.script("p", "timeout")
    # VPP 26.06: an initiation is in no dump until the peer answers, and an unanswered
    # one is retransmitted until its profile is deleted; each initiate adds another
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == 0
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == 0
    assert await dump(raw, "ikev2_sa_v2_dump") == []
    await asyncio.sleep(0.03)  # longer than the answer delay: still no answer
    assert await dump(raw, "ikev2_sa_v2_dump") == []
    assert len(sim.state.sas) == 2 and all(sa.hidden for sa in sim.state.sas.values())
    assert (await call(raw, "ikev2_profile_add_del", name="p", is_add=False)).retval == 0
    assert not sim.state.sas
    assert sim.state.interfaces[2].admin_up is False


async def test_interface_events_for_creation_admin_state_and_deletion(
        raw: RawClient) -> None:
    """As VPP's link_state_process: an event when an interface is made (flags 0), one
    per admin change, one with `deleted` when it goes; none once unregistered."""
    assert (await call(raw, "want_interface_events", enable_disable=1, pid=7)).retval == 0
    sw = (await call(raw, "ipip_add_tunnel", tunnel=TUN)).sw_if_index
    event = await raw.recv()
    assert (event.sw_if_index, int(event.flags), event.deleted) == (sw, 0, False)
    assert (await call(raw, "sw_interface_set_flags", sw_if_index=sw, flags=1)).retval == 0
    event = await raw.recv()
    assert (event.sw_if_index, int(event.flags) & 1, event.deleted) == (sw, 1, False)
    assert (await call(raw, "want_interface_events", enable_disable=0, pid=7)).retval == 0
    assert (await call(raw, "want_interface_events", enable_disable=0, pid=7)).retval == -31
    assert (await call(raw, "sw_interface_set_flags", sw_if_index=sw, flags=0)).retval == 0
    assert (await call(raw, "want_interface_events", enable_disable=1, pid=7)).retval == 0
    assert (await call(raw, "want_interface_events", enable_disable=1, pid=7)).retval == -31
    assert (await call(raw, "ipip_del_tunnel", sw_if_index=sw)).retval == 0
    event = await raw.recv()  # nothing was queued for the admin change while unregistered
    assert (event.sw_if_index, event.deleted) == (sw, True)


async def test_spi_byte_order_and_events(sim: VppSim, raw: RawClient) -> None:
    assert (await call(raw, "ipip_add_tunnel", tunnel=TUN)).retval == 0
    assert (await call(raw, "want_interface_events", enable_disable=1, pid=42)).retval == 0
    await complete_profile(raw, "p")
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == 0
    event = await raw.recv()  # tunnel admin-up when the child SA is installed
    assert (type(event).__name__, event.sw_if_index, int(event.flags), event.pid) == (
        "sw_interface_event",
        2,
        3,
        42,
    )
    assert not hasattr(event, "context")
    sa = (await dump(raw, "ikev2_sa_v3_dump"))[0].sa
    assert sa.state == 4 and sa.uptime >= 0
    child = (await dump(raw, "ikev2_child_sa_dump", sa_index=sa.sa_index))[0].child_sa
    # the dump's value as-is is not found; the byte-swapped value is
    assert (await call(raw, "ikev2_initiate_rekey_child_sa", ispi=child.i_spi)).retval == -1
    assert (await call(raw, "ikev2_initiate_rekey_child_sa", ispi=swap32(child.i_spi))).retval == 0
    new = (await dump(raw, "ikev2_child_sa_dump", sa_index=sa.sa_index))[0].child_sa
    assert new.i_spi != child.i_spi
    assert (await call(raw, "ikev2_initiate_del_child_sa", ispi=swap32(new.i_spi))).retval == 0
    event = await raw.recv()
    assert (event.sw_if_index, int(event.flags)) == (2, 0)
    assert (await call(raw, "ikev2_initiate_del_ike_sa", ispi=sa.ispi)).retval == -1
    assert (await call(raw, "ikev2_initiate_del_ike_sa", ispi=swap64(sa.ispi))).retval == 0
    assert await dump(raw, "ikev2_sa_v2_dump") == []
    # peer restart drops the SA and the tunnel goes down
    assert (await call(raw, "ikev2_initiate_sa_init", name="p")).retval == 0
    await wait_for(lambda: sim.state.interfaces[2].admin_up)
    assert sim.ike.peer_restart("p") == 1
    assert not sim.state.sas and not sim.state.interfaces[2].admin_up


async def test_wrong_client_index_is_executed_but_not_answered(
        sim: VppSim, raw: RawClient) -> None:
    # as VPP 26.06 does: the request takes effect, its reply is dropped
    raw.send("ikev2_profile_add_del", context=5, client_index=raw.index + 1, name="x", is_add=True)
    raw.send("show_version", context=6)
    reply = await raw.recv()
    assert (type(reply).__name__, reply.context) == ("show_version_reply", 6)
    assert "x" in sim.state.profiles


async def test_inject_failure_changes_nothing(sim: VppSim, raw: RawClient) -> None:
    before = sim.snapshot()
    sim.inject_failure("ipip_add_tunnel", retval=-79, after=1)
    writes = sim.write_count
    assert (await call(raw, "ipip_add_tunnel", tunnel=TUN)).retval == 0
    assert sim.write_count == writes + 1
    failed = await call(raw, "ipip_add_tunnel", tunnel=TUN | {"dst": "203.0.113.2"})
    assert failed.retval == -79
    assert sim.write_count == writes + 1
    assert len(sim.snapshot()["tunnels"]) == 1 and sim.snapshot() != before
    assert sim.message_counts["ipip_add_tunnel"] == 2


async def test_a_hang_holds_requests_unanswered_until_resumed(
        sim: VppSim, raw: RawClient) -> None:
    sim.hang_after(1)
    raw.send("ipip_add_tunnel", context=1, tunnel=TUN)
    raw.send("ipip_add_tunnel", context=2, tunnel=TUN | {"dst": "203.0.113.2"})
    assert (await raw.recv()).context == 1  # the write that hangs VPP is answered
    await wait_for(lambda: sim.hung)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(raw.recv(), 0.3)
    assert len(sim.snapshot()["tunnels"]) == 1
    sim.resume()
    assert (await raw.recv()).context == 2  # served in order once VPP recovers
    assert len(sim.snapshot()["tunnels"]) == 2


async def test_restart_loses_state(sim: VppSim, raw: RawClient) -> None:
    assert (await call(raw, "ipip_add_tunnel", tunnel=TUN)).retval == 0
    assert (await call(raw, "ikev2_profile_add_del", name="p", is_add=True)).retval == 0
    fresh = VppSim(sim.socket_path.with_name("other.sock"), interfaces=WAN).snapshot()
    assert sim.snapshot() != fresh
    await sim.stop()
    await sim.start()
    assert sim.snapshot() == fresh
    c = RawClient(sim.catalog)
    await c.connect(str(sim.socket_path))
    assert [
        d.interface_name for d in await dump(c, "sw_interface_dump", sw_if_index=0xFFFFFFFF)
    ] == [
        "local0",
        "GigabitEthernet0/3/0",
    ]
    await c.close()


async def test_pipelined_throughput(sim: VppSim, raw: RawClient) -> None:
    """Server-side rate: the client only splits frames and reads each reply's context."""
    n = 20000
    batch = b"".join(raw.pack("show_version", context=i + 1) for i in range(n))
    reply_id = sim.catalog.by_name["show_version_reply"].msg_id
    contexts: list[int] = []
    buf = bytearray()
    start = time.perf_counter()
    raw.writer.write(batch)
    while len(contexts) < n:
        buf += await asyncio.wait_for(raw.reader.read(1 << 20), 5)
        pos = 0
        while len(buf) - pos >= 16:
            length = int.from_bytes(buf[pos + 8 : pos + 12], "big")
            if len(buf) - pos - 16 < length:
                break
            body = buf[pos + 16 : pos + 16 + length]
            assert int.from_bytes(body[:2], "big") == reply_id
            contexts.append(int.from_bytes(body[2:6], "big"))
            pos += 16 + length
        del buf[:pos]
    elapsed = time.perf_counter() - start
    assert contexts == list(range(1, n + 1))  # answered in order
    rate = n / elapsed
    print(f"\nvppsim pipelined show_version: {rate:,.0f} msg/s")
    assert rate > 2000  # very loose floor; see the printed figure


def test_cli_process_ready_and_sigterm(tmp_path: Path) -> None:
    sock, ready = tmp_path / "api.sock", tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.lab.vppsim",
            "--socket",
            str(sock),
            "--interface",
            "GigabitEthernet0/3/0=192.168.1.10/24",
            "--ready-file",
            str(ready),
            "--ike-outcome",
            "p=AUTH_FAILED",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("vppsim ready")
        assert sock.exists() and ready.exists()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not sock.exists() and not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sync_addresses_typed(sim: VppSim) -> None:
    assert sim.state.addresses[1] == [ipaddress.ip_interface("192.168.1.10/24")]


@contextlib.asynccontextmanager
async def half_open_sa(sim: VppSim) -> AsyncIterator[VppClient]:
    """A client of `sim` with one profile and a scanner's half-open SA (no profile)."""
    client = VppClient(str(sim.socket_path), backoff_min=0.01, backoff_max=0.05)
    await client.start()
    try:
        await client.wait_connected(5)
        await client.call("ikev2_profile_add_del", name="peer-1", is_add=True)
        sim.state.add_half_open(ipaddress.ip_address("198.51.100.9"),
                                ipaddress.ip_address("192.168.1.10"))
        yield client
    finally:
        await client.close()


async def crashes(sim: VppSim, client: VppClient, name: str, **fields: Any) -> None:
    """`name` kills vppsim as it kills VPP 26.06 (SIGSEGV): a restarted, empty VPP."""
    generation = client.generation
    with pytest.raises(VppError):
        await client.call(name, **fields)
    await wait_for(lambda: client.generation > generation)
    assert not sim.state.profiles and not sim.state.sas


async def test_a_half_open_sa_crashes_v2_v3_dumps_as_vpp_does_and_read_sas_survives(
        sim: VppSim) -> None:
    async with half_open_sa(sim) as client:
        v1 = await client.dump("ikev2_sa_dump")
        assert [(s.sa.profile_index, s.sa.i_id.data_len) for s in v1] == [(0, 0)]
        # the agent's read (v1 and the child dump only) survives and shows it half-open
        assert [(sa.state, sa.i_id[0]) for sa in await read_sas(client)] == [("SA_INIT", 0)]
        assert "peer-1" in sim.state.profiles
        await crashes(sim, client, "ikev2_sa_v3_dump")


async def test_a_half_open_sa_crashes_show_ikev2_sa_details_but_not_the_plain_listing(
        sim: VppSim) -> None:
    """As VPP 26.06 (tests/vppsim/test_differential.py checks it on real VPP): the
    listing computes profile ~0's address, the details read its name."""
    async with half_open_sa(sim) as client:
        generation = client.generation
        listing = await client.call("cli_inband", cmd="show ikev2 sa")
        assert "iip 198.51.100.9 " in str(listing.reply)
        assert client.generation == generation and "peer-1" in sim.state.profiles
        await crashes(sim, client, "cli_inband", cmd="show ikev2 sa detailsx")
