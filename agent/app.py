"""The daemon: the one place where the agent's parts are created and wired.

No module keeps global state; everything the daemon runs hangs off `Agent` and
lives inside one TaskGroup, so a failure in any long-running part stops the
daemon (systemd restarts it) instead of leaving a half-working process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from agent.admin.backend import ManagerBackend
from agent.admin.server import AdminServer
from agent.config import AgentConfig, RoutingConfig
from agent.daemon.gctune import collector_paused
from agent.jobs.cfgstore import ConfigStore
from agent.jobs.dispatch import JobDispatcher, JobObserver
from agent.jobs.info import detect_frr_version
from agent.jobs.rooms import wan_dia_labels
from agent.jobs.validation import ValidationPolicy
from agent.link.journal import Journal
from agent.link.session import LinkSession
from agent.monitor.health import HealthConfig
from agent.monitor.icmp import ProbeEngine
from agent.monitor.resolver import NameResolver
from agent.monitor.service import MonitorService
from agent.peers.manager import PeerManager
from agent.peers.store import PeerStore
from agent.policy.decide import Hysteresis
from agent.policy.manager import PolicyManager
from agent.remote.service import RemoteService
from agent.routing.manager import RoutingManager, Vtysh
from agent.vpp.client import ConnectInfo, VppClient
from agent.vpp.counters import Counters, StatsSegment
from agent.vpp.errors import VppError
from agent.vpp.readers import (
    WanFacts,
    cli_crash_refusal,
    read_tunnel_indexes,
    read_wan_facts,
)

log = structlog.get_logger(__name__)

ReadyCallback = Callable[[], None]


def make_routing(cfg: RoutingConfig, state_dir: Path,
                 which: Callable[[str], str | None] = shutil.which) -> RoutingManager | None:
    """The FRR writer when FRR is usable (vtysh installed); None: routing is recorded only."""
    vtysh = which(cfg.vtysh) if cfg.vtysh else None
    if vtysh is None:
        log.warning("FRR's vtysh not found: routing (OSPF/BGP over peers) is recorded, "
                    "not applied; install frr to apply it", vtysh=cfg.vtysh)
        return None
    return RoutingManager(Vtysh(vtysh, cfg.vty_socket or None), state_dir / "frr-owned.json")


class Agent:
    """All long-lived parts of one daemon instance."""

    def __init__(self, cfg: AgentConfig,
                 name_resolver: Callable[..., NameResolver] = NameResolver,
                 job_metrics: JobObserver | None = None) -> None:
        """`name_resolver` builds the monitor's resolver (tests pass one without DNS);
        `job_metrics` is told each job's message, outcome and duration."""
        self.cfg = cfg
        state_dir = Path(cfg.state.dir)
        self.vpp = VppClient(str(cfg.vpp.api_socket), call_timeout=cfg.vpp.call_timeout,
                             skip_modules=frozenset() if cfg.vpp.linux_cp else frozenset({"lcp"}))
        self.store = PeerStore(state_dir)
        self.manager = PeerManager(
            self.vpp, self.store, cfg.interfaces,
            sa_poll_interval=cfg.peers.sa_poll_interval,
            reinit_backoff_min=cfg.peers.reinit_backoff_min,
            reinit_backoff_max=cfg.peers.reinit_backoff_max,
            sa_init_timeout=cfg.peers.sa_init_timeout,
            # a job arriving before VPP is up waits for it, within the job's own bound
            vpp_wait=cfg.controller.job_timeout * 0.9,
            linux_cp=cfg.vpp.linux_cp,
            liveness=(cfg.peers.liveness_period, cfg.peers.liveness_retries),
            recovery_grace=cfg.state.recovery_grace,
            drift_check_interval=cfg.peers.drift_check_interval,
        )
        self.vpp_version = ""
        mon = cfg.monitor
        self.probes = ProbeEngine(mon.interval, mon.timeout)  # its counters: metrics
        self.monitor = MonitorService(
            self.manager,
            self.probes,
            name_resolver,
            bind=mon.bind,
            health_config=HealthConfig(window=mon.window, down_after=mon.down_after,
                                       up_after=mon.up_after),
            stats_period=mon.stats_period,
        )
        pol = cfg.policy
        self.policies = PolicyManager(
            self.vpp, lambda: self.manager.desired, self.monitor.health,
            lan_interfaces=pol.lan_interfaces, wan_interfaces=pol.wan_interfaces,
            state_file=state_dir / "multilink-policy.json", period=pol.period,
            hysteresis=Hysteresis(pol.hysteresis_rtt_ms, pol.hysteresis_drop_pct),
            dia_labels=lambda: wan_dia_labels(self.dispatcher.items),
        )
        self.monitor.status_listeners.append(lambda _tid, _status: self.policies.notify())
        self.config_store = ConfigStore(state_dir)
        self.routing = make_routing(cfg.routing, state_dir)
        self.stats_segment = (StatsSegment(Path(cfg.vpp.stats_socket))
                              if cfg.vpp.stats_socket else None)
        ctl = cfg.controller
        self.dispatcher = JobDispatcher(
            self.manager,
            ValidationPolicy(allow_weak_crypto=cfg.security.allow_weak_crypto,
                             psk_min_length=cfg.security.psk_min_length),
            stats=self.monitor.device_stats,
            config=self.config_store,
            agent_version=ctl.fwagent_version,
            vpp_version=lambda: self.vpp_version,
            vpp_fallback=ctl.vpp_version,
            frr_version=detect_frr_version(ctl.frr_version),
            facts=self._wan_facts,
            counters=self._counters,
            observe=job_metrics,
            routing=self.routing,
            policies=self.policies,
        )
        self.manager.add_drift_listener(self.dispatcher.note_drift)
        self.monitor.alert_rules = lambda: (
            self.dispatcher.notification_rules(), self.dispatcher.tunnel_notifications(),
            self.dispatcher.data_plane_state()[0] == "running",
            self.dispatcher.tunnels_without_wan())
        self.journal = Journal(state_dir / "link-journal.sqlite3",
                               keep=cfg.controller.journal_keep)
        self.remote = RemoteService(
            cfg.remote,
            vpp_cli=self._vpp_cli,
            config=self.dispatcher.recorded_config,
            secrets=lambda: [s.psk.reveal() for s in self.manager.desired.values()],
            bgp_status=self.dispatcher.bgp_status,
        )
        self.link = LinkSession(cfg.controller, self.dispatcher, self.journal,
                                direct=self.remote, job_scope=self._job_scope)
        self.admin = AdminServer(
            ManagerBackend(self.manager, self.vpp, health=self.monitor.health,
                           jobs=self.journal.recent, log_level=cfg.logging.level,
                           policies=self.policies.status,
                           routing=self.dispatcher.routing_status),
            Path(cfg.admin.socket),
        )
        self.extra_tasks: list[Callable[[], Coroutine[Any, Any, Any]]] = []
        self._ready = asyncio.Event()

    @property
    def started(self) -> asyncio.Event:
        """Set once VPP is connected and the stored state is loaded (systemd's READY)."""
        return self._ready

    @contextlib.contextmanager
    def _job_scope(self) -> Iterator[None]:
        """While a job runs, is answered and journaled: no cyclic collection, and the
        monitor follows the job's changes once it is done."""
        with collector_paused(), self.monitor.syncs_held():
            yield

    async def _wan_facts(self) -> list[WanFacts]:
        if not self.vpp.connected:
            raise VppError("VPP is not connected")
        return await read_wan_facts(self.vpp, self.cfg.interfaces)

    async def _counters(self, wans: Sequence[WanFacts]
                        ) -> tuple[dict[str, Counters], dict[int, Counters]]:
        """Counter totals per WAN dev_id (`wans`: the facts the stats reply read) and per
        peer tunnel, from the stats segment."""
        if self.stats_segment is None or not self.vpp.connected:
            raise VppError("no VPP counters")
        totals = await asyncio.to_thread(self.stats_segment.read)
        tunnels = await read_tunnel_indexes(self.vpp)
        by_dev = {f.dev_id: totals[f.sw_if_index] for f in wans if f.sw_if_index in totals}
        by_tunnel = {tid: totals[sw] for tid, sw in tunnels.items()
                     if sw in totals and tid in self.manager.desired}
        return by_dev, by_tunnel

    async def _vpp_cli(self, cmd: str) -> tuple[int, str]:
        """cli_inband for the Command and Traces tabs: (retval, VPP's text); a command
        that would crash VPP now is not sent (retval -1, the reason)."""
        if (why := await cli_crash_refusal(self.vpp, cmd)) is not None:
            return -1, why
        reply = await self.vpp.call("cli_inband", cmd=cmd, _check=False,
                                    _timeout=self.cfg.remote.max_timeout)
        return int(reply.retval), str(reply.reply)

    async def _on_vpp_connect(self, info: ConnectInfo) -> None:
        try:
            self.vpp_version = str((await self.vpp.call("show_version")).version)
        except VppError as e:
            log.warning("VPP version unknown", error=str(e))
        await self.manager.on_vpp_connect(info)
        self._ready.set()

    async def run(self, on_ready: ReadyCallback | None = None) -> None:
        """Run until cancelled; `on_ready` once VPP is connected and state is loaded."""
        self.manager.load()
        if self.manager.awaiting_sync:  # before the controller can ask for the hash
            await self.dispatcher.report_store_lost()
        self.policies.load()
        self.vpp.add_connect_listener(self._on_vpp_connect)
        await self.admin.start()
        try:
            async with asyncio.TaskGroup() as tg:
                await self.vpp.start()
                tg.create_task(self.link.run(), name="controller-link")
                tg.create_task(self.manager.supervise_forever(), name="sa-supervisor")
                tg.create_task(self.monitor.run(), name="monitor")
                # follows tunnel health; reconciles itself after each VPP (re)connect
                tg.create_task(self.policies.run(), name="multilink-policies")
                # FRR to the recorded routing now, and again after FRR restarts
                tg.create_task(self.dispatcher.routing_forever(self.cfg.routing.reconcile_period),
                               name="frr-routing")
                for make in self.extra_tasks:
                    tg.create_task(make())
                await self._ready.wait()
                await self.dispatcher.adopt_recorded_routes()
                log.info("agent ready", peers=len(self.manager.desired),
                         vpp=self.vpp_version, controller=self.link.url)
                if on_ready is not None:
                    on_ready()
        finally:
            await self.admin.stop()
            await self.vpp.close()
            self.journal.close()
            self.config_store.close()
            if self.stats_segment is not None:
                self.stats_segment.close()
            self.store.close()


async def run_until_signalled(agent: Agent, on_ready: ReadyCallback | None = None) -> None:
    """Run the agent; SIGTERM/SIGINT stop it cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run(on_ready)
    log.info("agent stopped")
