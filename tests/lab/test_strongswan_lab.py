"""End to end with real IKEv2 and ESP: controller double -> agent -> vppsim + charon
-> an independently configured strongSwan peer, in network namespaces.

Every test runs the agent, vppsim and the controller double on an event loop in a
thread that joined the lab's device namespace; the peer's charon runs in the peer
namespace with its own swanctl.conf (agent/lab/peer.py).
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
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.config import AgentConfig, parse_config
from agent.lab.controller_double import ControllerDouble
from agent.lab.offline import offline_name_resolver
from agent.lab.peer import PeerGateway, PeerSettings
from agent.lab.topology import Lab, run_in_netns
from agent.lab.vppsim.ike_strongswan import StrongswanIke, charon_available
from agent.lab.vppsim.server import VppSim
from agent.logsetup import configure_logging
from tests.fixtures import example_request
from tests.waiting import until

MACHINE = "3f1c0000-0000-4000-8000-00000000ab00"
DEVICE_TOKEN = "device-token-lab-never-logged"
WAN_NAME = "GigabitEthernet0/3/0"


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
def lab() -> Iterator[Lab]:
    """One topology per module: the peer and device charons are per test."""
    with Lab() as lab:
        yield lab


@dataclass
class Rig:
    lab: Lab
    sim: VppSim
    ike: StrongswanIke
    ctl: ControllerDouble
    agent: Agent
    peer: PeerGateway
    logs: io.StringIO


def add_tunnel_params(lab: Lab, settings: PeerSettings) -> dict[str, Any]:
    """The protocol document's add-tunnel with the lab's addresses and the agreed PSK."""
    params: dict[str, Any] = example_request()["params"]
    params["src"] = str(lab.device_addr)
    params["dst"] = str(lab.peer_addr)
    params["peer"]["ips"] = [str(lab.monitor_addrs[0])]
    params["peer"]["urls"] = []
    params["ikev2"]["psk"] = settings.psk
    return params


def _config(ctl: ControllerDouble, sim: VppSim, base: Path) -> AgentConfig:
    token_file = base / "device.token"
    token_file.write_text(DEVICE_TOKEN)
    token_file.chmod(0o600)
    return parse_config({
        "controller": {"url": ctl.url, "machine_id": MACHINE, "token_file": str(token_file),
                       "allow_insecure": True, "backoff_min": 0.05, "backoff_max": 0.3,
                       "ping_interval": 0.5, "silence_timeout": 5.0},
        "vpp": {"api_socket": str(sim.socket_path), "call_timeout": 2.0},
        "state": {"dir": str(base / "state")},
        "admin": {"socket": str(base / "admin.sock")},
        # faster supervision than the daemon's defaults, so the lab stays quick
        "peers": {"sa_poll_interval": 0.2, "reinit_backoff_min": 0.5},
        "monitor": {"interval": 0.05, "timeout": 0.4, "window": 20, "down_after": 2,
                    "up_after": 2, "stats_period": 1.0},
        "logging": {"level": "debug"},
    }, {})


@contextlib.asynccontextmanager
async def rig(lab: Lab, base: Path, peer: PeerGateway) -> AsyncIterator[Rig]:
    """vppsim with the strongSwan backend, the controller double and the agent."""
    ike = StrongswanIke(base / "dev", poll=0.1, failed_linger=3.0, initiate_timeout=6.0,
                        dpd_delay=1.0)
    sim = VppSim(base / "api.sock", interfaces=[(WAN_NAME, lab.device_wan_cidr)], ike=ike)
    await sim.start()
    logs = io.StringIO()
    configure_logging("debug", json=True, stream=logs)
    ctl = ControllerDouble(machine_id=MACHINE, device_token=DEVICE_TOKEN, ping_interval=0.5,
                           stats_interval=None, job_timeout=15.0)
    try:
        await ctl.start()
        agent = Agent(_config(ctl, sim, base),
                      name_resolver=offline_name_resolver)
        task = asyncio.create_task(agent.run())
        try:
            await ctl.wait_connected(10)
            await until(lambda: agent.manager.in_sync, 10)
            yield Rig(lab, sim, ike, ctl, agent, peer, logs)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await ctl.stop()
    finally:
        configure_logging("warning", json=True, stream=sys.stderr)
        await sim.stop()


def run_lab(lab: Lab, base: Path, settings: PeerSettings,
            scenario: Callable[[Rig], Awaitable[None]]) -> None:
    """Start the peer, run `scenario` on a loop inside the device namespace, clean up."""
    peer = PeerGateway(lab, base, settings)
    peer.start()

    async def main() -> None:
        async with rig(lab, base, peer) as r:
            await scenario(r)

    try:
        run_in_netns(lab.device, lambda: asyncio.run(main()))
    except BaseException:
        print("--- peer charon log ---\n" + peer.charon.log_tail(40))
        print("--- device charon log ---\n" + _tail(base / "dev/device-charon/charon.log", 400))
        raise
    finally:
        peer.stop()


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


def test_add_tunnel_negotiates_with_the_peer_and_carries_pings(lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()

    async def scenario(r: Rig) -> None:
        reply = await r.ctl.send_job("add-tunnel", add_tunnel_params(lab, settings), jobid=1)
        assert ok(reply) == "success"
        await until(lambda: r.agent.manager.states[7].status == "up", 15)
        state = r.agent.manager.states[7]
        assert state.ike_state == "AUTHENTICATED" and state.child_sas == 1
        # the SA vppsim reports is charon's: same SPIs as the peer sees
        sa = next(iter(r.sim.state.sas.values()))
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
        s = r.ike.charon.session()
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
        assert await device_charon(r) != ([], [])
        assert "peer7" in linux_links()

        ok(await r.ctl.send_job("remove-tunnel", {"tunnel-id": 7}, jobid=12))
        snap = r.sim.snapshot()
        assert snap["tunnels"] == {} and snap["profiles"] == {} and snap["sas"] == []
        assert snap["routes"] == [] and snap["lcp"] == {}

        async def charon_empty() -> bool:
            return await device_charon(r) == ([], [])

        deadline = asyncio.get_running_loop().time() + 5
        while not await charon_empty():
            assert asyncio.get_running_loop().time() < deadline, await device_charon(r)
            await asyncio.sleep(0.05)
        await until(lambda: "peer7" not in linux_links(), 5)
        # the peer saw the DELETE: it holds no SA for us either
        await until(lambda: "edge-device" not in r.peer.list_sas(), 5)

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
        first_spi = next(iter(r.sim.state.sas.values())).ispi
        before = state[7].reinitiations

        await asyncio.to_thread(r.peer.restart)  # crash: no DELETE, all SAs forgotten
        await until(lambda: state[7].status != "up", 15)  # DPD found the peer gone
        await until(lambda: state[7].status == "up", 15)
        assert state[7].reinitiations > before
        spis = [sa.ispi for sa in r.sim.state.sas.values()]
        assert spis and first_spi not in spis
        rc, out = await ping_through("peer7", lab.monitor_addrs[0])
        assert rc == 0, out

    run_lab(lab, workdir, settings, scenario)


def test_probes_through_the_tunnel_measure_the_injected_delay_and_loss(
        lab: Lab, workdir: Path) -> None:
    settings = PeerSettings()
    target = lab.monitor_addrs[1]
    delay_ms, loss = 30.0, 20
    lab.set_delay(target, delay_ms)
    lab.set_loss(loss)

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
        # a whole window of probes sent after the tunnel came up
        start = probes()
        await until(lambda: probes() >= start + 20, 15)
        snap = mon.snapshot(7)
        assert snap is not None and snap["status"] == "up", snap
        assert abs(snap["rtt"] - delay_ms) <= 5, snap
        assert abs(snap["drop_rate"] - loss) <= 5, snap
        assert snap["bind"]["device"] == "peer7"
        # and the controller gets the same picture once a stats entry covers a full
        # window (entries are recorded every stats_period)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            stats = ok(await r.ctl.request("get-device-stats"))
            entries = [e["tunnel_stats"]["7"] for e in stats if "7" in e["tunnel_stats"]]
            good = [e for e in entries if e["status"] == "up"
                    and abs(e["rtt"] - delay_ms) <= 5 and abs(e["drop_rate"] - loss) <= 5]
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
        sa = next(iter(r.sim.state.sas.values()))
        assert sa.ike["crypto_alg"] == {"aes-cbc": 12, "aes-gcm-16": 20}[case.ike["crypto-alg"]]
        assert sa.ike["crypto_key_size"] == case.ike["key-size"]
        assert r.sim.state.sas and all(len(s.children) == 1 for s in r.sim.state.sas.values())
        seen_by_peer = r.peer.list_sas()
        assert f"{r.lab.device_public}[" in seen_by_peer, seen_by_peer  # NAT: its public side
        local_ts, remote_ts = settings.local_ts, settings.remote_ts
        assert f"local  {local_ts}" in seen_by_peer and f"remote {remote_ts}" in seen_by_peer

    if case.nat:
        with Lab(nat=True) as nat_lab:
            run_lab(nat_lab, workdir, settings, scenario)
    else:
        run_lab(lab, workdir, settings, scenario)


def test_vppsim_command_owns_a_charon_in_its_namespace(lab: Lab, workdir: Path) -> None:
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
                    and state[7].reason.startswith("TS_UNACCEPTABLE"), 15)
        assert r.agent.manager.peer_summary(7)["child_sas"] == 0

    run_lab(lab, workdir, peer_side, scenario)
