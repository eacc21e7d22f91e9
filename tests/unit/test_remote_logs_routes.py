"""get-device-logs requests and get-device-os-routes shapes (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.remote.logs import (
    MAX_LINES,
    LogSource,
    LogsRefused,
    default_sources,
    journal_argv,
    parse_logs_request,
    tail_lines,
)
from agent.remote.routes import routes_from_ip_json

SOURCES = default_sources("")


def test_flexiagent_filters_map_to_files_or_the_journal() -> None:
    assert SOURCES["fwagent"] == LogSource(None, "peering-agent")
    assert SOURCES["syslog"] == LogSource(Path("/var/log/syslog"), "")
    assert SOURCES["vpp"] == LogSource(Path("/var/log/vpp/vpp.log"), "vpp")
    assert SOURCES["ospf"] == LogSource(Path("/var/log/frr/ospfd.log"), "frr")
    assert default_sources("/var/log/pa.log")["fwagent"].file == Path("/var/log/pa.log")


@pytest.mark.parametrize("params,flt,lines", [
    ({"lines": "100", "filter": "fwagent"}, "fwagent", 100),  # flexiManage sends text
    ({"lines": 5, "filter": "vpp"}, "vpp", 5),
    ({"lines": 10 ** 9, "filter": "syslog"}, "syslog", MAX_LINES),
    (None, "all", 100),
])
def test_lines_and_filter(params: object, flt: str, lines: int) -> None:
    req = parse_logs_request(params, SOURCES)
    assert (req.filter, req.lines) == (flt, lines)


@pytest.mark.parametrize("flt", ["all", "dhcp", "hostapd", "agentui", "application_ids",
                                 "application"])
def test_flexiagent_filters_without_a_log_here_answer_nothing(flt: str) -> None:
    assert parse_logs_request({"lines": 10, "filter": flt}, SOURCES).source is None


@pytest.mark.parametrize("params,why", [
    ({"lines": 0, "filter": "vpp"}, "lines must be"),
    ({"lines": "ten", "filter": "vpp"}, "lines must be"),
    ({"lines": True, "filter": "vpp"}, "lines must be"),
    ({"lines": 10, "filter": "kernel"}, "unknown filter 'kernel'; this device has fwagent, "
                                         "ospf, syslog, vpp"),
    ({"lines": 10, "filter": "a b;c"}, "unknown filter given"),  # not echoed
    ({"lines": 10, "filter": 7}, "filter must be a string"),
    ([1], "params must be an object"),
])
def test_bad_requests_get_a_clear_error(params: object, why: str) -> None:
    with pytest.raises(LogsRefused) as e:
        parse_logs_request(params, SOURCES)
    assert why in str(e.value)


def test_tail_and_journal_argv() -> None:
    assert tail_lines(b"a\nb\nc\n", 2) == ["b", "c"]
    assert tail_lines(b"a\nb", 5) == ["a", "b"]
    assert tail_lines(b"", 5) == []
    assert journal_argv("vpp", 20) == ["journalctl", "--no-pager", "-q", "-o", "short-iso",
                                       "-n", "20", "-u", "vpp"]
    assert "-u" not in journal_argv("", 20)


IP_JSON = [
    {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0", "protocol": "dhcp",
     "metric": 100, "flags": []},
    {"dst": "10.100.0.16/31", "dev": "peer7", "protocol": "kernel", "scope": "link",
     "prefsrc": "10.100.0.16", "flags": []},
    {"dst": "8.8.8.8", "dev": "peer7", "protocol": "static", "metric": 5, "flags": []},
    {"dst": "10.0.0.0/8", "protocol": "zebra", "metric": 20, "flags": [],
     "nexthops": [{"gateway": "10.100.0.17", "dev": "peer7", "weight": 1, "flags": []},
                  {"gateway": "10.100.0.19", "dev": "peer8", "weight": 1, "flags": []}]},
    # iproute2 6.1 prints no protocol for boot (`ip route add`, ifupdown, dhclient)
    # and no dev for a blackhole
    {"dst": "172.16.0.0/12", "gateway": "10.1.1.1", "dev": "eth1", "table": "100",
     "flags": []},
    {"type": "blackhole", "dst": "10.98.0.0/16", "flags": []},
    {"type": "local", "dst": "192.168.1.10", "table": "local", "dev": "eth0",
     "protocol": "kernel", "scope": "host", "prefsrc": "192.168.1.10", "flags": []},
    {"type": "broadcast", "dst": "192.168.1.255", "table": "local", "dev": "eth0",
     "protocol": "kernel", "flags": []},
]


def test_routes_have_flexiagent_shape_without_the_local_table() -> None:
    assert routes_from_ip_json(IP_JSON) == [
        {"destination": "0.0.0.0/0", "gateway": "192.168.1.1", "metric": 100,
         "interface": "eth0", "protocol": "dhcp"},
        {"destination": "10.100.0.16/31", "gateway": None, "metric": 0, "interface": "peer7",
         "protocol": "kernel"},
        {"destination": "8.8.8.8/32", "gateway": None, "metric": 5, "interface": "peer7",
         "protocol": "static"},
        {"destination": "10.0.0.0/8", "gateway": "10.100.0.17", "metric": 20,
         "interface": "peer7", "protocol": "zebra"},
        {"destination": "10.0.0.0/8", "gateway": "10.100.0.19", "metric": 20,
         "interface": "peer8", "protocol": "zebra"},
        {"destination": "172.16.0.0/12", "gateway": "10.1.1.1", "metric": 0,
         "interface": "eth1", "protocol": "boot"},
        {"destination": "10.98.0.0/16", "gateway": None, "metric": 0, "interface": "",
         "protocol": "boot"},
    ]
    assert routes_from_ip_json({"not": "a list"}) == []
    assert routes_from_ip_json([{"dst": "fe80::/64"}, "junk"]) == []
