"""SA lifecycle on real VPP 26.06: one negotiation per tunnel, whatever the peer does.

VPP retransmits an unanswered IKE_SA_INIT every 2 s without limit and every
ikev2_initiate_sa_init queues another one, invisible in the dumps until the peer
answers. These tests watch the wire at the peer: an unreachable peer must never
see two initiations of one tunnel in flight at once, and once it answers the
tunnel has exactly one IKE SA, not one per stacked initiation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.admin.peerctl import main as peerctl_main
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.topology import Lab, enter_netns, run_in_netns, sh
from tests.lab.test_strongswan_lab import (  # noqa: F401  (fixtures)
    add_tunnel_params,
    ok,
    ping_through,
    rig,
    workdir,
)
from tests.waiting import until, until_async

pytestmark = [pytest.mark.netns]

IKE_SA_INIT = 34
FLAG_INITIATOR = 0x08
SA_INIT_TIMEOUT = 8.0  # the lab agent's peers.sa_init_timeout
# VPP's DPD detection time with the lab agent's liveness 1 s x 2 retries: VPP checks
# liveness at its manager's ticks (every 2 s), so (retries + 1) x max(period, 2 s)
DPD_TIME = (2 + 1) * max(1, 2.0)


@pytest.fixture(scope="module")
def lab(vpp_lab: Lab) -> Lab:
    return vpp_lab


@dataclass
class SilentPeer:
    """UDP 500/4500 at the peer's address: records every IKE_SA_INIT request, answers none
    (an unreachable peer, seen from where the packets arrive)."""

    lab: Lab
    seen: dict[int, list[float]] = field(default_factory=dict)  # ispi -> arrival times
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="silent-peer")
        self._thread.start()
        assert self._ready.wait(5), "the silent peer did not bind"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        enter_netns(self.lab.peer)
        socks = []
        for port in (500, 4500):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((str(self.lab.peer_addr), port))
            socks.append(s)
        self._ready.set()
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(socks, [], [], 0.1)
                for s in readable:
                    data = s.recv(65535)
                    if s.getsockname()[1] == 4500:
                        data = data[4:]  # non-ESP marker
                    if len(data) < 28:
                        continue
                    ispi, rspi, _next, _ver, exchange, flags = struct.unpack(">QQBBBB",
                                                                             data[:20])
                    if exchange == IKE_SA_INIT and flags & FLAG_INITIATOR and rspi == 0:
                        self.seen.setdefault(ispi, []).append(time.monotonic())
        finally:
            for s in socks:
                s.close()


def peer_ike_sas(peer: PeerGateway) -> int:
    return peer.list_sas().count("edge-device: #")


def test_an_unreachable_then_reachable_peer_gets_one_negotiation_at_a_time(
        lab: Lab, workdir: Path) -> None:  # noqa: F811
    settings = PeerSettings()
    peer = PeerGateway(lab, workdir, settings)
    silent = SilentPeer(lab)

    async def scenario() -> None:
        async with rig(lab, workdir, peer) as r:
            silent.start()
            try:
                ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings),
                                        jobid=71))
                state = r.agent.manager.states
                await until(lambda: 7 in state and state[7].status == "down"
                            and state[7].reason.startswith("no answer from peer"),
                            SA_INIT_TIMEOUT + 5)
                # three negotiations: the first and two restarts after it stalled
                await until(lambda: len(silent.seen) >= 3, 3.5 * SA_INIT_TIMEOUT)
            finally:
                silent.stop()
            spans = sorted((min(t), max(t), len(t)) for t in silent.seen.values())
            assert spans, "VPP sent no IKE_SA_INIT"
            # at most one initiation in flight: each one's retransmissions end before
            # the next one starts (a restart deletes the profile, dropping the old one)
            for (_, last, _), (first, _, _) in itertools.pairwise(spans):
                assert last < first, spans
            assert any(n >= 2 for _, _, n in spans), spans  # VPP retransmits, we listened
            # restarted only after a stall: never sooner than sa_init_timeout apart
            for (a, _, _), (b, _, _) in itertools.pairwise(spans):
                assert b - a >= SA_INIT_TIMEOUT - 0.5, spans
            # the peer comes up: the one pending initiation is answered
            await asyncio.to_thread(peer.start)
            await until(lambda: state[7].status == "up", 20)
            up_at = time.monotonic()
            # two of VPP's retransmit periods: any other pending initiation would be
            # answered by now and show as a second IKE SA
            await until(lambda: time.monotonic() - up_at > 5, 6)
            sas = await r.sas()
            assert len(sas) == 1, sas
            assert state[7].status == "up"
            assert await asyncio.to_thread(peer_ike_sas, peer) == 1, peer.list_sas()

            async def still_one() -> bool:
                return len(await r.sas()) == 1

            await until_async(still_one, 2)

    run(lab, peer, scenario)


def test_a_dead_peer_is_down_within_dpd_time_and_up_again_by_vpps_own_reinitiation(
        lab: Lab, workdir: Path) -> None:  # noqa: F811
    settings = PeerSettings()
    peer = PeerGateway(lab, workdir, settings)
    peer.start()

    async def scenario() -> None:
        async with rig(lab, workdir, peer) as r:
            ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=81))
            state = r.agent.manager.states
            await until(lambda: 7 in state and state[7].status == "up", 15)
            first = (await r.sas())[0].ispi
            restarts = state[7].reinitiations
            await asyncio.to_thread(peer.charon.kill)  # dead: no DELETE, no answers
            died = time.monotonic()
            await until(lambda: state[7].status == "down", DPD_TIME + 3)
            assert time.monotonic() - died <= DPD_TIME + 3
            assert state[7].reason.startswith("IKE SA lost"), state[7].reason
            await asyncio.to_thread(peer.start)
            await until(lambda: state[7].status == "up", SA_INIT_TIMEOUT)
            # VPP's own re-initiation came through: the agent did not fight it
            assert state[7].reinitiations == restarts
            sas = await r.sas()
            assert len(sas) == 1 and sas[0].ispi != first, sas
            assert await asyncio.to_thread(peer_ike_sas, peer) == 1, peer.list_sas()

    run(lab, peer, scenario)


def test_vpp_rekeys_the_child_sa_before_its_lifetime_with_traffic_flowing(
        lab: Lab, workdir: Path) -> None:  # noqa: F811
    """A 60 s child SA (the device's policy allows 300 s and more; this test's policy
    lowers the bound to keep the suite short): VPP rekeys at the programmed lifetime +
    jitter, all before 60 s; pings keep passing; peerctl shows the new SPIs."""
    settings = PeerSettings()
    peer = PeerGateway(lab, workdir, settings)
    peer.start()
    lifetime = 60

    async def scenario() -> None:
        async with rig(lab, workdir, peer) as r:
            r.agent.dispatcher.policy = dataclasses.replace(r.agent.dispatcher.policy,
                                                            child_lifetime_min=lifetime)
            params = add_tunnel_params(lab, settings)
            params["ikev2"]["lifetime"] = lifetime
            ok(await r.ctl.send_job("add-tunnel", params, jobid=91))
            state = r.agent.manager.states
            await until(lambda: 7 in state and state[7].status == "up", 15)
            up_at = time.monotonic()
            first = r.agent.manager.peer_summary(7)["spis"]
            assert first, first
            rounds = failed = 0
            stop = asyncio.Event()

            async def traffic() -> None:
                nonlocal rounds, failed
                while not stop.is_set():
                    rc, _ = await ping_through("peer7", lab.monitor_addrs[0], 2)
                    rounds, failed = rounds + 1, failed + (rc != 0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)

            pinger = asyncio.create_task(traffic())
            try:
                await until(lambda: (s := r.agent.manager.peer_summary(7)["spis"])
                            and s != first, lifetime + 15)
                rekeyed_after = time.monotonic() - up_at
            finally:
                stop.set()
                await pinger
            assert rekeyed_after < lifetime, rekeyed_after  # before the configured lifetime
            assert state[7].status == "up" and len(await r.sas()) == 1
            assert rounds > 30 and failed <= 1, (rounds, failed)  # traffic kept flowing
            rc, out = await ping_through("peer7", lab.monitor_addrs[0])
            assert rc == 0, out
            new = r.agent.manager.peer_summary(7)["spis"]
            code, table, err = await peerctl("--socket", str(workdir / "admin.sock"),
                                             "show", "peers")
            assert code == 0, err
            assert all(spi in table for spi in new) and not any(spi in table for spi in first)

    run(lab, peer, scenario)


async def peerctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = await asyncio.to_thread(peerctl_main, list(argv), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


SOAK_TUNNELS = 10
SOAK_RESTARTS = 5
# Seconds the tunnels must stay up between crashes: 0 in the suite (about 45 s in all);
# PEERING_SOAK_DWELL=50 stretches the soak to the issue's five minutes.
SOAK_DWELL = float(os.environ.get("PEERING_SOAK_DWELL", "0"))


@dataclass
class ManyTunnels(PeerSettings):
    """The peer's administrator configured one connection per device tunnel: its own
    address and ID each (VPP tells SAs apart by address pair and IDs)."""

    count: int = SOAK_TUNNELS

    def swanctl_conf(self, lab: Lab) -> str:
        one = super().swanctl_conf(lab)
        conns, secrets = one.split("secrets {", 1)
        body = conns.strip().removeprefix("connections {").removesuffix("}")
        out_conns, out_secrets = [], []
        for n in range(1, self.count + 1):
            out_conns.append(body.replace("edge-device {", f"edge-device-{n} {{", 1)
                             .replace(f"local_addrs = {lab.peer_addr}",
                                      f"local_addrs = {soak_peer_addr(n)}")
                             .replace(f"id = {self.local_id}", f"id = gw{n}.cloud.example"))
            out_secrets.append(secrets.strip().removesuffix("}")
                               .replace("ike-edge {", f"ike-edge-{n} {{")
                               .replace(f"id-gw = {self.local_id}", f"id-gw = gw{n}.cloud.example"))
        return ("connections {\n" + "\n".join(out_conns) + "\n}\nsecrets {\n"
                + "\n".join(out_secrets) + "\n}\n")


def soak_peer_addr(n: int) -> str:
    return f"203.0.113.{10 + n}"


def soak_params(lab: Lab, settings: PeerSettings, n: int) -> dict[str, Any]:
    params = add_tunnel_params(lab, settings)
    params["tunnel-id"] = n
    params["dst"] = soak_peer_addr(n)
    params["peer"]["addr"] = f"10.100.1.{2 * n}/31"
    params["peer"]["ips"] = []
    params["ikev2"]["remote-device-id"] = f"gw{n}.cloud.example"
    return params


def test_soak_ten_tunnels_through_five_peer_crashes(lab: Lab, workdir: Path) -> None:  # noqa: F811
    """Each crash: every tunnel down within DPD time, up again after recovery; never more
    than one IKE SA per tunnel; VPP alive throughout."""
    settings = ManyTunnels()
    for n in range(1, SOAK_TUNNELS + 1):
        sh(lab.peer, "ip", "addr", "replace", f"{soak_peer_addr(n)}/24", "dev", "eth0")
    peer = PeerGateway(lab, workdir, settings)
    peer.start()
    tids = range(1, SOAK_TUNNELS + 1)

    async def scenario() -> None:
        async with rig(lab, workdir, peer) as r:
            for n in tids:
                ok(await r.ctl.send_job("add-tunnel", soak_params(lab, settings, n),
                                        jobid=100 + n))
            state = r.agent.manager.states

            def all_are(status: str) -> bool:
                return all(n in state and state[n].status == status for n in tids)

            await until(lambda: all_are("up"), 30)
            most = 0
            stop = asyncio.Event()

            async def watch() -> None:  # IKE SAs per tunnel (by peer address), all along
                nonlocal most
                while not stop.is_set():
                    per: dict[object, int] = {}
                    for sa in await r.sas():
                        per[sa.raddr] = per.get(sa.raddr, 0) + 1
                    most = max([most, *per.values()])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.3)

            watcher = asyncio.create_task(watch())
            downs: list[float] = []
            ups: list[float] = []
            began = time.monotonic()
            try:
                for crash in range(SOAK_RESTARTS):
                    await asyncio.to_thread(peer.charon.kill)
                    downs.append(await until_states(lambda: all_are("down"), DPD_TIME + 5,
                                                    crash, state))
                    await asyncio.to_thread(peer.start)
                    ups.append(await until_states(lambda: all_are("up"),
                                                  SA_INIT_TIMEOUT + 15, crash, state))
                    assert r.agent.vpp.connected
                    dwell_until = time.monotonic() + SOAK_DWELL
                    while time.monotonic() < dwell_until:  # up, and staying up
                        assert all_are("up"), sorted(state.items())
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 0.5)
            finally:
                stop.set()
                await watcher
            # The figures the README reports (pytest -s shows them).
            print(f"soak: {SOAK_TUNNELS} tunnels, {len(downs)} crashes in "
                  f"{time.monotonic() - began:.0f} s; all down after "
                  f"{', '.join(f'{d:.1f}' for d in downs)} s; all up after "
                  f"{', '.join(f'{u:.1f}' for u in ups)} s; most IKE SAs per tunnel {most}")
            assert most == 1, most
            assert r.agent.vpp.generation == 1  # VPP never went away (no reconnect)
            assert len(await r.sas()) == SOAK_TUNNELS

    run(lab, peer, scenario)


async def until_states(predicate: Callable[[], bool], timeout: float, crash: int,
                       state: Mapping[int, object]) -> float:
    """Seconds until the predicate held."""
    began = time.monotonic()
    try:
        await until(predicate, timeout)
    except AssertionError as e:
        raise AssertionError(f"crash {crash}: {e}: {sorted(state.items())}") from None
    return time.monotonic() - began


def run(lab: Lab, peer: PeerGateway, scenario: Callable[[], Awaitable[None]]) -> None:
    """The scenario in the device namespace; the peer's log when it fails."""
    try:
        run_in_netns(lab.device, lambda: asyncio.run(scenario()))  # type: ignore[arg-type]
    except BaseException:
        print("--- peer charon log ---\n" + peer.charon.log_tail(400))
        raise
    finally:
        peer.stop()


def ike_sa_init_request(ispi: int) -> bytes:
    """A well-formed IKE_SA_INIT request VPP accepts (AES-CBC-256, HMAC-SHA2-256,
    PRF-SHA2-256, MODP-2048): what any host on the Internet may send to UDP 500."""
    def transform(last: bool, ttype: int, tid: int, attrs: bytes = b"") -> bytes:
        return struct.pack(">BBHBBH", 0 if last else 3, 0, 8 + len(attrs), ttype, 0, tid) + attrs

    transforms = (transform(False, 1, 12, struct.pack(">HH", 0x800E, 256))
                  + transform(False, 2, 5) + transform(False, 3, 12) + transform(True, 4, 14))
    proposal = struct.pack(">BBHBBBB", 0, 0, 8 + len(transforms), 1, 1, 0, 4) + transforms
    sa = struct.pack(">BBH", 34, 0, 4 + len(proposal)) + proposal
    ke_data = secrets.token_bytes(256)
    ke = struct.pack(">BBHHH", 40, 0, 8 + len(ke_data), 14, 0) + ke_data
    nonce_data = secrets.token_bytes(32)
    nonce = struct.pack(">BBH", 0, 0, 4 + len(nonce_data)) + nonce_data
    body = sa + ke + nonce
    header = struct.pack(">QQBBBBII", ispi, 0, 33, 0x20, IKE_SA_INIT, FLAG_INITIATOR, 0,
                         28 + len(body))
    return header + body


def send_from(ns: str, dst: str, payload: bytes) -> bytes | None:
    """One UDP datagram to dst:500 from namespace ns; the answer if one comes."""
    def go() -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(payload, (dst, 500))
            try:
                return s.recv(65535)
            except TimeoutError:
                return None

    return run_in_netns(ns, go)


def test_a_half_open_sa_from_a_stranger_neither_crashes_vpp_nor_disturbs_supervision(
        lab: Lab, workdir: Path) -> None:  # noqa: F811
    """An IKE_SA_INIT from anyone leaves a half-open SA without a profile; VPP 26.06's
    v2/v3 SA dumps and `show ikev2 sa details` then crash it. The agent reads only v1
    and the child dump, and peerctl does not pass the details to VPP while one exists."""
    settings = PeerSettings()
    peer = PeerGateway(lab, workdir, settings)
    peer.start()

    async def scenario() -> None:
        async with rig(lab, workdir, peer) as r:
            ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=95))
            state = r.agent.manager.states
            await until(lambda: 7 in state and state[7].status == "up", 15)
            # from the NAT box, straight to VPP's WAN address: a scanner
            answer = await asyncio.to_thread(send_from, lab.nat_ns, "10.10.0.2",
                                             ike_sa_init_request(secrets.randbits(64) | 1))
            assert answer is not None and struct.unpack(">Q", answer[8:16])[0] != 0, answer

            async def half_open() -> bool:
                return any(sa.i_id[0] == 0 for sa in await r.sas())

            await until_async(half_open, 5)
            polls = state[7].since
            # several supervision polls later VPP is the same process and the tunnel up
            deadline = time.monotonic() + 3
            await until(lambda: time.monotonic() > deadline, 4)
            assert r.agent.vpp.connected and r.agent.vpp.generation == 1
            assert state[7].status == "up" and state[7].since == polls
            assert len([sa for sa in await r.sas() if sa.i_id[0] != 0]) == 1
            admin = ("--socket", str(workdir / "admin.sock"))
            code, out, err = await peerctl(*admin, "show", "ikev2", "sa", "details")
            assert code != 0 and "half-open IKE SA(s) without a profile" in err, (out, err)
            assert "10.10.0.1" in err
            # the plain listing reads no profile: it is passed, and shows the stranger
            code, out, err = await peerctl(*admin, "show", "ikev2", "sa")
            assert code == 0 and "iip 10.10.0.1 " in out, (out, err)
            version = await r.agent.vpp.call("show_version")
            assert str(version.version).startswith("26.06")
            assert r.agent.vpp.generation == 1

    run(lab, peer, scenario)
