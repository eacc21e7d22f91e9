"""The policy room's I/O: program VPP, follow link health, re-program on change.

`apply(policy_params, applications_params)` is what the job path calls for
`add-multilink-policy` (with the params of an `add-application` of the same
message, or None to keep the last ones); `remove()` for `remove-multilink-policy`;
`reconcile()` after a VPP (re)connect or an agent start; `run()` follows tunnel
health and re-programs a rule when its choice of paths changes, logging the
reason and counting the re-programming. Every programming is one all-or-nothing
executor run of the observed -> desired diff, so VPP is never left half-changed.

The job path (agent/jobs) wires it like this: `add-multilink-policy` (alone, in an
aggregated message after `add-application`, or in `sync-device`) -> `apply(params,
add_application_params_or_None)`; `remove-multilink-policy` -> `remove()`; a lone
`add-application` / `remove-application` -> `set_applications(params_or_None)`; a
`sync-device` without a policy -> `remove()`. Before a peer tunnel is deleted or
re-created in VPP (remove-tunnel, modify-tunnel, reconcile cleanup) -> `release(ids)`,
and `restore(ids)` once it exists again. PolicyError and ApplyError carry the text
for the job reply.

Links are the desired peer tunnels carrying a label (peer.multilink.labels):
path via the peer's end of the tunnel /31 on the tunnel's ipip interface, usable
while the monitor says the tunnel is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from agent.peers.spec import PeerSpec
from agent.policy import kinds
from agent.policy.decide import Choice, Hysteresis, Link, LinkHealth, decide_all
from agent.policy.kinds import diff, remove_all
from agent.policy.kinds.abf_policy import PATH_NORMAL, PathSpec
from agent.policy.kinds.base import Observed
from agent.policy.model import Application, Policy, PolicyError, parse_applications, parse_policy
from agent.policy.translate import desired_rules
from agent.vpp.errors import VppError
from agent.vpp.executor import ApplyError, Executor
from agent.vpp.plan import Op

log = structlog.get_logger(__name__)

NO_INDEX = 0xFFFFFFFF
NEEDED = kinds.messages()
PLUGIN_OF = {"acl": "acl_plugin.so", "abf": "abf_plugin.so"}


class Vpp(Protocol):
    """What the manager needs of agent.vpp.client.VppClient."""

    async def call(self, name: str, /, *, _timeout: float | None = None, _check: bool = True,
                   **fields: Any) -> Any: ...

    async def dump(self, name: str, /, *, _timeout: float | None = None,
                   **fields: Any) -> list[Any]: ...

    def has(self, name: str) -> bool: ...


class Health(Protocol):
    """agent.monitor.health.HealthSnapshot, as far as the choice needs it."""

    @property
    def status(self) -> str: ...

    @property
    def rtt_ms(self) -> float: ...

    @property
    def drop_rate(self) -> float: ...

    @property
    def reason(self) -> str: ...


PeersView = Callable[[], Mapping[int, PeerSpec]]
HealthView = Callable[[int], Health | None]


@dataclass
class RuleStatus:
    choice: Choice
    since: float  # wall-clock time of the last change of forwarding


class PolicyManager:
    def __init__(self, vpp: Vpp, peers: PeersView, health: HealthView, *,
                 lan_interfaces: Sequence[str] = (), wan_interfaces: Sequence[str] = (),
                 state_file: Path | None = None, period: float = 1.0,
                 hysteresis: Hysteresis | None = None,
                 dia_labels: Callable[[], frozenset[str]] = frozenset,
                 clock: Callable[[], float] = time.time) -> None:
        """`dia_labels`: the path labels of the device's WAN interfaces, as recorded."""
        if period <= 0:
            raise ValueError(f"policy evaluation period must be > 0 s, got {period}")
        self.vpp = vpp
        self.executor = Executor(vpp)
        self._peers = peers
        self._health = health
        self.lan_interfaces = tuple(lan_interfaces)
        self.wan_interfaces = tuple(wan_interfaces)
        self.state_file = state_file
        self.period = period
        self.hysteresis = hysteresis or Hysteresis()
        self._dia_labels = dia_labels
        self._clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.policy: Policy | None = None
        self.applications: dict[str, Application] = {}
        self._policy_params: Mapping[str, Any] | None = None  # as applied, for restarts
        self._apps_params: Mapping[str, Any] | None = None
        self.rules: dict[str, RuleStatus] = {}
        self.reprogrammings = 0
        self.reprogram_failures = 0
        self.last_error = ""
        self._generation: int | None = None
        self._released: set[int] = set()  # tunnels about to be deleted: no paths through them

    # -- the job path --------------------------------------------------------------

    async def apply(self, policy_params: Mapping[str, Any],
                    applications_params: Mapping[str, Any] | None = None) -> int:
        """Install (or change to) this policy; return the number of VPP writes.

        Raises PolicyError for unusable params or a VPP without acl/abf, ApplyError
        when VPP refused a step (VPP is then as before and the old policy stays)."""
        apps = (parse_applications(applications_params) if applications_params is not None
                else self.applications)
        policy = parse_policy(policy_params, apps)
        self._check_capability()
        async with self._lock:
            choices = await self._decide(policy, await self._links(), self._prev_for(policy))
            writes = await self._program(policy, choices)
            self._commit(policy, apps, choices)
            self._policy_params = dict(policy_params)
            if applications_params is not None:
                self._apps_params = dict(applications_params)
            self._save()
        for r in policy.rules:
            if not r.override_default_route:
                # stock ABF always overrides the FIB: the flag cannot be honoured
                log.warning("override-default-route false is not supported on stock VPP; "
                            "the rule steers default-route traffic too", rule=r.id)
        log.info("multilink policy applied", policy_id=policy.id, rules=len(policy.rules),
                 writes=writes)
        return writes

    async def set_applications(self, applications_params: Mapping[str, Any] | None) -> int:
        """A new application database (`add-application`; None for `remove-application`):
        the installed policy is re-resolved with it and re-programmed; VPP writes."""
        apps = parse_applications(applications_params)
        if self._policy_params is None:
            self.applications = apps
            self._apps_params = dict(applications_params) if applications_params else None
            self._save()
            return 0
        return await self.apply(self._policy_params, applications_params or {})

    async def remove(self) -> int:
        """Take away every ACL, ABF policy and attachment the agent owns."""
        async with self._lock:
            if not self._capable():  # no acl/abf in this VPP: nothing of ours can be there
                self.policy, self.rules, self._policy_params = None, {}, None
                self._save()
                return 0
            observed = await self._observe(await self._live())
            writes = await self._run(remove_all(observed), observed.refs())
            self.policy, self.rules, self._policy_params = None, {}, None
            self._save()
        log.info("multilink policy removed", writes=writes)
        return writes

    async def reconcile(self) -> int:
        """Bring VPP to the current policy (or to none); zero writes when in sync."""
        if not self._capable():
            return 0
        async with self._lock:
            if self.policy is None:
                observed = await self._observe(await self._live())
                return await self._run(remove_all(observed), observed.refs())
            old = self._choices()
            choices = await self._decide(self.policy, await self._links(), old)
            writes = await self._program(self.policy, choices)
            self._count_changes(old, choices, "reconciled with VPP (agent or VPP restart)")
            self._commit(self.policy, self.applications, choices)
        if writes:
            log.info("multilink policy reconciled", writes=writes)
        return writes

    async def release(self, tunnel_ids: Iterable[int]) -> int:
        """Take these tunnels out of every ABF policy; call BEFORE deleting or re-creating
        them in VPP (real VPP 26.06 crashes when a policy whose path goes through a
        deleted interface is changed later). They stay out until `restore`, or until
        they leave the desired peers. Returns the VPP writes."""
        ids = set(tunnel_ids)
        async with self._lock:
            self._released |= ids
            if self.policy is None or not self._capable():
                return 0
            old = self._choices()
            choices = await self._decide(self.policy, await self._links(), old)
            writes = await self._program(self.policy, choices)
            self._count_changes(old, choices, f"tunnels {sorted(ids)} about to be deleted or "
                                "re-created")
            self._commit(self.policy, self.applications, choices)
        if writes:
            log.info("tunnels taken out of multilink policies", tunnel_ids=sorted(ids),
                     writes=writes)
        return writes

    def restore(self, tunnel_ids: Iterable[int]) -> None:
        """Released tunnels exist again (re-created): let the next evaluation use them."""
        self._released -= set(tunnel_ids)
        self.notify()

    def load(self) -> None:
        """Read the last applied params (state_file) so reconcile can restore them."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            data = json.loads(self.state_file.read_text())
            apps = parse_applications(data.get("applications"))
            raw = data.get("policy")
            policy = parse_policy(raw, apps) if raw is not None else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.error("stored multilink policy unreadable; waiting for the controller's",
                      file=str(self.state_file), error=str(e))
            return
        self.policy, self.applications = policy, apps
        self._policy_params, self._apps_params = raw, data.get("applications")

    # -- following health ---------------------------------------------------------------

    def notify(self) -> None:
        """Re-evaluate now (e.g. a tunnel's health changed) instead of at the next period."""
        self._wake.set()

    async def run(self) -> None:
        """Evaluate every `period` (or when notified) until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)
            self._wake.clear()
            try:
                await self.evaluate()
            except (VppError, PolicyError, ApplyError) as e:
                if str(e) != self.last_error:  # once per distinct problem, not every period
                    log.warning("multilink policy evaluation failed", error=str(e))
                self.last_error = str(e)

    async def evaluate(self) -> bool:
        """Re-decide every rule; re-program VPP when a choice changed. True if it did."""
        if self.policy is None:
            return False
        generation = getattr(self.vpp, "generation", None)
        if generation is not None and generation != self._generation:
            await self.reconcile()  # a VPP (re)start lost everything
            return False
        async with self._lock:
            policy = self.policy
            if policy is None:
                return False
            old = self._choices()
            new = await self._decide(policy, await self._links(), old)
            changed = self._changed(old, new)
            if not changed:
                self._commit(policy, self.applications, new)
                return False
            self._log_changes(changed, old, new, "tunnel health")
            try:
                await self._program(policy, new)
            except ApplyError as e:
                self.reprogram_failures += 1
                self.last_error = str(e)
                log.warning("multilink re-programming failed", rules=changed, error=str(e))
                return False
            self.reprogrammings += 1
            self.last_error = ""
            self._commit(policy, self.applications, new)
            return True

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """JSON-ready: the policy, each rule's classification, link chosen now and why."""
        rows = []
        for r in self.policy.rules if self.policy else ():
            st = self.rules.get(r.id)
            rows.append({
                "rule": r.id, "priority": r.priority, "classification": r.classification,
                "groups": [{"labels": list(g.labels), "order": g.order.value} for g in r.groups],
                "group_order": r.group_order.value, "fallback": r.fallback.value,
                "apply_on_wan_rx": r.apply_on_wan_rx,
                "override_default_route": r.override_default_route,
                "chosen": st.choice.describe() if st else "not programmed",
                "kind": st.choice.kind.value if st else "",
                "why": st.choice.reason if st else "",
                "since": st.since if st else None,
            })
        return {"policy_id": self.policy.id if self.policy else None, "rules": rows,
                "lan_interfaces": list(self.lan_interfaces),
                "wan_interfaces": list(self.wan_interfaces),
                "reprogrammings": self.reprogrammings,
                "reprogram_failures": self.reprogram_failures, "last_error": self.last_error}

    # -- internals -----------------------------------------------------------------------

    def _capable(self) -> bool:
        return all(self.vpp.has(n) for n in NEEDED)

    def _check_capability(self) -> None:
        missing = [n for n in NEEDED if not self.vpp.has(n)]
        if missing:
            plugin = PLUGIN_OF["abf" if missing[0].startswith("abf") else "acl"]
            raise PolicyError(f"this VPP lacks {', '.join(missing)}: is {plugin} enabled? "
                              "(multilink policies need the acl and abf plugins)")

    def _choices(self) -> dict[str, Choice]:
        return {rid: st.choice for rid, st in self.rules.items()}

    def _prev_for(self, policy: Policy) -> dict[str, Choice]:
        ids = {r.id for r in policy.rules}
        return {rid: c for rid, c in self._choices().items() if rid in ids}

    async def _decide(self, policy: Policy, links: Mapping[str, Sequence[Link]],
                      previous: Mapping[str, Choice]) -> dict[str, Choice]:
        health = self._link_health(links, await self._carrying(links))
        return decide_all(policy.rules, links, health, previous, self.hysteresis,
                          self._dia_labels())

    async def _carrying(self, links: Mapping[str, Sequence[Link]]) -> set[str]:
        """The links VPP forwards rule traffic through now: those of the last choices, or,
        after an agent restart (no choice yet), those VPP's ABF policies hold."""
        if self.rules or not self._capable():
            return {k for st in self.rules.values() for k in st.choice.link_keys}
        observed = await self._observe(await self._live())
        paths = {p for r in observed.rules.values() if r.attach for p in r.paths}
        return {lk.key for group in links.values() for lk in group
                if lk.sw_if_index is not None
                and PathSpec(PATH_NORMAL, lk.sw_if_index, lk.next_hop) in paths}

    def _link_health(self, links: Mapping[str, Sequence[Link]],
                     carrying: set[str]) -> dict[str, LinkHealth]:
        """Each link's health; a link the monitor has no verdict on yet (a restarted
        agent's first probes) keeps carrying what it carries and gets nothing new, so a
        restart neither moves traffic nor writes to VPP."""
        out: dict[str, LinkHealth] = {}
        for group in links.values():
            for link in group:
                if link.tunnel_id is None or link.key in out:
                    continue
                snap = self._health(link.tunnel_id)
                if snap is None:
                    continue
                if not getattr(snap, "settled", True):
                    kept = link.key in carrying
                    out[link.key] = LinkHealth(kept, float(snap.rtt_ms), float(snap.drop_rate),
                                               "kept until the monitor's first verdict" if kept
                                               else "awaiting the monitor's first verdict")
                    continue
                out[link.key] = LinkHealth(str(snap.status) == "up", float(snap.rtt_ms),
                                           float(snap.drop_rate), snap.reason)
        return out

    async def _links(self, *, released: bool = False) -> dict[str, list[Link]]:
        """Label -> the peer tunnels that carry it, in tunnel-id order (the released
        ones too when `released`)."""
        peers = self._peers()
        self._released &= set(peers)  # a removed peer needs no release any more
        if not released:
            peers = {tid: spec for tid, spec in peers.items() if tid not in self._released}
        if not any(spec.labels for spec in peers.values()):
            return {}
        details = await self.vpp.dump("ipip_tunnel_dump", sw_if_index=NO_INDEX)
        by_instance = {int(d.tunnel.instance): int(d.tunnel.sw_if_index) for d in details}
        out: dict[str, list[Link]] = {}
        for tid, spec in sorted(peers.items()):
            for label in spec.labels:
                out.setdefault(label, []).append(
                    Link(f"peer {tid}", label, by_instance.get(tid), spec.peer_inner_addr, tid))
        return out

    async def _interfaces(self) -> tuple[list[int], list[int]]:
        details = await self.vpp.dump("sw_interface_dump", sw_if_index=NO_INDEX,
                                      name_filter_valid=False)
        by_name = {str(d.interface_name): int(d.sw_if_index) for d in details}

        def resolve(names: Sequence[str], what: str) -> list[int]:
            missing = [n for n in names if n not in by_name]
            if missing:
                raise PolicyError(f"{what} interface {', '.join(missing)} does not exist in VPP "
                                  f"(VPP has {', '.join(sorted(by_name))})")
            return [by_name[n] for n in names]

        return resolve(self.lan_interfaces, "LAN"), resolve(self.wan_interfaces, "WAN")

    async def _live(self) -> frozenset[PathSpec]:
        """The paths of the links that exist now: the only ones safe to remove."""
        return frozenset(PathSpec(PATH_NORMAL, lk.sw_if_index, lk.next_hop)
                         for group in (await self._links(released=True)).values()
                         for lk in group
                         if lk.sw_if_index is not None)

    async def _observe(self, live: frozenset[PathSpec] | None = None) -> Observed:
        dumps = await asyncio.gather(*(self.vpp.dump(message, **fields)
                                       for message, fields in kinds.read_requests()))
        return kinds.observe(dumps, live)

    async def _program(self, policy: Policy, choices: Mapping[str, Choice]) -> int:
        generation = getattr(self.vpp, "generation", None)
        lan, wan = await self._interfaces()
        observed = await self._observe(await self._live())
        if observed.abandoned:
            log.warning("ABF policies with paths through interfaces that are no longer links "
                        "are left detached (changing them would crash VPP 26.06)",
                        policy_ids=sorted(r.policy_id or 0 for r in observed.abandoned))
        ops = diff(observed, desired_rules(policy.rules, choices, lan, wan))
        writes = await self._run(ops, observed.refs())
        self._generation = generation  # VPP now holds the policy, as of this connection
        return writes

    async def _run(self, ops: list[Op], refs: dict[str, int]) -> int:
        before = self.executor.writes
        await self.executor.apply([ops], refs)
        return self.executor.writes - before

    @staticmethod
    def _changed(old: Mapping[str, Choice], new: Mapping[str, Choice]) -> list[str]:
        """The rules whose forwarding differs from their last choice (or that had none)."""
        return [rid for rid in new if not new[rid].same_forwarding(old.get(rid))]

    @staticmethod
    def _log_changes(changed: Sequence[str], old: Mapping[str, Choice],
                     new: Mapping[str, Choice], cause: str) -> None:
        for rid in changed:
            before = old.get(rid)
            log.info("multilink rule re-programmed", rule=rid,
                     before=before.describe() if before else "none",
                     after=new[rid].describe(), reason=new[rid].reason, cause=cause)

    def _count_changes(self, old: Mapping[str, Choice], new: Mapping[str, Choice],
                       cause: str) -> None:
        """After a programming that succeeded outside `evaluate` (release, reconcile): the
        rules it moved are re-programmings too, logged with their reason and counted (a
        rule without a last choice, e.g. after an agent restart, moved nothing)."""
        changed = [rid for rid in self._changed(old, new) if rid in old]
        if changed:
            self._log_changes(changed, old, new, cause)
            self.reprogrammings += 1

    def _commit(self, policy: Policy, apps: dict[str, Application],
                choices: Mapping[str, Choice]) -> None:
        now = self._clock()
        rules: dict[str, RuleStatus] = {}
        for rid, c in choices.items():
            old = self.rules.get(rid)
            same = old is not None and c.same_forwarding(old.choice)
            rules[rid] = RuleStatus(c, old.since if same and old else now)
        self.policy, self.applications, self.rules = policy, apps, rules

    def _save(self) -> None:
        if self.state_file is None:
            return
        if self._policy_params is None and self._apps_params is None:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
            return
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"policy": self._policy_params, "applications": self._apps_params}, f)
        os.replace(tmp, self.state_file)
