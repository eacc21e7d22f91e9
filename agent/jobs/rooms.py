"""What the routing (FRR) and path-selection rooms get from the recorded configuration.

Pure: no I/O. The dispatcher records every configuration message; this module
derives from the recorded items the routing model `RoutingManager.apply` wants
and which `PolicyManager` call a job's requests ask for, so the job path knows
nothing of FRR lines or ACLs. The Protocols are the parts of the two managers
the dispatcher calls (tests pass fakes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.jobs.devcfg import ConfigRequest, Items
from agent.jobs.messages import ROUTER_MESSAGES
from agent.policy.model import Application, parse_applications, parse_policy
from agent.routing.frrconf import Plan
from agent.routing.model import RoutingModel, from_params, peer_routing

# recorded items that feed FRR (a route only when it is redistributed)
ROUTING_ITEMS = frozenset({"ospf", "routing-bgp", "routing-filter"})


class Routing(Protocol):
    """agent.routing.manager.RoutingManager, as far as the job path needs it."""

    @property
    def model(self) -> RoutingModel | None: ...

    async def apply(self, model: RoutingModel) -> Plan: ...

    async def bgp_status(self) -> dict[str, Any]: ...

    async def stats_bgp(self, max_age: float = 180.0) -> dict[str, Any]: ...

    async def peer_status(self) -> list[dict[str, Any]]: ...


class Policies(Protocol):
    """agent.policy.manager.PolicyManager, as far as the job path needs it."""

    applications: dict[str, Application]

    async def apply(self, policy_params: Mapping[str, Any],
                    applications_params: Mapping[str, Any] | None = None) -> int: ...

    async def remove(self) -> int: ...

    async def set_applications(self, applications_params: Mapping[str, Any] | None) -> int: ...

    async def release(self, tunnel_ids: Iterable[int]) -> int: ...

    def restore(self, tunnel_ids: Iterable[int]) -> None: ...


def _params(items: Items, key: str) -> Mapping[str, Any] | None:
    item = items.get(key)
    return item[1] if item is not None and isinstance(item[1], Mapping) else None


def _redistributed(params: Mapping[str, Any]) -> bool:
    return bool(params.get("redistributeViaOSPF") or params.get("redistributeViaBGP"))


def routing_model(items: Items, router_state: str) -> RoutingModel:
    """The routing the recorded configuration asks for; none while the router is stopped
    (its peer tunnels are not in VPP then, as flexiagent's stop-router takes FRR's too).
    Raises RoutingModelError naming a field FRR could not take."""
    if router_state == "stopped":
        return RoutingModel()
    peers = []
    filters = []
    routes = []
    interfaces = []
    for key, (_, params) in sorted(items.items()):
        if not isinstance(params, Mapping):
            continue
        if key.startswith("tunnel:") and isinstance(params.get("peer"), Mapping):
            peers.append(peer_routing(int(key[7:]), params["peer"]))
        elif key.startswith("routing-filter:"):
            filters.append(params)
        elif key.startswith("route:") and _redistributed(params):
            routes.append(params)
        elif key.startswith("interface:"):
            interfaces.append(params)
    return from_params(peers=peers, ospf=_params(items, "ospf"),
                       bgp=_params(items, "routing-bgp"), filters=filters, routes=routes,
                       interfaces=interfaces)


def wan_dia_labels(items: Items) -> frozenset[str]:
    """The path labels of the recorded WAN interfaces (flexiManage sends a WAN's DIA
    labels as `add-interface` `multilink.labels`)."""
    out: set[str] = set()
    for key, (_, params) in items.items():
        if not key.startswith("interface:") or not isinstance(params, Mapping) \
                or str(params.get("type", "")).upper() != "WAN":
            continue
        multilink = params.get("multilink")
        labels = multilink.get("labels") if isinstance(multilink, Mapping) else None
        if isinstance(labels, list):
            out.update(str(label) for label in labels if label)
    return frozenset(out)


def touches_routing(requests: Sequence[ConfigRequest]) -> bool:
    """Whether FRR may have something to do for these requests (the job path then
    compares the models; other jobs leave FRR to the periodic reconcile)."""
    for r in requests:
        if r.item in ROUTING_ITEMS or r.message in ROUTER_MESSAGES:
            return True
        if r.item in ("tunnel", "route", "interface"):  # a remove names only the key
            return True
    return False


@dataclass(frozen=True)
class PolicyStep:
    """The PolicyManager calls of a job: `apply` (policy, applications or None to keep
    them), `remove`, `applications` (set_applications with `apps`), or `replace-apps`
    (sync-device without a policy: remove, then set_applications with `apps`)."""

    kind: str
    policy: Mapping[str, Any] | None = None
    apps: Mapping[str, Any] | None = None

    def check(self, known: dict[str, Application]) -> None:
        """Raise PolicyError now, before any VPP step, for params the manager would refuse."""
        apps = parse_applications(self.apps) if self.apps is not None else known
        if self.kind == "apply" and self.policy is not None:
            parse_policy(self.policy, apps)


def policy_step(requests: Sequence[ConfigRequest]) -> PolicyStep | None:
    """The PolicyManager call a job's requests ask for (None: the policy is not touched)."""
    policy = next((r for r in requests if r.item == "multilink-policy"), None)
    app = next((r for r in requests if r.item == "application"), None)
    app_params = (app.params if app is not None and app.verb == "add"
                  and isinstance(app.params, Mapping) else None)
    if policy is not None:
        if policy.verb == "remove":
            return PolicyStep("remove")
        if isinstance(policy.params, Mapping):
            return PolicyStep("apply", policy.params, app_params)
    if app is not None:
        return PolicyStep("applications", apps=app_params)
    return None


def policy_step_sync(items: Items) -> PolicyStep:
    """sync-device lists the whole configuration: its policy (with its application
    database, empty when none is listed), or none at all."""
    policy = _params(items, "multilink-policy")
    apps = _params(items, "application")
    if policy is None:
        return PolicyStep("replace-apps", apps=apps)
    return PolicyStep("apply", policy, apps if apps is not None else {})
