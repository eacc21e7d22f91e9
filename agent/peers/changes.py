"""What a controller job asks of the peers, and why it can be refused."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.peers.spec import PeerSpec


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
    tunnel_id: int
    monitor_ips: tuple[IPv4Address, ...]
    monitor_urls: tuple[str, ...]


Change = AddPeer | RemovePeer | ModifyTargets
