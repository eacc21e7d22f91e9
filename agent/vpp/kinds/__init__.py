"""The VPP object kinds of a peer, in dependency order, and the loops over them.

To add a kind: write its module (a `Kind` subclass, see `base.py`, and `KIND =
YourKind()`), then add it to `KINDS` below where its dependencies are met. Create
runs in this order, delete in the reverse one; reconcile compares every kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from agent.peers.spec import PeerSpec
from agent.vpp.kinds import address, lcp, mss, profile, route, tunnel
from agent.vpp.kinds.base import Kind, Observed
from agent.vpp.ops import Gap, Op, VppFacts

if TYPE_CHECKING:
    from agent.vpp.client import VppClient

# The tunnel's admin state is not among them: VPP's IKEv2 plugin sets the tunnel up when
# it installs a child SA (and its IPsec protection) and down when it removes one. Up
# without protection, VPP 26.06 sends what is routed into the tunnel as cleartext IPIP
# to the peer (tests/integration/test_realvpp_lab.py), so the agent never sets it up.
KINDS: tuple[Kind, ...] = (
    tunnel.KIND,  # ipip<N> and its MTU: everything below hangs from its sw_if_index
    address.KIND,
    mss.KIND,
    lcp.KIND,
    profile.KIND,  # bound to the tunnel interface
    route.KIND,  # via the tunnel interface
)


def check(spec: PeerSpec, facts: VppFacts, kinds: Sequence[Kind] = KINDS) -> tuple[Gap, ...]:
    """Every kind's capability warnings; raises the first refusal (CapabilityError).
    Dependents first, so the IKE profile's gaps are named before the interface's."""
    warnings: list[Gap] = []
    for kind in reversed(kinds):
        warnings += kind.check(spec, facts)
    return tuple(warnings)


def create(spec: PeerSpec, facts: VppFacts, extra_routes: Sequence[IPv4Address] = (),
           kinds: Sequence[Kind] = KINDS) -> list[Op]:
    """The steps that make the whole peer, each kind after what it depends on."""
    ops: list[Op] = []
    for kind in kinds:
        ops += kind.create(spec, facts, extra_routes)
    return ops


def delete(tunnel_id: int, obs: Observed, kinds: Sequence[Kind] = KINDS) -> list[Op]:
    """Delete what VPP shows of a tunnel's objects, dependents first."""
    sw = tunnel.observed_index(obs, tunnel_id)
    ops: list[Op] = []
    for kind in reversed(kinds):
        ops += kind.delete(tunnel_id, sw, obs)
    return ops


def owned(obs: Observed, kinds: Sequence[Kind] = KINDS) -> set[int]:
    """Tunnel ids whose VPP objects carry one of the agent's marks."""
    out: set[int] = set()
    for kind in kinds:
        out |= kind.owned(obs)
    return out


async def observe(vpp: VppClient, kinds: Sequence[Kind] = KINDS) -> Observed:
    """Read every kind back from VPP: each stage's dumps pipelined, then absorbed in
    kind order (a later kind may use what an earlier one absorbed)."""
    obs = Observed()
    for stage in sorted({k.stage for k in kinds}):
        of_stage = [k for k in kinds if k.stage == stage]
        raws = await asyncio.gather(*(k.read(vpp, obs) for k in of_stage))
        for kind, raw in zip(of_stage, raws, strict=True):
            kind.absorb(raw, obs)
    return obs
