"""`StrongswanIke`: vppsim's IKE backend whose negotiations a real charon performs
(see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from agent.lab.vppsim.ike_strongswan.charon import Charon, vici_session
from agent.lab.vppsim.ike_strongswan.dataplane import DataPlane
from agent.lab.vppsim.ike_strongswan.translate import (
    classify_failure,
    connection_for,
    initiated_uid,
)
from agent.lab.vppsim.state import (
    AUTH_FAILED,
    AUTH_FAILED_LOG,
    AUTHENTICATED,
    NO_PROPOSAL_CHOSEN,
    SA_INIT,
    ChildSa,
    IkeSa,
    Profile,
    SimState,
)
from agent.peers import strongswan

log = structlog.get_logger(__name__)


@dataclass
class _Link:
    """A vppsim SA and the charon IKE SA that realizes it."""

    uniqueid: str | None = None


class StrongswanIke:
    """IkeBackend whose negotiations a real charon performs (see the module docstring).

    workdir: private directory for charon's files (short path: it holds a socket).
    netns: the namespace charon runs in; None = the current process's one, which
    must be the namespace vppsim runs in (its WAN addresses are charon's).
    dpd_delay: liveness check period; None follows VPP's global liveness setting.
    """

    def __init__(self, workdir: Path, netns: str | None = None, *, poll: float = 0.2,
                 failed_linger: float = 2.0, initiate_timeout: float = 8.0,
                 data_plane: bool = True, table: int = 4242,
                 dpd_delay: float | None = None) -> None:
        self.workdir = Path(workdir)
        self.charon = Charon(self.workdir / "device-charon", netns, table=table,
                             label="vppsim charon")
        self.poll = poll
        self.failed_linger = failed_linger
        self.initiate_timeout = initiate_timeout
        self.want_data_plane = data_plane
        self.dpd_delay = dpd_delay  # None: VPP's liveness period as the agent set it
        self.data_plane: DataPlane | None = None
        self.failures: dict[str, list[str]] = {}  # profile -> charon's last failure lines
        self._state: SimState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[int, _Link] = {}
        self._inflight: set[int] = set()  # SA indexes whose VICI initiate runs
        # conn name -> (body, PSK) loaded into charon; reloaded when either changes
        self._loaded: dict[str, tuple[dict[str, Any], bytes]] = {}
        # Loading and unloading a connection run on worker threads; a profile deleted
        # and re-created at once (the agent's negotiation restart) must not have its
        # new connection unloaded by the old one's cleanup.
        self._load_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._sync_pending = False
        self._linux_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------
    def attach(self, state: SimState, loop: asyncio.AbstractEventLoop) -> None:
        self._state, self._loop = state, loop
        self._links.clear()
        self._inflight.clear()
        self._linux_lock = asyncio.Lock()  # bound to this (possibly new) loop

    async def start(self) -> None:
        """Start charon (and the data plane); called by VppSim.start after attach."""
        await asyncio.to_thread(self.charon.start)
        assert self._loop is not None
        if self.want_data_plane:
            self.data_plane = DataPlane(self._loop, nft_table=f"vppsim_{os.getpid()}")
            try:
                await self.data_plane.start()
            except BaseException:
                self.close()
                raise
        self._poller = self._loop.create_task(self._poll_loop())

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self.data_plane is not None:
            self.data_plane.close()
            self.data_plane = None
        self.charon.stop()
        self._loaded.clear()

    # -- vici plumbing ----------------------------------------------------------
    @contextlib.contextmanager
    def _vici(self) -> Iterator[Any]:
        session = vici_session(self.charon.vici_path, timeout=self.initiate_timeout + 2)
        try:
            yield session
        finally:
            with contextlib.suppress(Exception):
                session.transport.close()

    def _spawn(self, fn: Callable[[], Any], then: Callable[[Any], None] | None = None) -> None:
        assert self._loop is not None

        async def run() -> None:
            try:
                result = await asyncio.to_thread(fn)
            except Exception as e:  # charon refused: logged, state decided by the poll
                log.warning("vici request failed", error=str(e))
                return
            if then is not None:
                then(result)

        task = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def state_changed(self) -> None:
        """VppSim calls this after every accepted write: mirror it soon (coalesced)."""
        if self._sync_pending or self._loop is None:
            return
        self._sync_pending = True
        self._loop.call_soon(self._mirror)

    def _mirror(self) -> None:
        self._sync_pending = False
        state = self._state
        if state is None or self._loop is None:
            return
        for name in [n for n in self._loaded if n not in state.profiles]:
            self._spawn(functools.partial(self._with_session, functools.partial(
                self._unload, name=name)))
        if self.data_plane is not None:
            task = self._loop.create_task(self._sync_linux(state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sync_linux(self, state: SimState) -> None:
        async with self._linux_lock:  # one sync at a time, in order
            if self.data_plane is None:
                return
            try:
                await self.data_plane.sync(state)
            except Exception as e:
                log.error("mirroring the tunnel to Linux failed", error=str(e))

    # -- IkeBackend ---------------------------------------------------------------
    def initiate(self, profile: Profile, sa: IkeSa) -> None:
        try:
            assert self._state is not None
            dpd = self.dpd_delay if self.dpd_delay is not None else self._state.liveness[0]
            body = connection_for(profile, str(sa.iaddr), dpd)
        except (ValueError, KeyError) as e:
            log.warning("profile cannot be expressed for strongSwan", profile=profile.name,
                        error=str(e))
            self._fail(sa.index, NO_PROPOSAL_CHOSEN)
            return
        psk = bytes(profile.auth_data)
        if profile.auth_hex:
            psk = bytes.fromhex(psk.decode("ascii", "replace"))
        name, index = profile.name, sa.index
        owners = [body["local"]["id"], body["remote"]["id"]]
        self._links[index] = _Link()
        self._inflight.add(index)

        def work() -> tuple[list[str], bool, str | None]:
            try:
                return negotiate()
            except Exception as e:  # charon unreachable or refused the connection
                return [f"vici: {e}"], False, None

        def negotiate() -> tuple[list[str], bool, str | None]:
            with self._vici() as s:
                with self._load_lock:
                    if self._loaded.get(name) != (body, psk):
                        s.load_conn({name: body})
                        s.load_shared({"id": f"psk-{name}", "type": "IKE", "data": psk,
                                       "owners": owners})
                        self._loaded[name] = (body, psk)
                lines: list[str] = []
                ok = True
                try:
                    for event in s.initiate({"child": name, "ike": name,
                                             "timeout": int(self.initiate_timeout * 1000),
                                             "init-limits": "no"}):
                        msg = event.get("msg", b"")
                        lines.append(msg.decode(errors="replace") if isinstance(msg, bytes)
                                     else str(msg))
                except Exception as e:  # vici.exception.CommandException: it failed
                    ok = False
                    lines.append(str(e))
            uid = initiated_uid(name, lines)
            if not ok:  # an IKE SA whose child failed (TS/ESP proposal): VPP drops it
                try:
                    with self._vici() as s2:
                        self._terminate_childless(s2, name)
                except Exception as e:
                    log.warning("terminating a child-less IKE SA failed", error=str(e))
            return lines, ok, uid

        def done(result: tuple[list[str], bool, str | None]) -> None:
            self._inflight.discard(index)
            lines, ok, uid = result
            assert self._state is not None
            if not ok:
                self.failures[name] = [ln for ln in lines if "error" in ln or "fail" in ln
                                       or "NO_" in ln or "TS_" in ln][-5:]
                self._fail(index, classify_failure(lines))
            elif index in self._state.sas and uid is not None:
                self._links[index] = _Link(uid)
            elif uid is not None:  # deleted while negotiating: VPP would drop it too
                self._spawn(functools.partial(self._with_session, functools.partial(
                    _terminate, ike_id=uid)))
            self._kick()

        self._spawn(work, done)

    def _fail(self, index: int, vpp_state: int | None) -> None:
        state = self._state
        assert state is not None and self._loop is not None
        sa = state.sas.get(index)
        if sa is None:
            return
        if vpp_state is None:  # no answer / unknown: VPP times the SA out
            state.log(f"ikev2: sa {index} profile {sa.profile} timed out")
            state.remove_sa(index)
            self._links.pop(index, None)
            return
        sa.state = vpp_state
        self._links.setdefault(index, _Link())
        sa.children.clear()
        state.log(f"ikev2: sa {index} profile {sa.profile} failed: state {vpp_state}")
        if vpp_state == AUTH_FAILED:  # VPP's own line (level err: kept by default)
            state.log(AUTH_FAILED_LOG.format(ispi=sa.ispi), level="error")
        self._loop.call_later(self.failed_linger, self._forget, index)

    def _forget(self, index: int) -> None:
        assert self._state is not None
        self._state.remove_sa(index)
        self._links.pop(index, None)

    def delete_ike_sa(self, sa: IkeSa) -> None:
        """Terminate the IKE SA (or forget a failed one); also called on profile delete."""
        assert self._state is not None
        link = self._links.pop(sa.index, None)
        self._state.remove_sa(sa.index)
        uid = link.uniqueid if link else None
        name = sa.profile
        gone_profile = name not in self._state.profiles

        def work() -> None:
            with self._vici() as s:
                if uid is not None:
                    with contextlib.suppress(Exception):
                        for _ in s.terminate({"ike-id": uid, "timeout": 2000, "force": "yes"}):
                            pass
                if gone_profile:
                    self._unload(s, name)

        self._spawn(work)

    def _unload(self, s: Any, name: str) -> None:
        with self._load_lock:
            if self._state is not None and name in self._state.profiles:
                return  # re-created meanwhile: its connection is the new one
            if self._loaded.pop(name, None) is None:
                return
            self._unload_locked(s, name)

    def _unload_locked(self, s: Any, name: str) -> None:
        with contextlib.suppress(Exception):
            for _ in s.terminate({"ike": name, "timeout": 2000, "force": "yes"}):
                pass
        with contextlib.suppress(Exception):
            s.unload_conn({"name": name})
        with contextlib.suppress(Exception):
            s.unload_shared({"id": f"psk-{name}"})

    def _with_session(self, fn: Callable[[Any], None]) -> None:
        with self._vici() as s:
            fn(s)

    def delete_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        assert self._state is not None
        self._state.remove_child(sa, child)
        spi = f"{child.i_spi:08x}"

        def work() -> None:
            with self._vici() as s, contextlib.suppress(Exception):
                for _ in s.terminate({"child-id": self._child_uid(s, spi), "timeout": 2000}):
                    pass

        self._spawn(work, lambda _: self._kick())

    def rekey_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        spi = f"{child.i_spi:08x}"

        def work() -> None:
            with self._vici() as s:
                uid = self._child_uid(s, spi)
                if uid:
                    s.rekey({"child-id": uid})

        self._spawn(work, lambda _: self._kick())

    @staticmethod
    def _terminate_childless(s: Any, name: str) -> None:
        for entry in s.list_sas({"ike": name}):
            for ike in entry.values():
                children = (ike.get("child-sas") or {}).values()
                if not any(_text(c.get("state")) == "INSTALLED" for c in children):
                    with contextlib.suppress(Exception):
                        for _ in s.terminate({"ike-id": _text(ike.get("uniqueid")),
                                              "timeout": 2000, "force": "yes"}):
                            pass

    @staticmethod
    def _child_uid(s: Any, spi_hex: str) -> str:
        for entry in s.list_sas():
            for ike in entry.values():
                for child in (ike.get("child-sas") or {}).values():
                    spis = {_text(child.get("spi-in")), _text(child.get("spi-out"))}
                    if spi_hex in spis:
                        return _text(child.get("uniqueid"))
        return ""

    # -- list-sas -> vppsim's SAs ---------------------------------------------------
    def _kick(self) -> None:
        """Re-read charon now (after an initiate/terminate finished)."""
        self._spawn(self._list, self._apply)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            if not self.charon.running:
                continue
            try:
                sas = await asyncio.to_thread(self._list)
            except Exception as e:
                log.debug("list-sas failed", error=str(e))
                continue
            self._apply(sas)
            if self.data_plane is not None and self.data_plane._pkt is None:
                self.data_plane._ensure_packet_socket()

    def _list(self) -> dict[str, dict[str, Any]]:
        """uniqueid -> IKE SA (as VICI reports it), for our profiles' connections."""
        out: dict[str, dict[str, Any]] = {}
        with self._vici() as s:
            for entry in s.list_sas():
                for conn, ike in entry.items():
                    conn_name = _text(conn)
                    ike = _decode(ike)
                    ike["_conn"] = conn_name
                    out[ike["uniqueid"]] = ike
        return out

    def _apply(self, sas: dict[str, dict[str, Any]]) -> None:
        state = self._state
        if state is None:
            return
        mapped = {link.uniqueid: idx for idx, link in self._links.items() if link.uniqueid}
        # a profile with an initiation in flight: that initiation claims its IKE SA
        claiming = {state.sas[i].profile for i in self._inflight if i in state.sas}
        # charon SAs vppsim does not know: a rekeyed IKE SA or one the peer initiated
        for uid, ike in sas.items():
            conn = ike["_conn"]
            if uid in mapped or conn not in state.profiles or conn in claiming:
                continue
            adopted = self._adopt(ike)
            if adopted is not None:
                self._links[adopted.index] = _Link(uid)
                mapped[uid] = adopted.index
        for uid, idx in list(mapped.items()):
            sa = state.sas.get(idx)
            if sa is None:
                self._links.pop(idx, None)
                continue
            found = sas.get(uid)
            if found is None:
                if idx in self._inflight:
                    continue  # the initiation's own outcome decides (see initiate)
                if sa.state == AUTHENTICATED or sa.state == SA_INIT:
                    state.log(f"ikev2: sa {idx} profile {sa.profile} gone in charon")
                    self._links.pop(idx, None)
                    state.remove_sa(idx)
                continue
            self._update(sa, found)

    def _adopt(self, ike: dict[str, Any]) -> IkeSa | None:
        """An established charon SA vppsim did not initiate (peer's, or an IKE rekey)."""
        state = self._state
        assert state is not None
        children = (ike.get("child-sas") or {}).values()
        if ike.get("state") != "ESTABLISHED" or not any(
                c.get("state") == "INSTALLED" for c in children):
            return None
        # an initiation whose IKE SA could not be told from its log lines
        linked = {i for i, link in self._links.items() if link.uniqueid}
        for sa in state.sas.values():
            if sa.profile == ike["_conn"] and sa.state == SA_INIT and sa.index not in linked:
                return sa
        p = state.profiles[ike["_conn"]]
        if p.responder_addr is None or state.first_address(
                p.responder_sw_if_index, p.responder_addr.version) is None:
            return None
        sa = state.new_sa(p)
        self._links[sa.index] = _Link()
        return sa

    def _update(self, sa: IkeSa, ike: dict[str, Any]) -> None:
        state = self._state
        assert state is not None
        initiator = ike.get("initiator") == "yes"
        sa.ispi = int(ike.get("initiator-spi", "0"), 16) or sa.ispi
        sa.rspi = int(ike.get("responder-spi", "0"), 16)
        enc = ike.get("encr-alg", "")
        if enc:
            sa.ike = {
                "crypto_alg": strongswan.ENCR_BY_NAME.get(enc, 0),
                "crypto_key_size": int(ike.get("encr-keysize", "0") or 0),
                "integ_alg": strongswan.INTEG_BY_NAME.get(ike.get("integ-alg", ""), 0),
                "prf_alg": strongswan.PRF_BY_NAME.get(ike.get("prf-alg", ""), 0),
                "dh_group": strongswan.DH_BY_NAME.get(ike.get("dh-group", ""), 0),
            }
        if ike.get("state") != "ESTABLISHED":
            return
        installed = {c["uniqueid"]: c for c in (ike.get("child-sas") or {}).values()
                     if c.get("state") == "INSTALLED"}
        if not installed:
            if sa.state == SA_INIT:
                return  # IKE_AUTH done, CHILD_SA being installed
            if sa.children:
                for child in list(sa.children):
                    state.remove_child(sa, child)
            return
        if sa.state != AUTHENTICATED:
            sa.state = AUTHENTICATED
            sa.auth_time = state.clock()
            state.log(f"ikev2: sa {sa.index} profile {sa.profile} AUTHENTICATED (charon)")
        profile = state.profiles.get(sa.profile)
        by_spi = {f"{c.i_spi:08x}": c for c in sa.children}
        keep: list[ChildSa] = []
        for c in installed.values():
            spi_in, spi_out = c.get("spi-in", "0"), c.get("spi-out", "0")
            i_spi, r_spi = (spi_in, spi_out) if initiator else (spi_out, spi_in)
            known = by_spi.get(i_spi)
            if known is None:
                if profile is None:
                    continue
                known = state.add_child(sa, profile)
            child = known
            child.i_spi, child.r_spi = int(i_spi, 16), int(r_spi, 16)
            child.encr = (strongswan.ENCR_BY_NAME.get(c.get("encr-alg", ""), 0),
                          int(c.get("encr-keysize", "0") or 0))
            child.integ = strongswan.INTEG_BY_NAME.get(c.get("integ-alg", ""), 0)
            child.keys = {}
            keep.append(child)
        for child in list(sa.children):
            if child not in keep:  # rekeyed or deleted in charon
                state.remove_child(sa, child)


def _terminate(s: Any, ike_id: str) -> None:
    with contextlib.suppress(Exception):
        for _ in s.terminate({"ike-id": ike_id, "timeout": 2000, "force": "yes"}):
            pass


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _decode(v: Any) -> Any:
    """VICI answers bytes everywhere: text for the fields we read."""
    if isinstance(v, dict):
        return {_text(k): _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return _text(v)
