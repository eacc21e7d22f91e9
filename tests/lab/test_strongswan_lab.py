"""End to end with real IKEv2 and ESP: controller double -> agent -> VPP -> an
independently configured strongSwan peer, in network namespaces.

Every test runs twice: on vppsim with its own charon (any machine) and on real VPP
26.06 (where it is installed; its ESP is VPP's own, its WAN an af_packet
interface, the device behind a NAT). The agent and the controller double run on
an event loop in a thread that joined the lab's device namespace; the peer's
charon runs in the peer namespace with its own swanctl.conf (agent/lab/peer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.config import AgentConfig, parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.dataplane import (
    DEV_ID,
    DataPlane,
    RealVppPlane,
    SimPlane,
    TunnelStandIn,
    agent_vpp_config,
)
from agent.lab.offline import offline_name_resolver
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.realvpp import RealVpp, conf_from_rendered, has_vhost_net
from agent.lab.topology import Lab, run_in_netns
from agent.lab.vppsim.ike_strongswan import charon_available
from agent.logsetup import configure_logging
from agent.peers.supervision import ECP_REASON
from agent.vpp.readers import SaInfo, read_observed, read_sas
from tests.fixtures import example_request
from tests.waiting import until, until_async

MACHINE = "3f1c0000-0000-4000-8000-00000000ab00"
DEVICE_TOKEN = "device-token-lab-never-logged"
WAN_NAME = "GigabitEthernet0/3/0"
TUNNEL_NET = IPv4Interface("10.100.0.16/31")  # the fixture's peer.addr for tunnel 7


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "nft", "ping", "swanctl", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (kernel-libipsec and linux-cp TUNs need it)"
    reason = charon_available()
    if reason:
        return reason
    probe = f"labchk-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


_REASON = _lab_unavailable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]




@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lab-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(backend: str) -> Iterator[Lab]:
    """One topology per module: the data plane and the charons are per test. Real VPP
    sits behind a NAT: the peer's kernel-libipsec only does ESP in UDP, and VPP as
    initiator encapsulates only when it is itself behind a NAT."""
    real = backend == "vpp"
    with Lab(nat=real, vpp_wan=real) as lab:
        yield lab


def make_plane(lab: Lab, base: Path, conf: Callable[[RealVpp], str] | None = None) -> DataPlane:
    if lab.vpp_wan:
        return RealVppPlane(lab, base, (TunnelStandIn(7, TUNNEL_NET),), conf=conf)
    return SimPlane(lab, base, poll=0.1, failed_linger=3.0, initiate_timeout=6.0,
                    dpd_delay=1.0)


@dataclass
class Rig:
    lab: Lab
    plane: DataPlane
    ctl: ControllerDouble
    agent: Agent
    peer: PeerGateway
    logs: io.StringIO
    base: Path
    task: asyncio.Task[None] | None = None
    routing: dict[str, Any] | None = None  # the agent's [routing] section

    @property
    def sim(self) -> SimPlane:
        assert isinstance(self.plane, SimPlane), "a vppsim-only check"
        return self.plane

    @property
    def real(self) -> bool:
        return self.plane.kind == "vpp"

    async def sas(self) -> list[SaInfo]:
        """The IKE SAs as VPP's API reports them (either data plane)."""
        return await read_sas(self.agent.vpp)

    async def restart_agent(self) -> Agent:
        """Stop the agent, start another on the same state directory and VPP; return
        once it is connected and in sync."""
        assert self.task is not None
        await stop_agent(self.task)
        self.agent = Agent(_config(self.ctl, self.plane, self.base, routing_section(self.routing)),
                           name_resolver=offline_name_resolver)
        self.task = await run_agent(self.agent)
        await until(lambda: self.agent.manager.in_sync, 15)
        return self.agent


def add_tunnel_params(lab: Lab, settings: PeerSettings) -> dict[str, Any]:
    """The protocol document's add-tunnel with the lab's addresses and the agreed PSK."""
    params: dict[str, Any] = example_request()["params"]
    params["src"] = str(lab.device_addr)
    params["dst"] = str(lab.peer_addr)
    params["peer"]["ips"] = [str(lab.monitor_addrs[0])]
    params["peer"]["urls"] = []
    params["ikev2"]["psk"] = settings.psk
    return params


def _config(ctl: ControllerDouble, plane: DataPlane, base: Path,
            extra: dict[str, dict[str, Any]] | None = None) -> AgentConfig:
    """The lab agent's configuration; `extra` adds to (or overrides in) its sections
    (without a `routing` section: no FRR, routing recorded only)."""
    vpp, interfaces = agent_vpp_config(plane)
    token_file = base / "device.token"
    token_file.write_text(DEVICE_TOKEN)
    token_file.chmod(0o600)
    sections: dict[str, Any] = {
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token_file),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3,
                       "ping_interval": 0.5, "silence_timeout": 5.0},
        "vpp": {**vpp, "call_timeout": 2.0},
        "interfaces": interfaces,
        "state": {"dir": str(base / "state")},
        "routing": {"vtysh": ""},
        "admin": {"socket": str(base / "admin.sock")},
        # faster supervision than the daemon's defaults, so the lab stays quick
        # an unanswered initiation is down after 8 s (real VPP shows no state for
        # an IKE_SA_INIT the peer refused: that is all the agent can see then)
        "peers": {"sa_poll_interval": 0.2, "reinit_backoff_min": 0.5, "sa_init_timeout": 8.0,
                  "liveness_period": 1, "liveness_retries": 2},
        "monitor": {"interval": 0.05, "timeout": 0.4, "window": 20, "down_after": 2,
                    "up_after": 2, "stats_period": 1.0},
        "logging": {"level": "debug"},
    }
    for name, values in (extra or {}).items():
        sections[name] = {**sections.get(name, {}), **values}
    return parse_config(sections, {})


def routing_section(routing: dict[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    return None if routing is None else {"routing": routing}


async def run_agent(agent: Agent) -> asyncio.Task[None]:
    return asyncio.create_task(agent.run())


async def stop_agent(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def rig(lab: Lab, base: Path, peer: PeerGateway,
              conf: Callable[[RealVpp], str] | None = None,
              routing: dict[str, Any] | None = None) -> AsyncIterator[Rig]:
    """The data plane (vppsim + charon, or real VPP), the controller double, the agent."""
    plane = make_plane(lab, base, conf)
    await plane.start()
    logs = io.StringIO()
    configure_logging("debug", json=True, stream=logs)
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=15.0)
    try:
        await ctl.start()
        r = Rig(lab, plane, ctl, Agent(_config(ctl, plane, base, routing_section(routing)),
                                       name_resolver=offline_name_resolver), peer, logs, base,
                routing=routing)
        r.task = await run_agent(r.agent)
        try:
            await ctl.wait_connected(10)
            await until(lambda: r.agent.manager.in_sync, 10)
            try:
                yield r
            except BaseException:
                if r.real:
                    print("--- VPP state ---\n" + vpp_state(base))
                raise
            assert ctl.violations == []  # every reply passed flexiManage's rules
        finally:
            if r.task is not None:
                await stop_agent(r.task)
            await ctl.stop()
    finally:
        configure_logging("warning", json=True, stream=sys.stderr)
        await plane.stop()


def run_lab(lab: Lab, base: Path, settings: PeerSettings,
            scenario: Callable[[Rig], Awaitable[None]],
            conf: Callable[[RealVpp], str] | None = None) -> None:
    """Start the peer, run `scenario` on a loop inside the device namespace, clean up."""
    peer = PeerGateway(lab, base, settings)
    peer.start()

    async def main() -> None:
        async with rig(lab, base, peer, conf) as r:
            await scenario(r)

    try:
        run_in_netns(lab.device, lambda: asyncio.run(main()))
    except BaseException:
        print("--- peer charon log ---\n" + peer.charon.log_tail(400))
        if lab.vpp_wan:
            print("--- VPP log ---\n" + _tail(base / "vpp/vpp.log", 100))
        else:
            print("--- device charon log ---\n"
                  + _tail(base / "dev/device-charon/charon.log", 400))
        raise
    finally:
        peer.stop()


def vpp_state(base: Path) -> str:
    """What real VPP shows (a failed test prints it)."""
    vpp = RealVpp("", base / "vpp")
    out = []
    for cmd in (("show", "ikev2", "sa"), ("show", "ikev2", "profile"), ("show", "errors"),
                ("show", "ip", "fib", "table", "0")):
        try:
            text = vpp.ctl(*cmd, timeout=5)
            text = "\n".join(ln for ln in text.splitlines() if "auth data" not in ln)
            out.append(f"# {' '.join(cmd)}\n" + text)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            out.append(f"# {' '.join(cmd)}: {e}")
    return "\n".join(out)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


def ok(reply: dict[str, Any]) -> Any:
    assert reply["msg"]["ok"] == 1, reply["msg"]
    return reply["msg"]["message"]


async def ping_through(device: str, target: IPv4Address, count: int = 3) -> tuple[int, str]:
    """ping bound to the tunnel's Linux interface, from the current (device) namespace."""
    proc = await asyncio.create_subprocess_exec(
        "ping", "-n", "-c", str(count), "-i", "0.05", "-W", "1", "-I", device, str(target),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def path_rtt(target: IPv4Address) -> float:
    """The average round trip to `target` through tunnel 7, ms (ping's own summary)."""
    _, out = await ping_through("peer7", target, 10)
    assert "rtt min/avg/max" in out, out
    return float(out.split("rtt min/avg/max/mdev = ")[1].split("/")[1])


def test_add_tunnel_negotiates_with_the_peer_and_carries_pings(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        reply = await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=1)
        assert ok(reply) == "success"
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        state = r.agent.manager.states[7]
        assert state.ike_state == "AUTHENTICATED" and state.child_sas == 1
        # the SA VPP reports is the one the peer sees: same SPI
        sa = (await r.sas())[0]
        assert f"{sa.ispi:016x}" in r.peer.list_sas()
        rc, out = await ping_through("peer7", lab.monitor_addrs[0])
        assert rc == 0, out
        assert " 0% packet loss" in out

    run_lab(lab, workdir, settings, scenario)



def linux_links() -> str:
    """The interfaces of this thread's namespace (/proc/net is the process's one)."""
    return Path("/proc/thread-self/net/dev").read_text()


async def device_charon(r: Rig) -> tuple[list[str], list[str]]:
    """The device charon's loaded connections and IKE SAs (VICI list-conns / list-sas)."""

    def read() -> tuple[list[str], list[str]]:
        s = r.sim.ike.charon.session()
        try:
            conns = [k.decode() if isinstance(k, bytes) else k
                     for entry in s.list_conns() for k in entry]
            sas = [k.decode() if isinstance(k, bytes) else k
                   for entry in s.list_sas() for k in entry]
            return conns, sas
        finally:
            s.transport.close()

    return await asyncio.to_thread(read)


def test_remove_tunnel_leaves_nothing_in_vpp_charon_or_linux(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=11))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        before = await read_observed(r.agent.vpp)
        assert before.tunnels and before.profiles and await r.sas()

        ok(await r.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=12))
        obs = await read_observed(r.agent.vpp)
        assert obs.tunnels == {} and obs.profiles == {} and obs.lcp == {}
        assert await r.sas() == []
        tunnel_sw = before.tunnels[7].sw_if_index
        assert tunnel_sw not in obs.interfaces and tunnel_sw not in obs.routes
        # the peer saw the DELETE: it holds no SA for us either
        await until(lambda: "edge-device" not in r.peer.list_sas(), 5)
        if r.real:
            return  # no charon of our own; peer7 is the lab's stand-in, not the agent's
        assert r.sim.sim.snapshot()["routes"] == []

        async def charon_empty() -> bool:
            return await device_charon(r) == ([], [])

        deadline = asyncio.get_running_loop().time() + 5
        while not await charon_empty():
            assert asyncio.get_running_loop().time() < deadline, await device_charon(r)
            await asyncio.sleep(0.05)
        await until(lambda: "peer7" not in linux_links(), 5)

    run_lab(lab, workdir, settings, scenario)


@pytest.mark.parametrize(("peer_settings", "expected"), [
    (PeerSettings(psk="a-different-psk-4711"), "AUTH_FAILED"),
    (PeerSettings(ike_proposal="aes128gcm16-prfsha384-ecp384"), "NO_PROPOSAL_CHOSEN"),
    (PeerSettings(esp_proposal="aes128gcm16"), "NO_PROPOSAL_CHOSEN"),
    (PeerSettings(local_id="vpn.other.example"), "AUTH_FAILED"),
], ids=["wrong-psk", "ike-proposal-mismatch", "esp-proposal-mismatch", "remote-id-mismatch"])
def test_a_mismatch_ends_down_with_a_reason_naming_it(
        lab: Lab, workdir: Path, peer_settings: PeerSettings, expected: str) -> None:
    # the device side is the protocol document's tunnel, with the PSK it agreed on
    device_side = PeerSettings()
    if lab.vpp_wan and expected == "NO_PROPOSAL_CHOSEN" \
            and peer_settings.ike_proposal != device_side.ike_proposal:
        # VPP 26.06 drops an IKE_SA_INIT answer without an SA payload (plugins/ikev2/
        # ikev2.c, ikev2_process_sa_init_resp): the initiation stays hidden and is
        # retransmitted, so the agent can only report an unanswered initiation
        expected = "no answer from peer"

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, device_side), jobid=21))
        state = r.agent.manager.states
        await until(lambda: 7 in state and state[7].status == "down", 15)
        assert state[7].reason.startswith(expected), state[7].reason
        assert r.agent.manager.peer_summary(7)["child_sas"] == 0
        stats = ok(await r.ctl.request("get-device-stats"))
        assert stats[-1]["tunnel_stats"]["7"]["status"] == "down"

    run_lab(lab, workdir, peer_settings, scenario)


def test_a_peer_restart_is_recovered_by_reinitiation(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=31))
        state = r.agent.manager.states
        await until(lambda: state[7].status == "up", 15)
        first_spi = (await r.sas())[0].ispi

        await asyncio.to_thread(r.peer.restart)  # crash: no DELETE, all SAs forgotten

        # VPP 26.06 (and vppsim's charon) re-initiates by itself after its DPD finds
        # the peer gone: the tunnel recovers with a new IKE SA, whoever initiated it
        async def replaced() -> bool:
            sas = await r.sas()
            return bool(sas) and all(s.ispi != first_spi for s in sas) \
                and any(s.state == "AUTHENTICATED" and s.children for s in sas)

        await until_async(replaced, 20)
        await until(lambda: state[7].status == "up", 10)
        spis = [sa.ispi for sa in await r.sas()]
        assert spis and first_spi not in spis
        rc, out = await ping_through("peer7", lab.monitor_addrs[0])
        assert rc == 0, out

    run_lab(lab, workdir, settings, scenario)


def test_probes_through_the_tunnel_measure_the_injected_delay_and_loss(
        lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()
    target = lab.monitor_addrs[1]
    delay_ms, loss = 30.0, 20

    async def scenario(r: Rig) -> None:
        params = add_tunnel_params(lab, settings)
        params["peer"]["ips"] = [str(target)]
        ok(await r.ctl.send_job("add-tunnel", params, jobid=41))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        mon = r.agent.monitor

        def probes() -> int:
            snap = mon.snapshot(7) or {"targets": []}
            return sum(t["replies"] + t["lost"] for t in snap["targets"])

        await until(lambda: (mon.snapshot(7) or {}).get("status") == "up", 15)
        # the path's own round trip (real VPP's af_packet adds a few ms), then the
        # injected delay and loss on top of it
        base = await path_rtt(target)
        await asyncio.to_thread(lab.set_delay, target, delay_ms)
        await asyncio.to_thread(lab.set_loss, loss)
        # a whole window of probes after the delay and loss are in place (the window
        # before may still hold probes lost while the delay responder started)
        start = probes()
        await until(lambda: probes() >= start + 40, 15)
        snap = mon.snapshot(7)
        assert snap is not None and snap["status"] == "up", snap
        assert abs(snap["rtt"] - base - delay_ms) <= 5, (snap, base)
        assert abs(snap["drop_rate"] - loss) <= 5, snap
        assert snap["bind"]["device"] == "peer7"
        # and the controller gets the same picture once a stats entry covers a full
        # window (entries are recorded every stats_period)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            stats = ok(await r.ctl.request("get-device-stats"))
            entries = [e["tunnel_stats"]["7"] for e in stats if "7" in e["tunnel_stats"]]
            good = [e for e in entries if e["status"] == "up"
                    and abs(e["rtt"] - base - delay_ms) <= 5
                    and abs(e["drop_rate"] - loss) <= 5]
            if good or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert good, entries

    try:
        run_lab(lab, workdir, settings, scenario)
    finally:
        lab.set_loss(0)
        lab.clear_delay(target)




@dataclass(frozen=True)
class Interop:
    """One row of the interop matrix: what the controller sends, what the peer typed."""

    ike: dict[str, Any]
    esp: dict[str, Any]
    peer: PeerSettings
    ids: tuple[str, str, str, str] = ("ip4-addr", "198.51.100.7", "fqdn", "gw.cloud.example")
    local_ts: tuple[str, str] = ("0.0.0.0", "255.255.255.255")
    remote_ts: tuple[str, str] = ("0.0.0.0", "255.255.255.255")
    nat: bool = False


def _t(crypto: str, integ: str, dh: str, size: int) -> dict[str, Any]:
    return {"crypto-alg": crypto, "integ-alg": integ, "dh-group": dh, "key-size": size}


MATRIX = {
    "aes-cbc-256/sha2-256/modp-2048": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256), PeerSettings()),
    "aes-gcm-16-256/ecp-256": Interop(
        _t("aes-gcm-16", "none", "ecp-256", 256), _t("aes-gcm-16", "none", "", 256),
        PeerSettings(ike_proposal="aes256gcm16-prfsha256-ecp256", esp_proposal="aes256gcm16")),
    "aes-cbc-128/sha1-96/modp-2048": Interop(
        _t("aes-cbc", "sha1-96", "modp-2048", 128), _t("aes-cbc", "sha1-96", "", 128),
        PeerSettings(ike_proposal="aes128-sha1-modp2048", esp_proposal="aes128-sha1")),
    "aes-cbc-256/sha2-384/ecp-384": Interop(
        _t("aes-cbc", "hmac-sha2-384-192", "ecp-384", 256),
        _t("aes-cbc", "hmac-sha2-384-192", "", 256),
        PeerSettings(ike_proposal="aes256-sha384-ecp384", esp_proposal="aes256-sha384")),
    "ids-fqdn-both": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256),
        PeerSettings(remote_id="edge-17.branch.example"),
        ids=("fqdn", "edge-17.branch.example", "fqdn", "gw.cloud.example")),
    "ids-ip4-addr-both": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256),
        PeerSettings(local_id="203.0.113.10"),
        ids=("ip4-addr", "198.51.100.7", "ip4-addr", "203.0.113.10")),
    "ids-rfc822": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256),
        PeerSettings(remote_id="tunnel-7@branch.example"),
        ids=("rfc822", "tunnel-7@branch.example", "fqdn", "gw.cloud.example")),
    "narrowed-selectors": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256),
        PeerSettings(local_ts="198.51.100.0/24", remote_ts="10.100.0.16/31"),
        local_ts=("10.100.0.16", "10.100.0.17"), remote_ts=("198.51.100.0", "198.51.100.255")),
    "device-behind-nat": Interop(
        _t("aes-cbc", "hmac-sha2-256-128", "modp-2048", 256),
        _t("aes-cbc", "hmac-sha2-256-128", "", 256), PeerSettings(), nat=True),
}


@pytest.mark.parametrize("case", list(MATRIX.values()), ids=list(MATRIX))
def test_interop_matrix_establishes_and_passes_probes(
        lab: Lab, workdir: Path, case: Interop) -> None:
    settings = case.peer

    async def scenario(r: Rig) -> None:
        params = add_tunnel_params(r.lab, settings)
        ikev2 = params["ikev2"]
        ikev2["ike"], ikev2["esp"] = case.ike, case.esp
        (ikev2["local-device-id-type"], ikev2["local-device-id"],
         ikev2["remote-device-id-type"], ikev2["remote-device-id"]) = case.ids
        for key, (start, end) in (("local-ts", case.local_ts), ("remote-ts", case.remote_ts)):
            ikev2[key]["start-addr"], ikev2[key]["end-addr"] = start, end
        ok(await r.ctl.send_job("add-tunnel", params, jobid=51))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        mon = r.agent.monitor
        await until(lambda: (mon.snapshot(7) or {}).get("status") == "up", 15)
        snap = mon.snapshot(7)
        assert snap is not None and snap["targets"][0]["replies"] >= 2, snap
        sas = await r.sas()
        assert sas and all(s.children == 1 for s in sas), sas
        if not r.real:
            sa = next(iter(r.sim.sim.state.sas.values()))
            alg = {"aes-cbc": 12, "aes-gcm-16": 20}[case.ike["crypto-alg"]]
            assert sa.ike["crypto_alg"] == alg
            assert sa.ike["crypto_key_size"] == case.ike["key-size"]
        seen_by_peer = r.peer.list_sas()
        assert f"{r.lab.device_public}[" in seen_by_peer, seen_by_peer  # NAT: its public side
        local_ts, remote_ts = settings.local_ts, settings.remote_ts
        assert f"local  {local_ts}" in seen_by_peer and f"remote {remote_ts}" in seen_by_peer

    async def ecp_scenario(r: Rig) -> None:
        """VPP 26.06's ECP secret is x||y, strongSwan's x (RFC 5903): the peer fails the
        integrity check of VPP's IKE_AUTH, and the agent says why."""
        params = add_tunnel_params(r.lab, settings)
        params["ikev2"]["ike"], params["ikev2"]["esp"] = case.ike, case.esp
        ok(await r.ctl.send_job("add-tunnel", params, jobid=51))
        state = r.agent.manager.states
        await until(lambda: state[7].status == "down" and state[7].reason == ECP_REASON, 20)
        if r.real:  # the peer's own account of it (vppsim's model sends no packets)
            assert "integrity check failed" in r.peer.charon.log_tail(400)

    if case.ike["dh-group"].startswith("ecp"):
        run_lab(lab, workdir, settings, ecp_scenario)
        return
    if case.nat and lab.vpp_wan:
        pytest.skip("real VPP's lab is always behind a NAT: every other row covers it")
    if case.nat:
        with Lab(nat=True) as nat_lab:
            run_lab(nat_lab, workdir, settings, scenario)
    else:
        run_lab(lab, workdir, settings, scenario)


def test_vppsim_command_owns_a_charon_in_its_namespace(lab: Lab, workdir: Path) -> None:
    if lab.vpp_wan:
        pytest.skip("tests the vppsim command itself (real VPP needs no charon of ours)")
    ready = workdir / "ready"
    ike_dir = workdir / "ike"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.device, sys.executable, "-m", "agent.lab.vppsim",
         "--socket", str(workdir / "api.sock"), "--ready-file", str(ready),
         "--interface", f"{WAN_NAME}={lab.device_wan_cidr}", "--ike", "strongswan",
         "--ike-workdir", str(ike_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "vppsim did not get ready"
            time.sleep(0.02)
        pid = int((ike_dir / "device-charon/run/charon.pid").read_text())
        # charon runs in the device namespace, not in ours
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{lab.device}").st_ino
        assert (ike_dir / "device-charon/charon.vici").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not Path(f"/proc/{pid}").exists()  # stopped with vppsim
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_lab_leaves_nothing_behind_even_when_its_user_fails() -> None:
    def namespaces() -> str:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    with pytest.raises(RuntimeError, match="boom"), Lab(nat=True, loss_percent=10) as lab:
        names = [lab.device, lab.internet, lab.peer, lab.nat_ns]
        assert all(n in namespaces() for n in names)
        lab.set_delay(lab.monitor_addrs[1], 5)
        responder = lab._responders[lab.monitor_addrs[1]]
        raise RuntimeError("boom")
    assert not any(n in namespaces() for n in names)
    assert responder.poll() is not None


class ExportedPeerSettings(PeerSettings):
    """The remote administrator loads exactly what `peerctl peer export --format swanctl`
    printed for the device's tunnel (with --show-secrets), nothing typed by hand."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.params = add_tunnel_params(lab, self)

    def swanctl_conf(self, lab: Lab) -> str:
        from agent.admin.export import render_swanctl
        from agent.jobs.validation import ValidationPolicy, normalize_add_tunnel

        spec = normalize_add_tunnel(self.params, ValidationPolicy())
        return render_swanctl(spec, show_secrets=True)


def test_peerctl_export_loads_in_strongswan_and_establishes(lab: Lab, workdir: Path) -> None:
    if lab.vpp_wan:
        pytest.skip("the export names the device's own WAN address as remote_addrs; real "
                    "VPP's lab puts the device behind a NAT (ESP in UDP), so the peer sees "
                    "another address")
    settings = ExportedPeerSettings(lab)

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", settings.params, jobid=41))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        state = r.agent.manager.states[7]
        assert state.ike_state == "AUTHENTICATED" and state.child_sas == 1
        assert "peer-7" in r.peer.list_sas()  # the exported connection is the one that is up

    run_lab(lab, workdir, settings, scenario)


def test_disjoint_selectors_end_down_with_ts_unacceptable(lab: Lab, workdir: Path) -> None:
    """The device protects 172.16.0.0/24 behind the peer; the peer offers only its
    198.51.100.0/24: no selector in common, the peer refuses the child SA."""
    # VPP 26.06 as initiator ignores the peer's TS_UNACCEPTABLE notify: the answer has
    # no SA payload, so its SA ends NO_PROPOSAL_CHOSEN (the peer refused our selectors)
    expected = "NO_PROPOSAL_CHOSEN" if lab.vpp_wan else "TS_UNACCEPTABLE"
    device_side = PeerSettings()
    peer_side = PeerSettings(local_ts="198.51.100.0/24", remote_ts="10.100.0.16/31")

    async def scenario(r: Rig) -> None:
        params = add_tunnel_params(lab, device_side)
        params["ikev2"]["remote-ts"]["start-addr"] = "172.16.0.0"
        params["ikev2"]["remote-ts"]["end-addr"] = "172.16.0.255"
        params["peer"]["ips"] = []
        ok(await r.ctl.send_job("add-tunnel", params, jobid=61))
        state = r.agent.manager.states
        await until(lambda: 7 in state and state[7].status == "down"
                    and state[7].reason.startswith(expected), 15)
        assert r.agent.manager.peer_summary(7)["child_sas"] == 0

    run_lab(lab, workdir, peer_side, scenario)


def test_a_vpp_restart_is_resynced_and_the_tunnel_comes_back(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=71))
        state = r.agent.manager.states
        await until(lambda: state[7].status == "up", 15)
        first_spi = (await r.sas())[0].ispi
        generation = r.agent.vpp.generation

        await r.plane.restart()  # a crash: VPP comes back empty
        await until(lambda: r.agent.vpp.generation > generation, 15)

        # the agent may connect before VPP's startup-config made the WAN: it reconciles
        # again until the peer is programmed
        monitor_route = IPv4Network(f"{lab.monitor_addrs[0]}/32")

        async def reprogrammed() -> bool:
            obs = await read_observed(r.agent.vpp)
            return 7 in obs.tunnels and "peer-7" in obs.profiles \
                and monitor_route in obs.routes.get(obs.tunnels[7].sw_if_index, ())

        await until_async(reprogrammed, 15)
        await until(lambda: r.agent.manager.in_sync, 15)
        await until(lambda: state[7].status == "up", 20)
        assert first_spi not in [s.ispi for s in await r.sas()]
        rc, out = await ping_through("peer7", lab.monitor_addrs[0])
        assert rc == 0, out

    run_lab(lab, workdir, settings, scenario)


def test_an_agent_restart_writes_nothing_and_keeps_the_sa(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=81))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        spis = [s.ispi for s in await r.sas()]
        before = await read_observed(r.agent.vpp)

        agent = await r.restart_agent()
        assert agent.manager.executor.writes == 0  # reconcile found VPP as it left it
        await until(lambda: agent.manager.states[7].status == "up", 15)
        assert [s.ispi for s in await r.sas()] == spis  # the same IKE SA carries on
        after = await read_observed(agent.vpp)
        assert after.tunnels == before.tunnels and after.profiles == before.profiles
        if not r.real:
            rc, out = await ping_through("peer7", lab.monitor_addrs[0])
            assert rc == 0, out
            return
        # VPP's stats segment (vppsim has none): per WAN and per tunnel, what passed
        # between two replies; the first reply with an entry is the baseline
        async def baseline() -> bool:
            return bool(ok(await r.ctl.request("get-device-stats")))

        await until_async(baseline, 10, poll=0.2)
        rc, out = await ping_through("peer7", lab.monitor_addrs[0], 20)
        assert rc == 0, out
        entries = ok(await r.ctl.request("get-device-stats"))
        assert all(e["period"] > 0 for e in entries), entries
        # the 20 pings and their replies, in the tunnel and as ESP on the WAN (the
        # monitor's probes add to both), shared out over the reply's entries

        def total(where: str, key: str, name: str) -> int:
            return sum(e[where].get(key, {}).get(name, 0) for e in entries)

        assert total("tunnel_stats", "7", "tx_pkts") >= 20, entries
        assert total("tunnel_stats", "7", "rx_pkts") >= 20, entries
        assert total("stats", DEV_ID, "tx_pkts") >= 20, entries
        assert total("stats", DEV_ID, "rx_pkts") >= 20, entries

    run_lab(lab, workdir, settings, scenario)


def test_a_static_route_through_the_peer_carries_traffic(lab: Lab, workdir: Path) -> None:
    """flexiManage's add-route via the peer's end of the /31: the prefix enters the
    tunnel (no monitor IP routes it here), and remove-route takes the path away."""
    settings = PeerSettings()
    prefix = IPv4Network(f"{lab.monitor_addrs[1]}/28", strict=False)
    route = {"addr": str(prefix), "via": "10.100.0.17", "redistributeViaOSPF": False,
             "redistributeViaBGP": False, "onLink": False}

    async def scenario(r: Rig) -> None:
        async def routed() -> set[IPv4Network]:
            obs = await read_observed(r.agent.vpp)
            return obs.routes.get(obs.tunnels[7].sw_if_index, set())

        async def stats_entries() -> bool:
            return bool(ok(await r.ctl.request("get-device-stats")))

        params = add_tunnel_params(lab, settings)
        params["peer"]["ips"] = []
        ok(await r.ctl.send_job("aggregated", {"requests": [
            {"entity": "agent", "message": "add-route", "params": route},
            {"entity": "agent", "message": "add-tunnel", "params": params}]}, jobid=95))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        assert await routed() == {prefix}
        if r.real:
            await until_async(stats_entries, 10, poll=0.2)  # the counters' baseline
        rc, out = await ping_through("peer7", lab.monitor_addrs[1], 10)
        assert rc == 0, out
        if r.real:  # the pings crossed the tunnel (VPP's stats segment)
            entries = ok(await r.ctl.request("get-device-stats"))
            sent = sum(e["tunnel_stats"].get("7", {}).get("tx_pkts", 0) for e in entries)
            assert sent >= 10, entries
        ok(await r.ctl.send_job("remove-route", route, jobid=96))
        assert await routed() == set()

    run_lab(lab, workdir, settings, scenario)


def test_a_long_fqdn_id_comes_up_and_a_restart_rewrites_nothing(
        lab: Lab, workdir: Path) -> None:
    """Cloudflare gives each tunnel an 86-byte FQDN ID; VPP takes up to 1024 bytes but
    dumps 63, which reconcile must not mistake for a changed profile."""
    long_id = f"{'0123456789abcdef' * 2}.{'fedcba9876543210' * 2}.ipsec.cloudflare.com"
    settings = PeerSettings(remote_id=long_id)

    async def scenario(r: Rig) -> None:
        params = add_tunnel_params(lab, settings)
        params["ikev2"]["local-device-id-type"] = "fqdn"
        params["ikev2"]["local-device-id"] = long_id
        ok(await r.ctl.send_job("add-tunnel", params, jobid=97))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        agent = await r.restart_agent()
        assert agent.manager.executor.writes == 0
        await agent.manager.check_drift()
        assert agent.manager.executor.writes == 0

    run_lab(lab, workdir, settings, scenario)


def test_real_vpp_runs_the_rendered_startup_conf_and_the_agent_on_it(
        lab: Lab, workdir: Path) -> None:
    if not lab.vpp_wan:
        pytest.skip("starts real VPP with the rendered startup.conf (vppsim reads none)")
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        conf = (r.base / "vpp" / "startup.conf").read_text()
        assert "main-heap-page-size 4k" in conf and "plugin ikev2_plugin.so" in conf
        ok(await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=91))
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        rc, out = await ping_through("peer7", lab.monitor_addrs[0])
        assert rc == 0, out

    run_lab(lab, workdir, settings, scenario,
            conf=lambda vpp: conf_from_rendered(vpp, linux_cp=has_vhost_net()))
