"""The FRR configuration kind on its own: names handed over before FRR is written,
an operator's lines left alone, nothing written when in sync."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.routing.kind import KIND, RoutingError
from agent.routing.manager import Vtysh
from agent.routing.render import Path

OPERATOR = ("ip route 192.0.2.0/24 Null0",)
OURS = (("router ospf",), ("router ospf", "redistribute kernel route-map fw-redist-ospf-rm"))


def as_text(paths: Sequence[Path]) -> str:
    return "\n".join(" " * (len(p) - 1) + p[-1] for p in paths) + "\n"


class FakeFrr(Vtysh):
    """A running configuration as paths; a load runs the plan's removals and additions."""

    def __init__(self, paths: Sequence[Path], fail: bool = False) -> None:
        super().__init__()
        object.__setattr__(self, "paths", list(paths))
        object.__setattr__(self, "loads", [])
        object.__setattr__(self, "fail", fail)
        object.__setattr__(self, "seen_names", [])

    async def running_config(self) -> str:
        return as_text(self.paths)  # type: ignore[attr-defined]

    async def load(self, script: str) -> tuple[int, str]:
        self.loads.append(script)  # type: ignore[attr-defined]
        if self.fail:  # type: ignore[attr-defined]
            return 1, "% Unknown command"
        plan = self.plan  # type: ignore[attr-defined]
        kept = [p for p in self.paths  # type: ignore[attr-defined]
                if (p[:-1], f"no {p[-1]}") not in plan.removals]
        added = [(*ctx, cmd) for ctx, cmd in plan.additions]
        heads = [ctx for ctx, _ in plan.additions if ctx and ctx not in kept]
        object.__setattr__(self, "paths", kept + heads + added)
        return 0, ""


async def test_names_are_owned_before_frr_is_written_and_an_operators_line_stays() -> None:
    frr = FakeFrr([OPERATOR])
    owned: list[tuple[Path, ...]] = []
    object.__setattr__(frr, "plan", await KIND.plan(frr, OURS, ()))
    plan = await KIND.apply(frr, OURS, (), owned.append)
    assert not plan.empty and len(frr.loads) == 1  # type: ignore[attr-defined]
    assert owned[0] == OURS  # told before the load
    assert OPERATOR in frr.paths  # type: ignore[attr-defined]
    # in sync: no write, no new names
    owned.clear()
    assert (await KIND.apply(frr, OURS, OURS, owned.append)).empty
    assert owned == [] and len(frr.loads) == 1  # type: ignore[attr-defined]
    # nothing wanted, nothing owned: FRR is not even read
    assert (await KIND.apply(Vtysh("/nonexistent/vtysh"), (), (), owned.append)).empty


async def test_a_line_frr_does_not_take_is_an_error_and_the_new_names_stay_owned() -> None:
    frr = FakeFrr([OPERATOR], fail=True)
    owned: list[tuple[Path, ...]] = []
    with pytest.raises(RoutingError, match="did not take 1 line"):
        await KIND.apply(frr, OURS, (), owned.append)
    assert owned == [OURS]  # a half-done write is still the agent's to undo
