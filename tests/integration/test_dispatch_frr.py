"""Controller jobs through the dispatcher into a real FRR (zebra, ospfd, bgpd) in a test
namespace: add, sync-device convergence with no FRR write, removal leaving nothing
behind, an FRR failure undoing the job's VPP steps, and reconcile after an FRR restart.

The VPP side is the recording fake peer manager of the unit tests (the peer manager's
own all-or-nothing is tested against vppsim elsewhere); the device FRR has private
vty/pid directories (agent/lab/frr.py), never the host's frr service.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from probe_netns import Lab, netns_unavailable_reason

from agent.jobs.cfgstore import ConfigStore
from agent.jobs.dispatch import JobDispatcher
from agent.jobs.validation import ValidationPolicy
from agent.lab.frr import Frr, missing
from agent.routing.manager import RoutingManager, Vtysh
from tests.unit.test_jobs_dispatch import FakeManager, job, no_stats, peer_params, run

pytestmark = pytest.mark.netns

_SKIP = netns_unavailable_reason() or missing()

OSPF = {"routerId": "192.0.2.1", "redistributeBgp": False, "custom": []}
BGP = {"localAsn": "65001", "routerId": "192.0.2.1", "redistributeOspf": False,
       "neighbors": [{"ip": "10.100.0.21", "remoteAsn": "65010", "password": "",
                      "inboundFilter": "", "outboundFilter": ""}],
       "networks": [{"ipv4": "192.168.1.0/24"}]}


@dataclass(frozen=True)
class CountingVtysh(Vtysh):
    """vtysh that counts the configuration files it loads (a load is an FRR write)."""

    loads: list[str] = field(default_factory=list)

    async def load(self, script: str) -> tuple[int, str]:
        self.loads.append(script)
        return await super().load(script)


@dataclass
class Rig:
    frr: Frr
    vtysh: CountingVtysh
    manager: FakeManager
    d: JobDispatcher
    state: Path


@pytest.fixture
def frr_ns() -> Iterator[tuple[Lab, Frr]]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Lab() as lab:
        ns, far = lab.netns("wdev"), lab.netns("wfar")
        # the tunnels' Linux sides (veths standing in for linux-cp TUNs; no peer FRR)
        lab.veth(ns, "peer7", "10.100.0.16/31", far, "p7", "10.100.0.17/31")
        lab.veth(ns, "peer8", "10.100.0.18/31", far, "p8", "10.100.0.19/31")
        with Frr(ns, "wdev") as frr:
            yield lab, frr


def make_rig(frr: Frr, state: Path, manager: FakeManager | None = None) -> Rig:
    vtysh = CountingVtysh(vty_socket=frr.vty_socket)
    mgr = manager or FakeManager()
    d = JobDispatcher(mgr, ValidationPolicy(), stats=no_stats,  # type: ignore[arg-type]
                      config=ConfigStore(state),
                      routing=RoutingManager(vtysh, state / "frr-owned.json"))
    return Rig(frr, vtysh, mgr, d, state)


@pytest.fixture
def rig(frr_ns: tuple[Lab, Frr], tmp_path: Path) -> Rig:
    return make_rig(frr_ns[1], tmp_path / "state")


def lines(frr: Frr) -> list[str]:
    return [ln for ln in frr.running_config().splitlines()
            if not ln.startswith(("Building", "Current"))]


def listed() -> list[dict[str, Any]]:
    return [job("add-ospf", OSPF), job("add-routing-bgp", BGP),
            job("add-tunnel", peer_params(7))]


async def test_jobs_configure_frr_and_sync_device_then_writes_nothing(rig: Rig) -> None:
    before = lines(rig.frr)
    for msg in listed():
        out = await run(rig.d, msg)
        assert out.ok, out.message
    config = lines(rig.frr)
    for line in ("interface peer7", " ip ospf cost 100", " ospf router-id 192.0.2.1",
                 " network 10.100.0.16/31 area 0.0.0.0", "router bgp 65001",
                 " neighbor 10.100.0.21 remote-as 65010"):
        assert line in config, line
    loads = len(rig.vtysh.loads)
    assert loads == 3  # one FRR write per job

    # the whole configuration again, as flexiManage's sync-device: nothing to write
    sync = job("sync-device", {"requests": copy.deepcopy(listed())})
    assert (await run(rig.d, sync)).ok
    assert len(rig.vtysh.loads) == loads
    assert lines(rig.frr) == config
    assert rig.manager.synced[-1] == list(rig.manager.desired.values())  # same peers
    assert rig.d.cfg_hash() == ""

    # an agent restart: a new routing manager finds everything in place
    again = make_rig(rig.frr, rig.state, rig.manager)
    await again.d.reconcile_routing()
    assert again.vtysh.loads == []

    # removing all of it leaves FRR as it was before the first job
    for msg in (job("remove-tunnel", {"tunnel-id": 7}), job("remove-routing-bgp", {}),
                job("remove-ospf", {})):
        assert (await run(again.d, msg)).ok
    assert lines(rig.frr) == before


async def test_frr_failure_fails_the_job_and_undoes_vpp_then_reconcile_repairs(
        rig: Rig) -> None:
    for msg in listed():
        assert (await run(rig.d, msg)).ok
    config = lines(rig.frr)
    signature, recorded = rig.d.cfg_hash(), rig.d.recorded_config()
    desired = dict(rig.manager.desired)

    rig.frr._terminate()  # FRR down
    out = await run(rig.d, job("add-tunnel", peer_params(8)))
    assert not out.ok
    assert "FRR" in out.message and "the job's VPP changes were undone" in out.message
    assert rig.manager.desired == desired  # tunnel 8 is gone from VPP again
    assert rig.d.cfg_hash() == signature and rig.d.recorded_config() == recorded

    # FRR restarts empty: the periodic reconcile puts the agent's configuration back
    rig.frr.restart()
    assert "ip ospf cost 100" not in rig.frr.running_config()
    await rig.d.reconcile_routing()
    assert lines(rig.frr) == config
