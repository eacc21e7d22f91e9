"""Desired peers vs what VPP shows -> the VPP steps that close the gap. Pure code.

Used at start, after a VPP restart and by sync-device. When VPP already matches
it yields no step at all, so a resync of an in-sync device writes nothing.
Differences are handled per part: a wrong tunnel re-creates the peer, a wrong
profile re-creates only the profile, missing routes are only added. Routes via
a tunnel that the agent does not expect are left alone: a routing protocol may
have installed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from agent.peers.spec import Identity, PeerSpec
from agent.vpp.plan import (
    AUTH_SHARED_KEY_MIC,
    Op,
    VppFacts,
    admin_up_op,
    child_sa_lifetime,
    delete_profile_op,
    host_if_name,
    plan_add_ops,
    plan_cleanup,
    profile_ops,
    route_op,
    route_prefixes,
    tunnel_instance,
    tunnel_ref,
)
from agent.vpp.readers import Observed, ProfileInfo


@dataclass
class ReconcilePlan:
    chains: list[list[Op]] = field(default_factory=list)
    refs: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why each chain exists, for the log

    @property
    def empty(self) -> bool:
        return not any(self.chains)


def profile_differences(spec: PeerSpec, info: ProfileInfo, tun_sw_if_index: int,
                        wan_sw_if_index: int) -> list[str]:
    """Names of the profile settings that differ from the spec (never their values)."""
    diffs: list[str] = []
    if info.auth_method != AUTH_SHARED_KEY_MIC or info.auth_data != spec.psk.reveal().encode():
        diffs.append("auth")
    for label, have, want in (("local id", info.local_id, spec.local_id),
                              ("remote id", info.remote_id, spec.remote_id)):
        if not _same_id(have, want):
            diffs.append(label)
    if info.local_ts != spec.local_ts:
        diffs.append("local ts")
    if info.remote_ts != spec.remote_ts:
        diffs.append("remote ts")
    if info.ike != spec.ike:
        diffs.append("ike transforms")
    want_esp = (spec.esp.crypto_alg, spec.esp.crypto_key_size, spec.esp.integ_alg)
    if (info.esp.crypto_alg, info.esp.crypto_key_size, info.esp.integ_alg) != want_esp:
        diffs.append("esp transforms")
    if info.lifetime != child_sa_lifetime(spec.child_lifetime)[0]:
        diffs.append("lifetime")
    if info.tun_itf != tun_sw_if_index:
        diffs.append("tunnel binding")
    if info.responder_sw_if_index != wan_sw_if_index or info.responder_addr != spec.dst:
        diffs.append("responder")
    if info.udp_encap != spec.udp_encap:
        diffs.append("udp encap")
    return diffs


def agent_objects(obs: Observed) -> set[int]:
    """Tunnel ids whose VPP objects carry the agent's marks: an IKEv2 profile `peer-<N>`,
    or an ipip tunnel of instance N whose Linux pair is `peer<N>`. With the intents the
    store records before VPP is touched, this finds everything the agent ever made
    (after a crash, a lost connection, a corrupt store) and nothing it did not make."""
    out: set[int] = set()
    for name in obs.profiles:
        num = name.removeprefix("peer-")
        if num.isdigit() and num == str(int(num)):
            out.add(int(num))
    for instance, tun in obs.tunnels.items():
        if obs.lcp.get(tun.sw_if_index) == host_if_name(instance):
            out.add(instance)
    return out


# VPP's profile dump shows at most 63 bytes of an IKE ID (a 64-byte field with its NUL)
VPP_ID_SHOWN = 63


def _same_id(have: tuple[int, str], want: Identity) -> bool:
    """Whether VPP's (possibly truncated) ID is the spec's: a long FQDN must not make
    every reconcile re-create the profile (and flap the tunnel)."""
    if have[0] != int(want.type):
        return False
    if have[1] == want.value:
        return True
    shown = want.value.encode()[:VPP_ID_SHOWN]
    return have[1].encode().rstrip(b"\0") == shown


def plan_reconcile(
    desired: Mapping[int, PeerSpec],
    owned: Iterable[int],
    obs: Observed,
    facts_for: Mapping[int, VppFacts],
    dynamic_routes: Mapping[int, Iterable[IPv4Address]] | None = None,
) -> ReconcilePlan:
    """Steps that make VPP show `desired`, removing owned peers that are not desired.

    `facts_for` gives each desired tunnel's VPP facts (its WAN interface).
    """
    plan = ReconcilePlan()
    dynamic_routes = dynamic_routes or {}
    for tid in sorted(set(owned) - set(desired)):
        chain = _cleanup(tid, obs, plan)
        if chain:
            plan.chains.append(chain)
            plan.notes.append(f"tunnel {tid}: not desired, removing its leftovers")
    for tid, spec in sorted(desired.items()):
        facts = facts_for[tid]
        extra = tuple(dynamic_routes.get(tid, ()))
        tun = obs.tunnels.get(tunnel_instance(tid))
        problems = _tunnel_problems(spec, obs, facts)
        if problems:
            chain = _cleanup(tid, obs, plan) + plan_add_ops(spec, facts, extra)
            plan.chains.append(chain)
            plan.notes.append(f"tunnel {tid}: {', '.join(problems)}: programming it")
            continue
        assert tun is not None
        sw = tun.sw_if_index
        plan.refs[tunnel_ref(tid).name] = sw
        chain = []
        iface = obs.interfaces.get(sw)
        if iface is not None and not iface.admin_up:
            chain.append(admin_up_op(tid))
            plan.notes.append(f"tunnel {tid}: admin-down: setting it up")
        info = obs.profiles.get(spec.profile_name)
        diffs = (["missing"] if info is None
                 else profile_differences(spec, info, sw, facts.wan_sw_if_index))
        if diffs:
            if info is not None:
                chain.append(delete_profile_op(tid, spec.profile_name,
                                               "delete outdated profile"))
            chain += profile_ops(spec, facts)
            plan.notes.append(f"tunnel {tid}: profile {', '.join(diffs)}: re-creating it")
        have_routes = obs.routes.get(sw, set())
        missing: list[IPv4Network] = [p for p in route_prefixes(spec, extra)
                                      if p not in have_routes]
        if missing:
            chain += [route_op(tid, p, True) for p in missing]
            plan.notes.append(f"tunnel {tid}: {len(missing)} route(s) missing: adding")
        if chain:
            plan.chains.append(chain)
    return plan


def _tunnel_problems(spec: PeerSpec, obs: Observed, facts: VppFacts) -> list[str]:
    tun = obs.tunnels.get(tunnel_instance(spec.tunnel_id))
    if tun is None:
        return ["tunnel missing"]
    problems = []
    if tun.src != spec.src or tun.dst != spec.dst:
        problems.append("tunnel endpoints differ")
    sw = tun.sw_if_index
    if spec.addr not in obs.addresses.get(sw, set()):
        problems.append("tunnel address missing")
    iface = obs.interfaces.get(sw)
    if spec.mtu and (iface is None or iface.mtu != spec.mtu):
        problems.append("tunnel MTU differs")
    if (spec.tcp_mss_clamp or None) != obs.mss.get(sw):
        problems.append("MSS clamp differs")
    if facts.has_lcp and obs.lcp.get(sw) != host_if_name(spec.tunnel_id):
        problems.append("Linux interface missing")
    return problems


def _cleanup(tid: int, obs: Observed, plan: ReconcilePlan) -> list[Op]:
    tun = obs.tunnels.get(tunnel_instance(tid))
    profile = f"peer-{tid}"
    sw = tun.sw_if_index if tun is not None else None
    if sw is not None:
        plan.refs[tunnel_ref(tid).name] = sw
    return plan_cleanup(
        tid, sw,
        profile=profile if profile in obs.profiles else None,
        routes=sorted(obs.routes.get(sw, set()), key=lambda n: int(n.network_address))
        if sw is not None else (),
        addresses=sorted(obs.addresses.get(sw, set())) if sw is not None else (),
        mss=sw is not None and sw in obs.mss,
        lcp_name=obs.lcp.get(sw) if sw is not None else None,
    )
