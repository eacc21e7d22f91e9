"""RoutingManager's flow with a stand-in for vtysh: one load per change, none when equal,
the `bgp` stats reading cached. (Real FRR: tests/integration/test_routing_frr.py.)"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.routing.frrconf import parse
from agent.routing.manager import RoutingError, RoutingManager, Vtysh
from agent.routing.model import RoutingModel, from_params, peer_routing
from agent.routing.render import Path as ConfPath
from agent.routing.render import render

SUMMARY = {"ipv4Unicast": {"routerId": "192.0.2.1", "as": 65001, "failedPeers": 0,
                           "displayedPeers": 0, "totalPeers": 0, "peers": {}}}


def as_text(paths: Sequence[ConfPath]) -> str:
    return "\n".join(" " * (len(p) - 1) + p[-1] for p in paths) + "\n"


class FakeFrr(Vtysh):
    """Holds a configuration as paths; a loaded script replaces it with what the test says."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "paths", [])
        object.__setattr__(self, "loads", [])
        object.__setattr__(self, "shows", [])

    async def running_config(self) -> str:
        return as_text(self.paths)  # type: ignore[attr-defined]

    async def show(self, command: str) -> str:
        self.shows.append(command)  # type: ignore[attr-defined]
        if command == "show interface json":
            return json.dumps({"peer7": {"flags": "<UP,BROADCAST,RUNNING,MULTICAST>"}})
        return json.dumps(SUMMARY)

    async def load(self, script: str) -> tuple[int, str]:
        self.loads.append(script)  # type: ignore[attr-defined]
        # a well-behaved FRR: ends up with exactly what the script's target is
        object.__setattr__(self, "paths", list(self.target))  # type: ignore[attr-defined]
        return 0, ""


def model(cost: str) -> RoutingModel:
    return from_params(peers=[peer_routing(7, {"addr": "10.100.0.16/31", "ospf-cost": cost})],
                       bgp={"localAsn": "65001"})


async def test_a_change_is_one_load_and_no_change_is_none(tmp_path: Path) -> None:
    frr = FakeFrr()
    object.__setattr__(frr, "target", render(model("10")))
    m = RoutingManager(frr, tmp_path / "owned.json")
    assert not (await m.apply(model("10"))).empty
    assert len(frr.loads) == 1  # type: ignore[attr-defined]
    assert (await m.apply(model("10"))).empty
    assert len(frr.loads) == 1  # type: ignore[attr-defined]
    assert m.model == model("10")
    assert m.owned == set(render(model("10")))
    saved = json.loads((tmp_path / "owned.json").read_text())["owned"]
    assert [tuple(p) for p in saved] == list(render(model("10")))


async def test_frr_that_does_not_take_a_line_is_an_error_and_is_restored() -> None:
    frr = FakeFrr()
    object.__setattr__(frr, "target", render(model("10")))
    m = RoutingManager(frr)
    await m.apply(model("10"))
    # FRR "keeps" the old configuration whatever it is told: the apply of cost 20 fails
    with pytest.raises(RoutingError, match="ip ospf cost 20"):
        await m.apply(model("20"))
    assert parse(await frr.running_config()) == render(model("10"))
    assert m.model == model("10")


async def test_stats_bgp_is_read_at_most_every_max_age() -> None:
    frr = FakeFrr()
    object.__setattr__(frr, "target", render(model("10")))
    m = RoutingManager(frr)
    assert await m.stats_bgp() == {}  # nothing applied: no BGP
    await m.apply(model("10"))
    first = await m.stats_bgp(max_age=3600)
    assert first["as"] == 65001
    assert await m.stats_bgp(max_age=3600) == first
    bgp_reads = lambda: [c for c in frr.shows if "bgp" in c]  # type: ignore[attr-defined]  # noqa: E731
    assert bgp_reads() == ["show bgp summary json"]
    await m.stats_bgp(max_age=0)
    assert len(bgp_reads()) == 2
    object.__setattr__(frr, "target", ())
    await m.apply(RoutingModel())
    assert await m.stats_bgp(max_age=0) == {}


async def test_reconcile_restores_what_an_frr_restart_lost() -> None:
    frr = FakeFrr()
    object.__setattr__(frr, "target", render(model("10")))
    m = RoutingManager(frr)
    assert await m.reconcile() is None  # nothing applied yet: nothing to restore
    await m.apply(model("10"))
    assert (await m.reconcile()).empty  # type: ignore[union-attr]
    object.__setattr__(frr, "paths", [])  # FRR restarted with no configuration
    plan = await m.reconcile()
    assert plan is not None and len(plan.additions) > 0
    assert parse(await frr.running_config()) == render(model("10"))


async def test_without_routing_frr_is_not_needed_and_a_missing_vtysh_is_named() -> None:
    m = RoutingManager(Vtysh(binary="/nonexistent/vtysh"))
    assert (await m.apply(RoutingModel())).empty
    with pytest.raises(RoutingError, match="is frr installed"):
        await m.apply(model("10"))
    assert m.model == RoutingModel()


async def test_vtyshs_warnings_stay_out_of_the_answer_and_are_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without read access to /etc/frr, vtysh still answers but first warns on stderr;
    mixed into stdout, the warning made every JSON answer unreadable."""
    script = tmp_path / "vtysh"
    script.write_text("#!/bin/sh\n"
                      "echo \"% Can't open configuration file /etc/frr/vtysh.conf due to "
                      "'Permission denied'.\" >&2\n"
                      "echo '{\"peer7\": {\"flags\": \"<UP,POINTOPOINT,RUNNING>\"}}'\n")
    script.chmod(0o755)
    vtysh = Vtysh(binary=str(script))
    with caplog.at_level("WARNING", logger="agent.routing.manager"):
        for _ in range(3):
            assert json.loads(await vtysh.show("show interface json")) == {
                "peer7": {"flags": "<UP,POINTOPOINT,RUNNING>"}}
    said = [r.getMessage() for r in caplog.records if "vtysh said" in r.getMessage()]
    assert len(said) == 1 and "vtysh.conf" in said[0]
    rc, out = await vtysh.load("router ospf\n")
    assert rc == 0 and "vtysh.conf" in out and "peer7" in out  # both, for error texts
