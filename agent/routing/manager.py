"""Applies the desired routing to a running FRR through vtysh, and reads BGP status.

`RoutingManager.apply(model)` renders the model, reads `show running-config`,
applies the difference as one `vtysh -f` file and reads FRR back: anything still
different is an error (a command FRR refused or printed otherwise), after which
the previous configuration is restored, so a failed apply leaves FRR as it was
and the caller can undo its own (VPP) steps. What the agent applied is kept in a
0600 JSON file (it holds BGP passwords, as the store holds PSKs), so after an
agent restart the lines it owns are still known, and an operator's are not.
What that configuration is, how it is read back, compared and written is the FRR
configuration kind's (`kind.py`); the manager keeps the lock, the model and the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from agent.routing.bgpstatus import bgp_status
from agent.routing.frrconf import Plan, mask
from agent.routing.kind import KIND, RoutingError
from agent.routing.model import RoutingModel
from agent.routing.render import Path
from agent.routing.status import peer_statuses

log = logging.getLogger(__name__)

__all__ = ["RoutingError", "RoutingManager", "Vtysh"]


@dataclass(frozen=True)
class Vtysh:
    """How to reach FRR: the vtysh binary and, for a private FRR, its vty socket directory."""

    binary: str = "vtysh"
    vty_socket: str | None = None
    timeout: float = 30.0
    # what vtysh said on stderr so far: each text is logged once, not at every poll
    _said: set[str] = field(default_factory=set, compare=False, repr=False)

    def _argv(self, *args: str) -> list[str]:
        extra = ["--vty_socket", self.vty_socket] if self.vty_socket else []
        return [self.binary, *extra, *args]

    async def run(self, *args: str) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); a vtysh that hangs is killed at the deadline.
        Apart: vtysh writes warnings (an unreadable vtysh.conf) to stderr, and a JSON
        answer on stdout must stay parseable."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(*args), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise RoutingError(f"cannot run {self.binary} ({e.strerror}): is frr installed?"
                               ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RoutingError(f"vtysh {' '.join(args[:2])}: no answer within "
                               f"{self.timeout:g} s") from None
        return (proc.returncode or 0, out.decode(errors="replace"),
                err.decode(errors="replace"))

    async def show(self, command: str) -> str:
        """The answer on stdout; what vtysh said on stderr is logged (once per text)."""
        rc, out, err = await self.run("-c", command)
        if rc != 0:
            said = mask((err.strip() + " " + out.strip()).strip())
            raise RoutingError(f"vtysh -c {command!r} failed ({rc}): {said[:300]}")
        text = mask(err.strip())
        if text and text not in self._said:
            self._said.add(text)
            log.warning("vtysh said: %s", text[:300])
        return out

    async def running_config(self) -> str:
        return await self.show("show running-config")

    async def load(self, script: str) -> tuple[int, str]:
        """Apply a configuration file; the file is private and removed at once."""
        with tempfile.TemporaryDirectory(prefix="agent-frr-") as tmp:
            path = os.path.join(tmp, "apply.conf")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(script)
            rc, out, err = await self.run("-f", path)
            return rc, "\n".join(t for t in (out, err) if t)


class RoutingManager:
    """The one writer of the agent's part of FRR's configuration."""

    def __init__(self, vtysh: Vtysh, state_path: FsPath | None = None) -> None:
        self._vtysh = vtysh
        self._state_path = state_path
        self._owned: tuple[Path, ...] = self._load_owned()  # in apply order
        self._model: RoutingModel | None = None
        self._lock = asyncio.Lock()
        self._bgp_cache: tuple[float, dict[str, Any]] | None = None

    @property
    def model(self) -> RoutingModel | None:
        """The model last applied successfully (None before the first apply)."""
        return self._model

    @property
    def owned(self) -> frozenset[Path]:
        return frozenset(self._owned)

    async def plan(self, model: RoutingModel) -> Plan:
        """What `apply(model)` would change now (nothing applied)."""
        return await KIND.plan(self._vtysh, KIND.desired(model), self._owned)

    async def apply(self, model: RoutingModel) -> Plan:
        """Make FRR hold exactly the agent's rendering of `model`; returns what changed.

        On failure FRR is put back to the previous configuration (best effort) and
        RoutingError is raised.
        """
        async with self._lock:
            previous = self._owned
            try:
                plan = await self._apply(KIND.desired(model))
            except RoutingError as e:
                try:
                    await self._apply(previous)
                except RoutingError as undo:
                    raise RoutingError(f"{e}; restoring the previous FRR configuration "
                                       f"failed too: {undo}") from e
                raise
            self._model = model
            return plan

    async def reconcile(self) -> Plan | None:
        """Re-apply the last model (after an FRR restart FRR starts empty); None before any.

        Cheap when nothing changed: two reads, no write. The daemon calls it at a
        steady interval; an FRR that does not answer raises RoutingError.
        """
        if self._model is None:
            return None
        return await self.apply(self._model)

    async def _apply(self, wanted: Sequence[Path]) -> Plan:
        return await KIND.apply(self._vtysh, wanted, self._owned, self._own)

    def _own(self, names: tuple[Path, ...]) -> None:
        self._owned = names
        self._save_owned()

    async def bgp_status(self) -> dict[str, Any]:
        """The controller's `bgp` object; `{}` without BGP configured. RoutingError when
        FRR does not answer: flexiagent's get-bgp-status then answers ok:0, and the
        controller keeps the status it has instead of showing no peers."""
        if self._model is None or self._model.bgp is None:
            return {}
        return bgp_status(await self._vtysh.show("show bgp summary json"))

    async def peer_status(self) -> list[dict[str, Any]]:
        """Per peer: protocol, far end, adjacency/session state, routes learned and
        advertised (for `peerctl show routing`); [] before the first apply."""
        model = self._model
        if model is None or not model.peers:
            return []

        async def read(command: str) -> dict[str, Any]:
            try:
                out = json.loads(await self._vtysh.show(command))
            except (RoutingError, ValueError):
                return {}
            return out if isinstance(out, dict) else {}

        ospf = any(p.routing == "ospf" for p in model.peers)
        bgp = model.bgp is not None
        return [s.as_dict() for s in peer_statuses(
            model,
            ospf_neighbors=await read("show ip ospf neighbor json") if ospf else {},
            bgp_summary=await read("show bgp summary json") if bgp else {},
            routes=await read("show ip route json"),
            ospf_self_external=(await read("show ip ospf database external self-originate json")
                                if ospf else {}),
        )]

    async def stats_bgp(self, max_age: float = 180.0) -> dict[str, Any]:
        """The `bgp` key of a get-device-stats entry: read at most every `max_age` seconds.

        flexiagent refreshes it every 3 minutes; polls in between get the last reading
        (the controller stores it only when non-empty), and `{}` without BGP.
        """
        if self._model is None or self._model.bgp is None:
            self._bgp_cache = None
            return {}
        now = time.monotonic()
        if self._bgp_cache is None or now - self._bgp_cache[0] >= max_age:
            try:
                status = await self.bgp_status()
            except RoutingError as e:  # {}: the controller keeps what it stored
                log.warning("bgp status: %s", e)
                status = {}
            self._bgp_cache = (now, status)
        return dict(self._bgp_cache[1])

    def _load_owned(self) -> tuple[Path, ...]:
        if self._state_path is None:
            return ()
        try:
            data = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return ()
        except ValueError:
            log.warning("%s: unreadable, starting with no owned FRR lines", self._state_path)
            return ()
        return tuple(tuple(str(x) for x in p) for p in data.get("owned", []))

    def _save_owned(self) -> None:
        if self._state_path is None:
            return
        tmp = self._state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"owned": [list(p) for p in self._owned]}, f)
        try:
            os.replace(tmp, self._state_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
