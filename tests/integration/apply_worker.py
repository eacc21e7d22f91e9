"""Subprocess for the crash test: applies many peers, printing progress, until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agent.logsetup import configure_logging
from agent.peers.changes import AddPeer
from agent.peers.manager import PeerManager
from agent.peers.store import PeerStore
from agent.vpp.client import VppClient
from tests.spec_factory import numbered_spec


async def main(socket: str, state: str, first: int, count: int) -> None:
    vpp = VppClient(socket)
    store = PeerStore(Path(state))
    manager = PeerManager(vpp, store, {})
    manager.load()
    await vpp.start()
    await vpp.wait_connected(5)
    await manager.reconcile()
    print("ready", flush=True)
    await manager.apply([AddPeer(numbered_spec(n)) for n in range(first, first + count)])
    print("committed", flush=True)


if __name__ == "__main__":
    configure_logging("error")
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
