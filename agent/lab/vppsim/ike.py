"""IKE backends: what happens on the wire after `ikev2_initiate_sa_init`.

vppsim's API layer validates and records; a backend plays the negotiation.
`InProcessIke` is a model for fast tests (outcomes scripted per profile); a
strongSwan-driven backend can implement the same `IkeBackend` protocol.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Protocol

from agent.lab.vppsim.state import (
    AUTH_FAILED,
    AUTH_FAILED_LOG,
    AUTHENTICATED,
    NO_PROPOSAL_CHOSEN,
    TS_UNACCEPTABLE,
    ChildSa,
    IkeSa,
    Profile,
    SimState,
    ike_sa_keys,
)

OUTCOMES = ("UP", "AUTH_FAILED", "NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE", "TIMEOUT")
_FAIL_STATES = {
    "AUTH_FAILED": AUTH_FAILED,
    "NO_PROPOSAL_CHOSEN": NO_PROPOSAL_CHOSEN,
    "TS_UNACCEPTABLE": TS_UNACCEPTABLE,
}


class IkeBackend(Protocol):
    def attach(self, state: SimState, loop: asyncio.AbstractEventLoop) -> None: ...

    def initiate(self, profile: Profile, sa: IkeSa) -> None:
        """Negotiate `sa` (state SA_INIT, already stored) for `profile`."""

    def delete_ike_sa(self, sa: IkeSa) -> None: ...

    def delete_child_sa(self, sa: IkeSa, child: ChildSa) -> None: ...

    def rekey_child_sa(self, sa: IkeSa, child: ChildSa) -> None: ...

    def close(self) -> None: ...


class InProcessIke:
    """A scripted peer: every initiation ends as scripted after `delay` seconds.

    Unscripted profiles end "UP" when complete (auth, both IDs, both selectors,
    IKE and ESP transforms); otherwise in the failure a real peer would send.
    Failed SAs stay visible for `failed_linger` s, as VPP keeps them until its
    next cleanup; a TIMEOUT SA stays in SA_INIT for `timeout_after` s.
    """

    def __init__(
        self,
        delay: float = 0.01,
        default_outcome: str = "UP",
        outcomes: dict[str, str] | None = None,
        failed_linger: float = 1.0,
        timeout_after: float = 0.5,
    ) -> None:
        self.delay = delay
        self.failed_linger = failed_linger
        self.timeout_after = timeout_after
        self.default_outcome = self._check(default_outcome)
        self.outcomes = {k: self._check(v) for k, v in (outcomes or {}).items()}
        self._state: SimState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    @staticmethod
    def _check(outcome: str) -> str:
        outcome = outcome.upper()
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown IKE outcome {outcome!r}; allowed: {', '.join(OUTCOMES)}")
        return outcome

    def script(self, profile: str, outcome: str) -> None:
        """Make the next initiations of `profile` end in `outcome`."""
        self.outcomes[profile] = self._check(outcome)

    def attach(self, state: SimState, loop: asyncio.AbstractEventLoop) -> None:
        self._state, self._loop = state, loop

    def _later(self, delay: float, fn: object, *args: object) -> None:
        assert self._loop is not None

        def run() -> None:
            self._timers.discard(handle)
            fn(*args)  # type: ignore[operator]

        handle = self._loop.call_later(delay, run)
        self._timers.add(handle)

    def outcome_for(self, p: Profile) -> str:
        if p.name in self.outcomes:
            return self.outcomes[p.name]
        if not p.ike or not p.esp:
            return "NO_PROPOSAL_CHOSEN"
        if not p.auth_data or not p.loc_id[1] or not p.rem_id[1]:
            return "AUTH_FAILED"
        if p.loc_ts is None or p.rem_ts is None:
            return "TS_UNACCEPTABLE"
        return self.default_outcome

    def initiate(self, profile: Profile, sa: IkeSa) -> None:
        sa.hidden = True  # in no dump until the (model) peer answers
        self._later(self.delay, self._finish, sa.index, self.outcome_for(profile))

    def _finish(self, sa_index: int, outcome: str) -> None:
        state = self._state
        assert state is not None
        sa = state.sas.get(sa_index)
        if sa is None:
            return
        if outcome == "TIMEOUT":
            # VPP 26.06 retransmits an unanswered initiation with no limit: it stays
            # (hidden) until its profile is deleted
            return
        sa.hidden = False
        sa.rspi = secrets.randbits(64) | 1
        sa.nonces = (sa.nonces[0], secrets.token_bytes(32))
        if outcome in _FAIL_STATES:
            sa.state = _FAIL_STATES[outcome]
            state.log(f"ikev2: sa {sa_index} profile {sa.profile} {outcome}")
            if sa.state == AUTH_FAILED:  # VPP's own line (level err: kept by default)
                state.log(AUTH_FAILED_LOG.format(ispi=sa.ispi), level="error")
            self._later(self.failed_linger, state.remove_sa, sa_index)
            return
        profile = state.profiles.get(sa.profile)
        if profile is None:
            state.remove_sa(sa_index)
            return
        sa.state = AUTHENTICATED
        sa.auth_time = state.clock()
        sa.keys = ike_sa_keys(sa.ike)
        state.add_child(sa, profile)
        state.log(f"ikev2: sa {sa_index} profile {sa.profile} AUTHENTICATED")
        # VPP 26.06: a new IKE SA replaces the established ones with the same IDs
        # (INITIAL_CONTACT)
        for other in [s for s in state.visible_sas()
                      if s.index != sa_index and (s.i_id, s.r_id) == (sa.i_id, sa.r_id)]:
            state.remove_sa(other.index)

    def delete_ike_sa(self, sa: IkeSa) -> None:
        assert self._state is not None
        self._state.remove_sa(sa.index)

    def delete_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        assert self._state is not None
        self._state.remove_child(sa, child)

    def rekey_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        assert self._state is not None
        child.i_spi = secrets.randbits(32) | 1
        child.r_spi = secrets.randbits(32) | 1
        child.created = self._state.clock()
        sa.n_rekey += 1

    def peer_restart(self, profile: str) -> int:
        """The peer forgot everything: drop the profile's SAs (tunnel goes down)."""
        assert self._state is not None
        gone = [sa.index for sa in self._state.sas.values() if sa.profile == profile]
        for index in gone:
            self._state.remove_sa(index)
        return len(gone)

    def close(self) -> None:
        for handle in list(self._timers):
            handle.cancel()
        self._timers.clear()
