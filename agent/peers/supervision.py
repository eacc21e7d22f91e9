"""One SA-supervision step, as a pure function of what VPP shows and what we did.

VPP 26.06's IKEv2 semantics decide everything here (../shared/vpp/README.md):

* `ikev2_initiate_sa_init` only queues an initiation. It stays invisible in the
  SA dumps until the peer answers, is retransmitted every 2 s without limit, and
  every further call queues another one. So a tunnel is initiated once; a
  negotiation is restarted only when it is known to have failed or stalled, and
  a restart deletes and re-creates the profile, the only way VPP drops pending
  initiations. Restarts back off, capped.
* After a DPD failure VPP deletes the IKE SA and re-initiates by itself (again
  invisibly). An SA that was up and vanished is therefore left to VPP for one
  `sa_init_timeout` before the agent restarts the negotiation itself.
* A failed negotiation leaves its IKE SA in VPP's table with no installed child
  (AUTH_FAILED, NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE); an SA still waiting for its
  IKE_AUTH answer looks the same for at most one VPP manager tick (2 s), after
  which VPP drops and re-initiates it. The reader names what it can tell apart.

`step` takes the observed SAs of one tunnel, the tunnel's supervision record and
the time, and returns the new record and the one action to take. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Address

from agent.vpp.readers import SaInfo


class Status(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class StatusChange:
    """A tunnel's SA status or its reason changed: what subscribers are told."""

    tunnel_id: int
    status: Status
    reason: str


class Action(StrEnum):
    NONE = "none"
    # Delete and re-create the profile, then initiate: the only way to start a
    # negotiation without leaving an older one pending. (The first initiation is
    # part of creating the profile, in apply and reconcile.)
    RESTART = "restart"


# SA states as the reader derives them from ikev2_sa_dump (v1) + ikev2_child_sa_dump.
ESTABLISHED = "AUTHENTICATED"  # a child SA is installed
PENDING = "SA_INIT"  # answered IKE_SA_INIT, no child yet (IKE_AUTH in flight, or failed)
NO_CHILD = "NO_CHILD"  # authenticated, but its child SA is gone (peer deleted it)
FAILED_REASONS: Mapping[str, str] = {
    "AUTH_FAILED": "AUTH_FAILED: authentication failed (PSK or IKE IDs do not match the peer)",
    "NO_PROPOSAL_CHOSEN": "NO_PROPOSAL_CHOSEN: the peer refused our ESP proposal or our "
                          "traffic selectors",
    "TS_UNACCEPTABLE": "TS_UNACCEPTABLE: the peer narrowed the traffic selectors; VPP accepts "
                       "only exactly the configured ones",
    NO_CHILD: "IKE SA without a child SA: the peer deleted it and VPP does not re-create it",
}

ADMIN_DOWN_REASON = ("tunnel interface admin-down: its child SA is being removed (or the "
                     "tunnel was set down by hand)")
ECP_REASON = ("IKE_AUTH unanswered with an ECP IKE group: VPP 26.06 derives the shared secret "
              "from the point's x and y, RFC 5903 peers from x alone, so the peer cannot read "
              "our IKE_AUTH; use a MODP group such as modp-2048")


@dataclass(frozen=True)
class SaView:
    """One IKE SA of the tunnel as VPP shows it (never its keys)."""

    ispi: int
    rspi: int
    state: str
    children: int = 0
    child_spis: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Policy:
    role: str  # initiator | responder
    dst: str
    sa_init_timeout: float = 30.0
    backoff_min: float = 2.0
    backoff_max: float = 60.0
    # An SA without a child for longer than this is failed, not in flight: VPP
    # drops an SA still waiting for its IKE_AUTH answer at its next manager tick
    # (every 2 s) and initiates afresh.
    pending_grace: float = 2.5
    ike_ecp: bool = False  # an ECP IKE group: VPP 26.06's keys are not a standard peer's


@dataclass(frozen=True)
class Record:
    """What supervision remembers about one tunnel between steps."""

    status: Status = Status.CONNECTING
    reason: str = "not initiated yet"
    initiated_at: float | None = None  # our negotiation in flight since (or VPP's own)
    restarted_at: float | None = None
    backoff: float = 0.0
    was_up: bool = False  # an SA was established: VPP re-initiates it after DPD
    lost_at: float | None = None  # when the established SA vanished
    first_seen: Mapping[int, float] = field(default_factory=dict)  # ispi -> first seen
    restarts: int = 0
    ike_state: str | None = None
    child_sas: int = 0
    ike_sas: int = 0
    child_spis: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Step:
    record: Record
    action: Action = Action.NONE


def _next_backoff(rec: Record, policy: Policy) -> float:
    if rec.backoff <= 0:
        return policy.backoff_min
    return min(rec.backoff * 2, policy.backoff_max)


def _may_restart(rec: Record, now: float) -> bool:
    return rec.restarted_at is None or now >= rec.restarted_at + rec.backoff


def initiated(rec: Record, now: float) -> Record:
    """The record after the agent (re)created the profile and initiated it."""
    return replace(rec, initiated_at=now, lost_at=None, first_seen={}, was_up=False)


def step(sas: list[SaView], rec: Record, now: float, policy: Policy,
         admin_up: bool | None = None) -> Step:
    """Decide one supervision step for one tunnel.

    `sas` are the IKE SAs VPP shows for this tunnel; `admin_up` the protected
    tunnel's admin state when known (VPP sets it up when it installs a child SA
    and down when it removes one).
    """
    seen = {sa.ispi: rec.first_seen.get(sa.ispi, now) for sa in sas}
    base = replace(rec, first_seen=seen, ike_sas=len(sas))
    up = [sa for sa in sas if sa.state == ESTABLISHED and sa.children > 0]
    if up and admin_up is not False:
        best = up[0]
        return Step(replace(
            base, status=Status.UP,
            reason="IKE SA established, child SA installed" + (
                f" ({len(sas)} IKE SAs)" if len(sas) > 1 else ""),
            ike_state=best.state, child_sas=best.children, child_spis=best.child_spis,
            initiated_at=None, restarted_at=None, backoff=0.0, was_up=True, lost_at=None,
            restarts=0))
    base = replace(base, child_sas=0, child_spis=(),
                   ike_state=sas[0].state if sas else None)
    if up:  # child SA listed but the tunnel is admin-down: VPP is removing the child
        down = _down(base, ADMIN_DOWN_REASON)
        if rec.reason == ADMIN_DOWN_REASON and policy.role == "initiator" \
                and _may_restart(rec, now):
            # still so one poll later: set down by hand. Only a new child SA brings it
            # up with its protection (the agent never sets a tunnel up itself).
            return Step(_restarting(down, now, policy), Action.RESTART)
        return Step(down)

    failed = _failed(sas, seen, now, policy) or _stalled(sas, rec, now, policy)
    if failed is not None:
        down = _down(base, failed)
        if policy.role != "initiator":
            return Step(down)
        if _may_restart(rec, now):
            return Step(_restarting(down, now, policy), Action.RESTART)
        return Step(down)

    if sas:  # answered, IKE_AUTH in flight (or the peer initiating towards us)
        progress = "IKE_SA_INIT answered, IKE_AUTH in progress"
        if base.status is Status.DOWN and rec.restarts:
            progress = f"{rec.reason.split(';')[0]}; negotiation restarted, IKE_AUTH in progress"
        return Step(replace(base, status=base.status if base.status is not Status.UP
                            else Status.DOWN, reason=progress))

    # No SA at all.
    if policy.role != "initiator":
        status = Status.DOWN if rec.was_up or rec.status is Status.DOWN else Status.CONNECTING
        return Step(replace(base, status=status, reason="waiting for the peer to initiate"))
    if rec.status is Status.UP or (rec.was_up and rec.lost_at is None):
        # The established SA vanished: DPD failure (VPP re-initiates by itself) or the
        # peer deleted it. Either way give VPP's own re-initiation its chance first.
        lost = replace(base, lost_at=now, initiated_at=now)
        return Step(_down(lost, "IKE SA lost (DPD failure or deleted by the peer); "
                                "VPP is re-initiating"))
    if rec.initiated_at is None:
        # A profile this process did not initiate (e.g. kept by VPP across an agent
        # restart) may hold an invisible pending initiation: start over cleanly.
        down = replace(base, reason=f"no IKE SA: starting a negotiation with {policy.dst}")
        return Step(_restarting(down, now, policy), Action.RESTART)
    waited = now - rec.initiated_at
    if waited < policy.sa_init_timeout:
        if rec.lost_at is not None:
            reason = "IKE SA lost (DPD failure or deleted by the peer); VPP is re-initiating"
        elif rec.restarts:
            reason = f"{rec.reason.split(';')[0]}; negotiation restarted, waiting for the peer"
        else:
            reason = f"IKE_SA_INIT sent to {policy.dst}, waiting for the answer"
        return Step(replace(base, reason=reason))
    down = _down(base, f"no answer from peer {policy.dst} within "
                       f"{policy.sa_init_timeout:g} s (IKE_SA_INIT unanswered: peer unreachable "
                       "or it refuses our IKE proposal)")
    if _may_restart(rec, now):
        return Step(_restarting(down, now, policy), Action.RESTART)
    return Step(down)


def _down(rec: Record, reason: str) -> Record:
    return replace(rec, status=Status.DOWN, reason=reason)


def _restarting(rec: Record, now: float, policy: Policy) -> Record:
    return replace(rec, backoff=_next_backoff(rec, policy), restarted_at=now, initiated_at=now,
                   lost_at=None, first_seen={}, restarts=rec.restarts + 1, was_up=False)


def _stalled(sas: list[SaView], rec: Record, now: float, policy: Policy) -> str | None:
    """The reason when our negotiation is answered but never authenticated: VPP drops an
    SA still waiting for its IKE_AUTH at its next manager tick and initiates afresh, so
    no one SA stays long enough for `_failed`; the negotiation as a whole has stalled."""
    if not sas or policy.role != "initiator" or rec.initiated_at is None \
            or now - rec.initiated_at < policy.sa_init_timeout:
        return None
    if policy.ike_ecp:
        return ECP_REASON
    return (f"IKE_AUTH unanswered for {policy.sa_init_timeout:g} s although the peer "
            "answers IKE_SA_INIT: the peer drops our IKE_AUTH (UDP 4500 filtered on the "
            "way, or it cannot decrypt it)")


def _failed(sas: list[SaView], seen: Mapping[int, float], now: float,
            policy: Policy) -> str | None:
    """The reason of the first SA known to have failed, if any."""
    for sa in sas:
        if sa.state in FAILED_REASONS and sa.state != NO_CHILD:
            return FAILED_REASONS[sa.state]
    for sa in sas:
        if now - seen.get(sa.ispi, now) < policy.pending_grace:
            continue
        if sa.state == NO_CHILD:
            return FAILED_REASONS[NO_CHILD]
        if sa.state == PENDING:
            # Still without a child after VPP's own IKE_AUTH retry would have replaced
            # it, and no authentication failure logged: the peer authenticated us but
            # refused the child SA (VPP keeps such an SA as NO_PROPOSAL_CHOSEN). With an
            # ECP group the likelier cause: the peer could not read the IKE_AUTH at all.
            return ECP_REASON if policy.ike_ecp else FAILED_REASONS["NO_PROPOSAL_CHOSEN"]
    return None


@dataclass(frozen=True)
class Endpoints:
    """How one tunnel's IKE SAs are recognised in VPP's SA table (v1 has no profile)."""

    src: IPv4Address
    dst: IPv4Address
    local_id: tuple[int, str]
    remote_id: tuple[int, str]


def match_sas(sas: Iterable[SaInfo], tunnels: Mapping[int, Endpoints]) -> dict[int, list[SaView]]:
    """Each tunnel's IKE SAs, by their addresses (either role) and, to settle ties, IDs.

    One ipip tunnel per address pair makes the addresses unique per tunnel; an SA
    of an address pair no tunnel uses (a scanner's half-open SA) belongs to none.
    """
    by_pair: dict[tuple[IPv4Address, IPv4Address], list[int]] = {}
    for tid, ep in tunnels.items():
        by_pair.setdefault((ep.src, ep.dst), []).append(tid)
    out: dict[int, list[SaView]] = {}
    for sa in sas:
        if sa.iaddr is None or sa.raddr is None:
            continue
        we_initiated = (sa.iaddr, sa.raddr) in by_pair
        tids = by_pair.get((sa.iaddr, sa.raddr)) or by_pair.get((sa.raddr, sa.iaddr)) or []
        if len(tids) > 1:
            ids = (sa.i_id, sa.r_id)
            tids = [t for t in tids
                    if ids == ((tunnels[t].local_id, tunnels[t].remote_id) if we_initiated
                               else (tunnels[t].remote_id, tunnels[t].local_id))] or tids[:1]
        for tid in tids[:1]:
            out.setdefault(tid, []).append(SaView(sa.ispi, sa.rspi, sa.state, sa.children,
                                                  sa.child_spis))
    return out
