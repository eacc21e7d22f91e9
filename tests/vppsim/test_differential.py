"""vppsim against real VPP 26.06: the same scripted API calls, compared field by field.

Every message the agent sends, with valid and invalid arguments and in create /
duplicate / delete orders, goes to a real VPP (in a namespace of its own, its WAN an
af_packet interface on a veth nobody answers on) and to vppsim (the same WAN name and
address). Return values are compared call by call, dumps field by field after
normalisation (fields VPP fills from the host, such as MAC addresses, are left out).
The differences that are known and accepted are listed in KNOWN, each with why; any
other difference fails the test. Real-VPP tier: skipped where VPP 26.06 is not
installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.lab.realvpp import RealVpp
from agent.lab.vppsim.server import VppSim
from agent.vpp.client import VppClient
from agent.vpp.errors import VppError
from agent.vpp.executor import ApplyError, Executor
from agent.vpp.kinds.base import read_interfaces
from agent.vpp.ops import VppFacts
from agent.vpp.plan import plan_add_ops
from agent.vpp.readers import cli_crash_refusal, read_sas, read_summary
from tests.real_vpp import require_real_vpp
from tests.spec_factory import example_spec


@pytest.fixture(autouse=True)
def _real_vpp_tier() -> None:
    require_real_vpp()


WAN = "host-wan0"
WAN_ADDR = "192.168.1.10/24"
NO_INDEX = 0xFFFFFFFF
PSK = b"Differential-PSK-0123456789"

# (pattern, why it is accepted): a difference is accepted when the pattern matches its
# whole line "<step>: <message> <field path>: vpp=... vppsim=...".
KNOWN: tuple[tuple[str, str], ...] = (
    (r"[^:]+: sw_interface_dump \[1\]\.(link_mtu|mtu\[0\]): vpp=9000 vppsim=1500$",
     "the WAN: here an af_packet interface on a veth (9000), in vppsim a NIC (1500)"),
    (r"after initiate: ikev2_sa_dump : vpp=\[\] vppsim=\[\{'retval': 0, 'sa': .*\}\]$",
     "vppsim's in-process IKE model answers for a model peer at once; real VPP keeps an "
     "initiation hidden until the peer answers, and nothing answers here (hidden "
     "initiations are not emulated yet)"),
)

# dump fields VPP fills from the host or its build, not from what the API set
VOLATILE = {"l2_address", "link_speed", "link_duplex", "sup_sw_if_index",
            "interface_dev_type", "build_date", "build_directory", "vpe_pid", "stats_index",
            "sub_id", "sub_number_of_tags", "sub_outer_vlan_id", "sub_inner_vlan_id",
            "sub_if_flags", "vtr_op", "vtr_push_dot1q", "vtr_tag1", "vtr_tag2",
            "outer_tag", "b_dmac", "b_smac", "b_vlanid", "i_sid", "tag"}


def plain(value: Any) -> Any:
    """A vpp_papi reply (namedtuples, enums, addresses) as plain comparable data."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()
                if k not in ("_0", "context", "client_index") and k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.rstrip(b"\0").hex()
    if isinstance(value, (IPv4Address, IPv4Network)) or hasattr(value, "with_prefixlen"):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum
        return int(value.value)
    return value


def route_via(prefix: str, sw: int, preference: int = 0) -> dict[str, Any]:
    """What the agent's plan sends for a route into a tunnel."""
    return {"table_id": 0, "prefix": prefix, "n_paths": 1, "paths": [{
        "sw_if_index": sw, "table_id": 0, "weight": 1, "preference": preference, "type": 0,
        "flags": 0, "proto": 0, "n_labels": 0, "label_stack": [{}] * 16}]}


@dataclass
class Transcript:
    steps: list[tuple[str, Any]] = field(default_factory=list)
    calls: int = 0


class Script:
    """The scripted sequence; `run` plays it on one VPP and records every outcome."""

    def __init__(self, vpp: VppClient, out: Transcript) -> None:
        self.vpp = vpp
        self.out = out
        self.sw: dict[int, int] = {}  # tunnel instance -> sw_if_index

    async def call(self, label: str, message: str, /, **fields: Any) -> Any:
        reply = await self.vpp.call(message, _check=False, **fields)
        self.out.calls += 1
        self.out.steps.append((f"{label}: {message}", plain(reply)))
        return reply

    async def dump(self, label: str, message: str, /, **fields: Any) -> None:
        details = await self.vpp.dump(message, **fields)
        self.out.calls += 1
        rows = [plain(d) for d in details]
        self.out.steps.append((f"{label}: {message}", sorted(rows, key=repr)))

    async def dumps(self, label: str) -> None:
        await self.dump(label, "sw_interface_dump", sw_if_index=NO_INDEX,
                        name_filter_valid=False)
        for n, sw in sorted({0: 1, **self.sw}.items()):
            await self.dump(f"{label} {'wan' if n == 0 else f'tunnel {n}'}", "ip_address_dump",
                            sw_if_index=sw, is_ipv6=False)
        await self.dump(label, "ip_route_dump",
                        table={"table_id": 0, "is_ip6": False, "name": ""})
        await self.lookups(label)
        await self.dump(label, "ipip_tunnel_dump", sw_if_index=NO_INDEX)
        await self.dump(label, "ikev2_profile_dump")
        await self.dump(label, "ikev2_sa_dump")
        await self.dump(label, "mss_clamp_get", cursor=0, sw_if_index=NO_INDEX)

    async def lookups(self, label: str) -> None:
        """The default route the agent looks up alone, exact and longest-match lookups
        of a peer's route, and a table that does not exist."""
        for exact, prefix, table in ((1, "0.0.0.0/0", 0), (1, "172.16.1.0/24", 0),
                                     (0, "172.16.1.9/32", 0), (1, "0.0.0.0/0", 7)):
            await self.call(f"{label} {prefix} exact={exact} table {table}", "ip_route_lookup",
                            table_id=table, exact=exact, prefix=prefix)

    async def gateway(self) -> None:
        """A default route with a next hop (the WAN gateway), looked up and removed."""
        route = route_via("0.0.0.0/0", 1)
        route["paths"][0]["nh"] = {"address": {"ip4": "192.168.1.1"}}
        await self.call("gateway", "ip_route_add_del", is_add=True, is_multipath=False,
                        route=route)
        await self.lookups("gateway")
        await self.call("gateway", "ip_route_add_del", is_add=False, is_multipath=False,
                        route=route)
        await self.lookups("gateway removed")

    async def tunnel(self, n: int) -> None:
        """One peer's objects, as the agent's plan creates them, plus invalid variants."""
        label = f"tunnel {n}"
        dst = f"203.0.113.{n}"
        tun = {"instance": n, "src": "192.168.1.10", "dst": dst, "table_id": 0, "flags": 0,
               "mode": 0, "dscp": 0}
        reply = await self.call(label, "ipip_add_tunnel", tunnel=tun)
        self.sw[n] = int(reply.sw_if_index)
        sw = self.sw[n]
        await self.call(f"{label} same instance", "ipip_add_tunnel",
                        tunnel={**tun, "dst": f"198.51.100.{n}"})
        await self.call(f"{label} same endpoints", "ipip_add_tunnel",
                        tunnel={**tun, "instance": n + 100})
        await self.call(label, "sw_interface_set_mtu", sw_if_index=sw, mtu=[1400, 0, 0, 0])
        addr = f"10.100.{n}.0/31"
        await self.call(label, "sw_interface_add_del_address", sw_if_index=sw, is_add=True,
                        del_all=False, prefix=addr)
        await self.call(f"{label} twice", "sw_interface_add_del_address", sw_if_index=sw,
                        is_add=True, del_all=False, prefix=addr)
        await self.call(label, "sw_interface_set_flags", sw_if_index=sw, flags=1)
        await self.call(f"{label} bad index", "sw_interface_set_flags", sw_if_index=4242,
                        flags=1)
        await self.call(label, "mss_clamp_enable_disable", sw_if_index=sw, ipv4_mss=1310,
                        ipv6_mss=0, ipv4_direction=3, ipv6_direction=0)
        name = f"peer-{n}"
        await self.call(label, "ikev2_profile_add_del", name=name, is_add=True)
        await self.call(f"{label} twice", "ikev2_profile_add_del", name=name, is_add=True)
        await self.call(label, "ikev2_profile_set_auth", name=name, auth_method=2,
                        is_hex=False, data_len=len(PSK), data=PSK)
        await self.call(f"{label} unknown profile", "ikev2_profile_set_auth",
                        name="no-such", auth_method=2, is_hex=False, data_len=len(PSK),
                        data=PSK)
        local = bytes([198, 51, 100, n])
        await self.call(label, "ikev2_profile_set_id", name=name, is_local=True, id_type=1,
                        data_len=4, data=local)
        remote = f"gw{n}.cloud.example".encode()
        await self.call(label, "ikev2_profile_set_id", name=name, is_local=False, id_type=2,
                        data_len=len(remote), data=remote)
        for is_local in (True, False):
            await self.call(label, "ikev2_profile_set_ts", name=name, ts={
                "is_local": is_local, "protocol_id": 0, "start_port": 0, "end_port": 65535,
                "start_addr": "0.0.0.0", "end_addr": "255.255.255.255"})
        await self.call(label, "ikev2_set_ike_transforms", name=name, tr={
            "crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12, "prf_alg": 5,
            "dh_group": 14})
        await self.call(label, "ikev2_set_esp_transforms", name=name, tr={
            "crypto_alg": 12, "crypto_key_size": 256, "integ_alg": 12})
        await self.call(label, "ikev2_set_sa_lifetime", name=name, lifetime=3600,
                        lifetime_jitter=360, handover=60, lifetime_maxdata=0)
        await self.call(label, "ikev2_set_tunnel_interface", name=name, sw_if_index=sw)
        await self.call(f"{label} bad index", "ikev2_set_tunnel_interface", name=name,
                        sw_if_index=4242)
        await self.call(label, "ikev2_set_tunnel_interface", name=name, sw_if_index=sw)
        await self.call(f"{label} bad index", "ikev2_set_responder", name=name,
                        responder={"sw_if_index": 4242, "addr": dst})
        await self.call(label, "ikev2_set_responder", name=name,
                        responder={"sw_if_index": 1, "addr": dst})
        await self.call(label, "ikev2_profile_set_udp_encap", name=name)
        for prefix in (f"198.51.{n}.7/32", f"172.16.{n}.0/24"):
            route = route_via(prefix, sw)
            await self.call(label, "ip_route_add_del", is_add=True, is_multipath=False,
                            route=route)
            await self.call(f"{label} twice", "ip_route_add_del", is_add=True,
                            is_multipath=False, route=route)

    async def primary_and_backup(self) -> None:
        """Two tunnels' paths of one prefix at preferences 0 and 1 (a static route's
        metric): an add of a path already there keeps its preference, a removal matches
        the path whatever its preference."""
        prefix, label = "10.50.0.0/16", "backup"
        for n, preference in ((1, 0), (3, 1)):
            await self.call(label, "ip_route_add_del", is_add=True, is_multipath=True,
                            route=route_via(prefix, self.sw[n], preference))
        await self.call(f"{label} new preference", "ip_route_add_del", is_add=True,
                        is_multipath=True, route=route_via(prefix, self.sw[1], 2))
        await self.dump(label, "ip_route_dump", table={"table_id": 0, "is_ip6": False,
                                                       "name": ""})
        await self.call(f"{label} other preference", "ip_route_add_del", is_add=False,
                        is_multipath=True, route=route_via(prefix, self.sw[3], 0))
        await self.dump(f"{label} one left", "ip_route_dump",
                        table={"table_id": 0, "is_ip6": False, "name": ""})
        await self.call(f"{label} last", "ip_route_add_del", is_add=False, is_multipath=True,
                        route=route_via(prefix, self.sw[1], 0))

    async def remove(self, n: int) -> None:
        label = f"remove {n}"
        sw = self.sw.pop(n)
        name = f"peer-{n}"
        for prefix in (f"198.51.{n}.7/32", f"172.16.{n}.0/24"):
            route = route_via(prefix, sw)
            await self.call(label, "ip_route_add_del", is_add=False, is_multipath=False,
                            route=route)
            await self.call(f"{label} absent", "ip_route_add_del", is_add=False,
                            is_multipath=False, route=route)
        await self.call(label, "ikev2_profile_add_del", name=name, is_add=False)
        await self.call(f"{label} absent", "ikev2_profile_add_del", name=name, is_add=False)
        await self.call(label, "mss_clamp_enable_disable", sw_if_index=sw, ipv4_mss=0,
                        ipv6_mss=0, ipv4_direction=0, ipv6_direction=0)
        await self.call(label, "sw_interface_set_flags", sw_if_index=sw, flags=0)
        await self.call(label, "sw_interface_add_del_address", sw_if_index=sw, is_add=False,
                        del_all=False, prefix=f"10.100.{n}.0/31")
        await self.call(f"{label} absent", "sw_interface_add_del_address", sw_if_index=sw,
                        is_add=False, del_all=False, prefix=f"10.100.{n}.0/31")
        await self.call(label, "ipip_del_tunnel", sw_if_index=sw)
        await self.call(f"{label} absent", "ipip_del_tunnel", sw_if_index=sw)

    async def run(self) -> None:
        await self.call("start", "show_version")
        await self.call("start", "ikev2_plugin_get_version")
        await self.call("start", "ikev2_profile_set_liveness", period=10, max_retries=3)
        # the agent pauses interface events around big jobs: each twice, in both orders
        for enable in (1, 1, 0, 0, 1):
            await self.call("start", "want_interface_events", enable_disable=enable, pid=42)
        await self.dumps("empty")
        await self.gateway()
        for n in (1, 2, 3):
            await self.tunnel(n)
        await self.dumps("three tunnels")
        await self.primary_and_backup()
        await self.call("initiate", "ikev2_initiate_sa_init", name="peer-2")
        await self.call("initiate", "ikev2_initiate_del_ike_sa", ispi=0x1122334455667788)
        await self.call("initiate", "ikev2_initiate_del_child_sa", ispi=0x11223344)
        await self.call("initiate", "ikev2_initiate_rekey_child_sa", ispi=0x11223344)
        await self.dump("after initiate", "ikev2_sa_dump")
        await self.remove(2)  # the middle one first: indexes of the others stay
        await self.dumps("one removed")
        await self.tunnel(4)
        await self.dumps("one added back")
        for n in (1, 3, 4):
            await self.remove(n)
        await self.dumps("all removed")


@contextlib.contextmanager
def real_vpp() -> Iterator[RealVpp]:
    """VPP 26.06 in a namespace of its own, WAN host-wan0 on a veth nobody answers on."""
    ns = f"diff-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vd-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp: RealVpp | None = None
    try:
        for cmd in (["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p"],
                    ["ip", "link", "set", "wan0", "up"], ["ip", "link", "set", "wan0p", "up"],
                    ["ip", "link", "set", "lo", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        vpp = RealVpp(ns, run, linux_cp=False, startup_cli=[
            "create host-interface name wan0", f"set interface state {WAN} up",
            f"set interface ip address {WAN} {WAN_ADDR}"])
        vpp.start()
        yield vpp
    finally:
        if vpp is not None:
            vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run, ignore_errors=True)


@contextlib.asynccontextmanager
async def client(socket: Path) -> AsyncIterator[VppClient]:
    c = VppClient(str(socket), call_timeout=5.0, skip_modules=frozenset({"lcp"}))
    await c.start()
    try:
        await c.wait_connected(10)
        yield c
    finally:
        await c.close()


async def play(socket: Path) -> Transcript:
    out = Transcript()
    async with client(socket) as c:
        await Script(c, out).run()
    return out


def differences(real: Transcript, sim: Transcript) -> list[str]:
    out: list[str] = []

    def walk(label: str, path: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(label, f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>"))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(label, f"{path}[{i}]", x, y)
        elif a != b:
            out.append(f"{label} {path}: vpp={a!r} vppsim={b!r}")

    assert [s for s, _ in real.steps] == [s for s, _ in sim.steps]
    for (label, a), (_, b) in zip(real.steps, sim.steps, strict=True):
        walk(label, "", a, b)
    return out


def accepted(diff: str) -> bool:
    return any(re.match(pattern, diff, flags=re.S) for pattern, _ in KNOWN)


def test_vppsim_answers_the_scripted_api_calls_as_real_vpp_26_06(capsys: Any) -> None:
    with real_vpp() as vpp:
        real = asyncio.run(play(vpp.socket_path))
    d = Path(tempfile.mkdtemp(prefix="vs-", dir="/tmp"))
    try:
        async def sim_side() -> Transcript:
            sim = VppSim(d / "api.sock", interfaces=[(WAN, WAN_ADDR)])
            await sim.start()
            try:
                return await play(sim.socket_path)
            finally:
                await sim.stop()

        sim = asyncio.run(sim_side())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert real.calls == sim.calls >= 150, (real.calls, sim.calls)
    diffs = differences(real, sim)
    undeclared = [x for x in diffs if not accepted(x)]
    with capsys.disabled():
        print(f"\ndifferential: {real.calls} API calls, {len(diffs)} known differences, "
              f"{len(undeclared)} undeclared")
    assert not undeclared, "\n".join(undeclared)


def _ike_sa_init() -> bytes:
    """An IKE_SA_INIT request as any host on the Internet may send (AES-CBC-256,
    HMAC-SHA2-256, MODP-2048 with a random public value): VPP answers it and keeps a
    half-open SA that has no profile yet."""
    def transform(last: bool, kind: int, ident: int, attrs: bytes = b"") -> bytes:
        body = struct.pack("!BBH", kind, 0, ident) + attrs
        return struct.pack("!BBH", 0 if last else 3, 0, 4 + len(body)) + body

    transforms = (transform(False, 1, 12, struct.pack("!HH", 0x800E, 256))
                  + transform(False, 2, 5) + transform(False, 3, 12) + transform(True, 4, 14))
    proposal_body = struct.pack("!BBBB", 1, 1, 0, 4) + transforms
    proposal = struct.pack("!BBH", 0, 0, 4 + len(proposal_body)) + proposal_body
    sa = struct.pack("!BBH", 34, 0, 4 + len(proposal)) + proposal
    ke_body = struct.pack("!HH", 14, 0) + os.urandom(256)
    ke = struct.pack("!BBH", 40, 0, 4 + len(ke_body)) + ke_body
    nonce = struct.pack("!BBH", 0, 0, 36) + os.urandom(32)
    payloads = sa + ke + nonce
    header = os.urandom(8) + bytes(8) + struct.pack("!BBBBII", 33, 0x20, 34, 0x08, 0,
                                                     28 + len(payloads))
    return header + payloads


def test_a_scanners_half_open_sa_does_not_make_the_agent_kill_vpp() -> None:
    """VPP 26.06's v2/v3 SA dumps dereference a half-open SA's missing profile (SIGSEGV);
    the agent's SA reads must survive one."""
    with real_vpp() as vpp:
        subprocess.run(["ip", "netns", "exec", vpp.netns, "ip", "addr", "add",
                        "192.168.1.20/24", "dev", "wan0p"], check=True)

        async def scenario() -> None:
            async with client(vpp.socket_path) as c:
                # VPP listens on UDP 500 once a profile exists
                await c.call("ikev2_profile_add_del", name="peer-1", is_add=True)
                send = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                        "s.bind(('192.168.1.20',500));s.settimeout(5);"
                        "s.sendto(bytes.fromhex(sys.argv[1]),('192.168.1.10',500));"
                        "print(len(s.recv(4096)))")
                done = await asyncio.to_thread(
                    subprocess.run, ["ip", "netns", "exec", vpp.netns, sys.executable, "-c",
                                     send, _ike_sa_init().hex()],
                    capture_output=True, text=True, timeout=20)
                assert done.returncode == 0 and int(done.stdout) > 0, done.stderr
                half_open = await c.dump("ikev2_sa_dump")
                assert len(half_open) == 1 and int(half_open[0].sa.i_id.data_len) == 0
                # read from v1: a responder's SA still waiting, no peer ID yet (so it
                # matches no tunnel: nobody's SA)
                assert [(sa.state, sa.i_id[0], sa.children) for sa in await read_sas(c)] == [
                    ("SA_INIT", 0, 0)]
                summary = await read_summary(c)
                assert summary.sas == 1
                assert "26.06" in str((await c.call("show_version")).version)
                assert vpp.running
                # the CLI's plain listing is safe; peerctl and the Command tab refuse
                # only the details (which read the profile's name), while it lasts
                listing = await c.call("cli_inband", cmd="sh ike sa")
                assert "iip 192.168.1.20 " in str(listing.reply) and vpp.running
                assert await cli_crash_refusal(c, "show ikev2 sa") is None
                why = await cli_crash_refusal(c, "sh ike sa details")
                assert why is not None and "192.168.1.20" in why
                # and the refusal is needed: the details take VPP down
                with contextlib.suppress(VppError):
                    await c.call("cli_inband", cmd="show ikev2 sa details", _timeout=3)
                async with asyncio.timeout(10):
                    while vpp.running:
                        await asyncio.sleep(0.05)

        asyncio.run(scenario())


async def _initiate_unknown(socket: Path, profiles: int) -> int | None:
    """ikev2_initiate_sa_init of a profile VPP does not have: its retval, None if the
    connection went (VPP died)."""
    async with client(socket) as c:
        for n in range(profiles):
            await c.call("ikev2_profile_add_del", name=f"other-{n}", is_add=True)
        try:
            reply = await c.call("ikev2_initiate_sa_init", name="nope", _check=False)
        except VppError:
            return None
        return int(reply.retval)


@pytest.mark.parametrize("profiles", [0, 1])
async def test_initiating_a_profile_vpp_lacks_as_real_vpp_26_06(
        short_dir: Path, profiles: int) -> None:
    """Refused (-1) while VPP has other profiles; with none at all VPP dies (SIGSEGV),
    which is why the agent initiates only what its last reconcile programmed."""
    with real_vpp() as vpp:
        real = await _initiate_unknown(vpp.socket_path, profiles)
        if real is None:
            async with asyncio.timeout(10):
                while vpp.running:
                    await asyncio.sleep(0.05)
    sim = VppSim(short_dir / "sim.sock", interfaces=[(WAN, WAN_ADDR)])
    await sim.start()
    try:
        got = await _initiate_unknown(sim.socket_path, profiles)
    finally:
        await sim.stop()
    assert real == got == (None if profiles == 0 else -1), (real, got)


async def _initiate_without_a_wan_address(socket: Path) -> bool:
    """Whether the agent's plan for one peer applies while the WAN has no address (put
    back afterwards)."""
    async with client(socket) as c:
        wan = next(i.sw_if_index for i in (await read_interfaces(c)).values() if i.name == WAN)
        prefix = IPv4Interface(WAN_ADDR)
        await c.call("sw_interface_add_del_address", sw_if_index=wan, is_add=False,
                     del_all=False, prefix=prefix)
        ops = plan_add_ops(example_spec(dst=IPv4Address("192.168.1.20")),
                           VppFacts(wan, has_lcp=False))
        try:
            await Executor(c).apply([ops], {})
            applied = True
        except ApplyError:
            applied = False
        await c.call("sw_interface_add_del_address", sw_if_index=wan, is_add=True,
                     del_all=False, prefix=prefix)
        return applied


async def test_an_initiation_waits_for_the_wan_address_as_real_vpp_26_06(
        short_dir: Path) -> None:
    """VPP takes ikev2_initiate_sa_init while the WAN interface has no address and sends
    the IKE_SA_INIT once it has one; vppsim used to refuse it (-1), so its tests showed
    rollbacks a device would not."""
    with real_vpp() as vpp:
        real = await _initiate_without_a_wan_address(vpp.socket_path)
    sim = VppSim(short_dir / "sim.sock", interfaces=[(WAN, WAN_ADDR)])
    await sim.start()
    try:
        got = await _initiate_without_a_wan_address(sim.socket_path)
        # with the address back, vppsim's model peer gets the IKE_SA_INIT and answers
        async with asyncio.timeout(10):
            while not any(sa.rspi for sa in sim.state.sas.values()):
                await asyncio.sleep(0.05)
    finally:
        await sim.stop()
    assert real and got
