"""Prometheus exposition of the agent's metrics (prometheus_client over a registry of the
agent's own), the job recorder and the listen check."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from agent.daemon.metrics import (
    AgentMetricsSource,
    JobMetrics,
    JobSnapshot,
    TunnelMetrics,
    metrics_registry,
    parse_listen,
    render_metrics,
)


def render(source: object) -> str:
    return render_metrics(metrics_registry(source))  # type: ignore[arg-type]


@dataclass
class FixedSource:
    tunnel_list: list[TunnelMetrics]
    recorder: JobMetrics = field(default_factory=lambda: JobMetrics(buckets=(0.1, 1.0, 10.0)))
    connected: bool = True
    reconnects: int = 2

    def tunnels(self) -> list[TunnelMetrics]:
        return self.tunnel_list

    def jobs(self) -> JobSnapshot:
        return self.recorder.snapshot()

    def vpp_connected(self) -> bool:
        return self.connected

    def vpp_reconnects(self) -> int:
        return self.reconnects


def fixed_source() -> FixedSource:
    src = FixedSource([
        TunnelMetrics(tunnel_id=9, peer='odd"peer\\x\nname', up=False, rtt_ms=0.0,
                      jitter_ms=0.0, drop_percent=100.0, sa_up=False, sa_uptime_s=None,
                      reinitiations=4),
        TunnelMetrics(tunnel_id=7, peer="203.0.113.10", up=True, rtt_ms=12.5, jitter_ms=1.25,
                      drop_percent=3.3333, sa_up=True, sa_uptime_s=3600.0, reinitiations=0),
    ])
    src.recorder.observe("add-tunnel", True, 0.05)
    src.recorder.observe("add-tunnel", True, 0.5)
    src.recorder.observe("add-tunnel", False, 30.0)
    src.recorder.observe("get-device-stats", True, 0.1)  # on a bound: le is inclusive
    return src


EXPECTED = """\
# HELP peering_agent_tunnel_up Probe health of the tunnel: 1 up, 0 otherwise.
# TYPE peering_agent_tunnel_up gauge
peering_agent_tunnel_up{peer="203.0.113.10",tunnel_id="7"} 1.0
peering_agent_tunnel_up{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 0.0
# HELP peering_agent_tunnel_rtt_seconds Mean probe round-trip time over the health window.
# TYPE peering_agent_tunnel_rtt_seconds gauge
peering_agent_tunnel_rtt_seconds{peer="203.0.113.10",tunnel_id="7"} 0.0125
peering_agent_tunnel_rtt_seconds{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 0.0
# HELP peering_agent_tunnel_jitter_seconds Probe round-trip jitter.
# TYPE peering_agent_tunnel_jitter_seconds gauge
peering_agent_tunnel_jitter_seconds{peer="203.0.113.10",tunnel_id="7"} 0.00125
peering_agent_tunnel_jitter_seconds{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 0.0
# HELP peering_agent_tunnel_drop_ratio Share of probes lost over the health window (0..1).
# TYPE peering_agent_tunnel_drop_ratio gauge
peering_agent_tunnel_drop_ratio{peer="203.0.113.10",tunnel_id="7"} 0.033333
peering_agent_tunnel_drop_ratio{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 1.0
# HELP peering_agent_tunnel_sa_up 1 when the tunnel has an established IKE SA.
# TYPE peering_agent_tunnel_sa_up gauge
peering_agent_tunnel_sa_up{peer="203.0.113.10",tunnel_id="7"} 1.0
peering_agent_tunnel_sa_up{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 0.0
# HELP peering_agent_tunnel_sa_uptime_seconds Age of the established IKE SA (absent without one).
# TYPE peering_agent_tunnel_sa_uptime_seconds gauge
peering_agent_tunnel_sa_uptime_seconds{peer="203.0.113.10",tunnel_id="7"} 3600.0
# HELP peering_agent_tunnel_reinitiations_total IKE re-initiations the agent started for the tunnel.
# TYPE peering_agent_tunnel_reinitiations_total counter
peering_agent_tunnel_reinitiations_total{peer="203.0.113.10",tunnel_id="7"} 0.0
peering_agent_tunnel_reinitiations_total{peer="odd\\"peer\\\\x\\nname",tunnel_id="9"} 4.0
# HELP peering_agent_jobs_total Controller jobs handled, by message and outcome.
# TYPE peering_agent_jobs_total counter
peering_agent_jobs_total{message="add-tunnel",outcome="failed"} 1.0
peering_agent_jobs_total{message="add-tunnel",outcome="ok"} 2.0
peering_agent_jobs_total{message="get-device-stats",outcome="ok"} 1.0
# HELP peering_agent_job_duration_seconds Time from receiving a controller job to sending its reply.
# TYPE peering_agent_job_duration_seconds histogram
peering_agent_job_duration_seconds_bucket{le="0.1",message="add-tunnel"} 1.0
peering_agent_job_duration_seconds_bucket{le="1.0",message="add-tunnel"} 2.0
peering_agent_job_duration_seconds_bucket{le="10.0",message="add-tunnel"} 2.0
peering_agent_job_duration_seconds_bucket{le="+Inf",message="add-tunnel"} 3.0
peering_agent_job_duration_seconds_count{message="add-tunnel"} 3.0
peering_agent_job_duration_seconds_sum{message="add-tunnel"} 30.55
peering_agent_job_duration_seconds_bucket{le="0.1",message="get-device-stats"} 1.0
peering_agent_job_duration_seconds_bucket{le="1.0",message="get-device-stats"} 1.0
peering_agent_job_duration_seconds_bucket{le="10.0",message="get-device-stats"} 1.0
peering_agent_job_duration_seconds_bucket{le="+Inf",message="get-device-stats"} 1.0
peering_agent_job_duration_seconds_count{message="get-device-stats"} 1.0
peering_agent_job_duration_seconds_sum{message="get-device-stats"} 0.1
# HELP peering_agent_vpp_connected 1 while the VPP API connection is up.
# TYPE peering_agent_vpp_connected gauge
peering_agent_vpp_connected 1.0
# HELP peering_agent_vpp_reconnects_total Times the VPP API connection was re-established.
# TYPE peering_agent_vpp_reconnects_total counter
peering_agent_vpp_reconnects_total 2.0
"""


def test_exact_exposition() -> None:
    assert render(fixed_source()) == EXPECTED


def test_empty_agent_still_exposes_every_family() -> None:
    text = render(FixedSource([], connected=False, reconnects=0))
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == 11 and len(set(types)) == 11
    samples = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert samples == ["peering_agent_vpp_connected 0.0",
                       "peering_agent_vpp_reconnects_total 0.0"]


def test_exposition_is_well_formed() -> None:
    """Every sample belongs to the family announced right before it; counters end _total."""
    text = render(fixed_source())
    assert text.endswith("\n") and "\n\n" not in text
    family, kind = "", ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line.split()[2]
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == family
            if kind == "counter":
                assert name.endswith("_total")
        else:
            name = line.split("{")[0].split(" ")[0]
            allowed = {family} if kind != "histogram" else {
                family + s for s in ("_bucket", "_sum", "_count")}
            assert name in allowed, line


def test_histogram_buckets_are_cumulative() -> None:
    rec = JobMetrics(buckets=(1.0, 0.1, 10.0))  # order of the bounds does not matter
    for seconds in (0.0, 0.1, 0.2, 5.0, 11.0, 200.0):
        rec.observe("sync-device", True, seconds)
    h = rec.snapshot().durations["sync-device"]
    assert h.bounds == (0.1, 1.0, 10.0)
    assert h.counts == (2, 1, 1, 2)
    assert h.count == 6
    assert h.total == pytest.approx(216.3)


def test_unknown_messages_are_one_label_value() -> None:
    rec = JobMetrics()
    rec.observe("start-router", False, 0.01)
    rec.observe("x" * 500, False, 0.01)
    rec.observe("remove-tunnel", True, 0.2)
    snap = rec.snapshot()
    assert snap.outcomes == {("other", "failed"): 2, ("remove-tunnel", "ok"): 1}
    assert set(snap.durations) == {"other", "remove-tunnel"}


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_durations_do_not_poison_sum(bad: float) -> None:
    rec = JobMetrics()
    rec.observe("add-tunnel", True, bad)
    h = rec.snapshot().durations["add-tunnel"]
    assert h.total == 0.0 and h.counts[0] == 1


def test_snapshot_is_detached() -> None:
    rec = JobMetrics()
    rec.observe("add-tunnel", True, 0.2)
    snap = rec.snapshot()
    rec.observe("add-tunnel", True, 0.2)
    assert snap.outcomes[("add-tunnel", "ok")] == 1
    assert snap.durations["add-tunnel"].count == 1


def test_recorder_needs_finite_buckets() -> None:
    with pytest.raises(ValueError, match="finite"):
        JobMetrics(buckets=())
    with pytest.raises(ValueError, match="finite"):
        JobMetrics(buckets=(1.0, math.inf))


def test_odd_values_are_written_as_prometheus_reads_them() -> None:
    odd = TunnelMetrics(tunnel_id=1, peer="p", up=True, rtt_ms=math.inf, jitter_ms=math.nan,
                        drop_percent=25.0, sa_up=True, sa_uptime_s=1e12, reinitiations=0)
    text = render(FixedSource([odd]))
    assert 'peering_agent_tunnel_rtt_seconds{peer="p",tunnel_id="1"} +Inf\n' in text
    assert 'peering_agent_tunnel_jitter_seconds{peer="p",tunnel_id="1"} NaN\n' in text
    assert 'peering_agent_tunnel_drop_ratio{peer="p",tunnel_id="1"} 0.25\n' in text
    assert 'peering_agent_tunnel_sa_uptime_seconds{peer="p",tunnel_id="1"} 1e+12\n' in text


def test_each_agent_has_its_own_registry() -> None:
    """Nothing is registered in prometheus_client's global registry; two agents' metrics
    do not mix."""
    from prometheus_client import REGISTRY, generate_latest

    one, two = fixed_source(), FixedSource([], connected=False, reconnects=0)
    reg_one, reg_two = metrics_registry(one), metrics_registry(two)
    assert reg_one is not reg_two
    assert "tunnel_id=\"7\"" in render_metrics(reg_one)
    assert "tunnel_id=" not in render_metrics(reg_two)
    assert b"peering_agent_" not in generate_latest(REGISTRY)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9465", ("127.0.0.1", 9465)), ("[::1]:9100", ("::1", 9100)),
     ("127.1.2.3:1024", ("127.1.2.3", 1024))],
)
def test_listen_loopback(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("listen", "message"),
    [("0.0.0.0:9465", "loopback only"), ("[::]:9465", "loopback only"),
     ("192.0.2.1:9465", "loopback only"), ("localhost:9465", "not a name"),
     ("127.0.0.1", "host:port"), ("127.0.0.1:0", "host:port"), ("127.0.0.1:70000", "host:port"),
     (":9465", "host:port"), ("127.0.0.1:80", "1024 or above")],
)
def test_listen_refused(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen(listen)


# --- AgentMetricsSource over stand-ins shaped like the agent's parts ---------------------


@dataclass
class _Snap:
    status: str
    rtt_ms: float
    jitter_ms: float
    drop_rate: float
    sa_up: bool


@dataclass
class _Spec:
    dst: IPv4Address


@dataclass
class _State:
    sa_uptime: float | None
    reinitiations: int


@dataclass
class _Manager:
    desired: dict[int, _Spec]
    states: dict[int, _State]


@dataclass
class _Monitor:
    snaps: dict[int, _Snap]

    def health(self, tunnel_id: int) -> _Snap | None:
        return self.snaps.get(tunnel_id)


@dataclass
class _Vpp:
    connected: bool
    generation: int


def test_agent_source_reads_the_agent() -> None:
    manager = _Manager(
        desired={3: _Spec(IPv4Address("198.51.100.3")), 1: _Spec(IPv4Address("203.0.113.1"))},
        states={1: _State(sa_uptime=42.0, reinitiations=2)},
    )
    monitor = _Monitor({1: _Snap("up", 20.0, 2.0, 10.0, True)})
    jobs = JobMetrics()
    jobs.observe("add-tunnel", True, 0.3)
    src = AgentMetricsSource(manager, monitor, _Vpp(connected=True, generation=3), jobs)
    assert src.tunnels() == [
        TunnelMetrics(1, "203.0.113.1", True, 20.0, 2.0, 10.0, True, 42.0, 2),
        # wanted but not yet monitored/supervised: listed, down, zeros
        TunnelMetrics(3, "198.51.100.3", False, 0.0, 0.0, 0.0, False, None, 0),
    ]
    assert src.vpp_connected() is True
    assert src.vpp_reconnects() == 2
    assert src.jobs().outcomes == {("add-tunnel", "ok"): 1}
    monitor.snaps[1] = _Snap("down", 0.0, 0.0, 100.0, True)
    assert src.tunnels()[0].up is False
    assert AgentMetricsSource(manager, monitor, _Vpp(False, 0), jobs).vpp_reconnects() == 0


def test_policy_reprogrammings_are_exposed_when_the_source_has_them() -> None:
    @dataclass
    class Policies:
        reprogrammings: int
        reprogram_failures: int

    manager = _Manager(desired={}, states={})
    src = AgentMetricsSource(manager, _Monitor({}), _Vpp(True, 1), JobMetrics(),
                             Policies(5, 1))
    text = render(src)
    assert "# TYPE peering_agent_policy_reprogrammings_total counter" in text
    assert "\npeering_agent_policy_reprogrammings_total 5.0\n" in text
    assert "\npeering_agent_policy_reprogram_failures_total 1.0\n" in text
    # a source without policies (the fixed one) keeps its exact exposition
    assert "policy" not in render(fixed_source())


def test_link_and_probe_counters_are_exposed() -> None:
    from agent.link.session import LinkCounters
    from agent.monitor.icmp import EngineStats

    @dataclass
    class Link:
        connected: bool
        counters: LinkCounters

    @dataclass
    class Probes:
        stats: EngineStats

    link = Link(True, LinkCounters(attempts=3, connections=2, silence_drops=1, replies_held=4))
    probes = Probes(EngineStats(sent=10, replies=7, timeouts=3, ignored=5))
    src = AgentMetricsSource(_Manager(desired={}, states={}), _Monitor({}), _Vpp(True, 1),
                             JobMetrics(), link=link, probes=probes)
    text = render(src)
    for line in ("peering_agent_link_connected 1.0",
                 "peering_agent_link_connect_attempts_total 3.0",
                 "peering_agent_link_connections_total 2.0",
                 "peering_agent_link_silence_drops_total 1.0",
                 "peering_agent_link_replies_held_total 4.0",
                 "peering_agent_link_refusals_total 0.0",
                 "peering_agent_probe_sent_total 10.0", "peering_agent_probe_replies_total 7.0",
                 "peering_agent_probe_timeouts_total 3.0",
                 "peering_agent_probe_ignored_packets_total 5.0"):
        assert f"\n{line}\n" in text, line
    # read on each scrape, not copied once
    link.counters.connections += 1
    link.connected = False
    probes.stats.sent += 1
    text = render(src)
    assert "\npeering_agent_link_connections_total 3.0\n" in text
    assert "\npeering_agent_link_connected 0.0\n" in text
    assert "\npeering_agent_probe_sent_total 11.0\n" in text


def test_every_link_and_probe_counter_has_a_metric() -> None:
    """A counter added to the link or the engine must be added to the tables too."""
    from dataclasses import fields

    from agent.daemon.metrics import LINK_COUNTERS, PROBE_COUNTERS
    from agent.link.session import LinkCounters
    from agent.monitor.icmp import EngineStats

    link_ints = {f.name for f in fields(LinkCounters) if f.type in (int, "int")}
    assert link_ints == {attr for attr, _, _ in LINK_COUNTERS}
    assert {f.name for f in fields(EngineStats)} == {attr for attr, _, _ in PROBE_COUNTERS}
    names = [name for _, name, _ in (*LINK_COUNTERS, *PROBE_COUNTERS)]
    assert len(set(names)) == len(names) and all(n.endswith("_total") for n in names)


async def test_a_scrape_reads_the_agent_on_the_loop_and_writes_the_text_elsewhere() -> None:
    import threading

    from agent.daemon.metrics import scrape

    readers: list[int] = []

    class Watched(FixedSource):
        def tunnels(self) -> list[TunnelMetrics]:
            readers.append(threading.get_ident())
            return super().tunnels()

    src = Watched(fixed_source().tunnel_list, fixed_source().recorder)
    registry = metrics_registry(src)
    assert await scrape(registry) == render_metrics(registry) == EXPECTED
    assert readers == [threading.get_ident()] * 2  # the agent's state: only from the loop
