"""The changes a job asks of the peer manager, as validation produces them.

`agent.jobs.validation` returns these and `PeerManager.apply` consumes them: one
vocabulary for "what a job changes" from the controller's params to VPP. Plain
frozen data; the manager decides whether a change can be made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from agent.peers.spec import PeerSpec, StaticRoute


class JobError(Exception):
    """A job cannot be done; the message is for the controller's administrator."""


@dataclass(frozen=True)
class AddPeer:
    spec: PeerSpec


@dataclass(frozen=True)
class RemovePeer:
    tunnel_id: int


@dataclass(frozen=True)
class ModifyTargets:
    """New monitoring targets or static routes for an existing tunnel; the tunnel itself
    is untouched. None: not part of the change, the stored one is kept."""

    tunnel_id: int
    monitor_ips: tuple[IPv4Address, ...] | None = None
    monitor_urls: tuple[str, ...] | None = None
    static_routes: tuple[StaticRoute, ...] | None = None

    @property
    def empty(self) -> bool:
        """Nothing to change (a modify-tunnel with alert thresholds only)."""
        return self.monitor_ips is None and self.monitor_urls is None \
            and self.static_routes is None

    def applied_to(self, spec: PeerSpec) -> PeerSpec:
        return replace(
            spec,
            monitor_ips=spec.monitor_ips if self.monitor_ips is None else self.monitor_ips,
            monitor_urls=spec.monitor_urls if self.monitor_urls is None else self.monitor_urls,
            static_routes=(spec.static_routes if self.static_routes is None
                           else self.static_routes))


Change = AddPeer | RemovePeer | ModifyTargets
