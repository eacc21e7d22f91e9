"""The agent's part of FRR's configuration as one kind, like the VPP kinds
(`agent/vpp/kinds/`, `agent/policy/kinds/`): one home for its names, its observe,
its comparison and its create/delete.

* names: the configuration lines (paths, see `render.py`) the agent applied, kept by
  the RoutingManager across restarts in a 0600 file; an operator's lines are not
  among them and are never touched;
* desired: the model rendered (`render.py`), as FRR will print it (`printable`);
* observe: `show running-config` read back as paths (`frrconf.parse`);
* compare: `frrconf.diff` (desired, running, names) -> Plan, empty when in sync;
* create and delete: the plan loaded as one `vtysh -f` file, then FRR read back:
  anything still different is an error. The undo of a failed apply is the same
  apply of the names held before (RoutingManager.apply).

It is one kind, not a list of them: FRR's configuration is compared as one set of
lines (a route-map, its access-list and the router block that names it change
together), and its names are one list in one file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.routing.frrconf import P2P_LINE, Plan, diff, elide_defaults, mask, parse
from agent.routing.model import RoutingModel
from agent.routing.render import Path, render

if TYPE_CHECKING:
    from agent.routing.manager import Vtysh

log = logging.getLogger("agent.routing.manager")  # the lines it writes log as the manager's


class RoutingError(RuntimeError):
    """FRR could not be read or did not take the configuration; the text is secret-free."""


class FrrConfig:
    """The FRR configuration kind. Holds no state: the names are passed in and handed
    back through `own`, the caller keeps (and persists) them."""

    name = "frr-config"

    def desired(self, model: RoutingModel) -> tuple[Path, ...]:
        return render(model)

    async def observe(self, vtysh: Vtysh) -> tuple[Path, ...]:
        return parse(await vtysh.running_config())

    async def printable(self, vtysh: Vtysh, desired: Sequence[Path]) -> tuple[Path, ...]:
        """`desired` as FRR will print it, given which interfaces are point-to-point now."""
        if not any(p[-1] == P2P_LINE for p in desired):
            return tuple(desired)
        return elide_defaults(desired, await self._p2p_interfaces(vtysh))

    async def _p2p_interfaces(self, vtysh: Vtysh) -> set[str]:
        try:
            interfaces = json.loads(await vtysh.show("show interface json"))
        except ValueError:
            return set()
        return {name for name, i in interfaces.items()
                if isinstance(i, dict) and "POINTOPOINT" in str(i.get("flags", ""))}

    def compare(self, desired: Sequence[Path], running: Sequence[Path],
                names: Sequence[Path]) -> Plan:
        return diff(desired, running, set(names))

    async def plan(self, vtysh: Vtysh, wanted: Sequence[Path],
                   names: Sequence[Path]) -> Plan:
        """What `apply` would write now (nothing written)."""
        running = await self.observe(vtysh)
        return self.compare(await self.printable(vtysh, wanted), running, names)

    async def apply(self, vtysh: Vtysh, wanted: Sequence[Path], names: tuple[Path, ...],
                    own: Callable[[tuple[Path, ...]], None]) -> Plan:
        """Make FRR hold exactly `wanted` of the lines the agent owns; returns what
        changed. `own` is told the names before FRR is touched (after a crash half-way
        the new lines are still the agent's) and once FRR holds `wanted`."""
        if not wanted and not names:
            return Plan((), ())  # no routing, none applied: FRR need not even be installed
        desired = await self.printable(vtysh, wanted)
        plan = self.compare(desired, await self.observe(vtysh), names)
        if not plan.empty:
            known = set(names)
            names += tuple(p for p in desired if p not in known)
            own(names)
            for line in plan.describe():
                log.info("frr: %s", line)
            rc, out = await vtysh.load(plan.script())
            desired = await self.printable(vtysh, wanted)  # an interface may have come meanwhile
            rest = self.compare(desired, await self.observe(vtysh), names)
            if not rest.empty:
                said = mask(" | ".join(x.strip() for x in out.splitlines() if x.strip()))
                raise RoutingError(
                    f"FRR did not take {len(rest.commands())} line(s): "
                    f"{'; '.join(rest.describe()[:5])} (vtysh exit {rc}"
                    + (f": {said[:400]})" if said else ")"))
            if any(cmd.startswith("ospf router-id") for _, cmd in plan.commands()):
                # FRR keeps the old id while an area has a full neighbour and only prints
                # that this is needed (ospfd/ospf_vty.c); flexiagent restarts FRR for it
                log.info("frr: clear ip ospf process (the OSPF router-id changed)")
                await vtysh.show("clear ip ospf process")
        if names != tuple(desired):
            own(tuple(desired))
        return plan


KIND = FrrConfig()
