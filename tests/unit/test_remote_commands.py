"""The Command tab's allow-list: what runs, what is refused and why (pure)."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, RemoteConfig, parse_config
from agent.remote.commands import Refused, parse_allow, parse_pattern, plan_command

DEFAULT = parse_allow(RemoteConfig().allow)


@pytest.mark.parametrize("cmd,argv", [
    ("vppctl show ikev2 sa details", ("vppctl", "show", "ikev2", "sa", "details")),
    ("vppctl show logging", ("vppctl", "show", "logging")),
    ("vppctl set logging class ikev2 level debug",
     ("vppctl", "set", "logging", "class", "ikev2", "level", "debug")),
    ("swanctl --list-sas", ("swanctl", "--list-sas")),
    ("ip -br addr", ("ip", "-br", "addr")),
    ("ip -br route", ("ip", "-br", "route")),
    ("ip -br link", ("ip", "-br", "link")),
    ("journalctl -u peering-agent -n 200", ("journalctl", "-u", "peering-agent", "-n", "200")),
    ("ping -c 3 -W 1 10.100.0.17", ("ping", "-c", "3", "-W", "1", "10.100.0.17")),
    ("ping -c 3 -W 1 -I peer7 10.100.0.17",
     ("ping", "-c", "3", "-W", "1", "-I", "peer7", "10.100.0.17")),
    ('vtysh -c "show ip route"', ("vtysh", "-c", "show ip route")),
    ("vtysh -c 'show bgp summary json'", ("vtysh", "-c", "show bgp summary json")),
])
def test_default_allow_list_runs_the_peer_diagnostics(cmd: str, argv: tuple[str, ...]) -> None:
    plan = plan_command(cmd, DEFAULT)
    assert plan.argv == argv
    assert (plan.vpp_cli is not None) == (argv[0] == "vppctl")


@pytest.mark.parametrize("cmd", [
    "reboot",
    "rm -rf /",
    "bash -c id",
    "ip addr add 10.0.0.1/24 dev eth0",
    "ip -br addr add 10.0.0.1/24 dev eth0",
    "vppctl set interface state GigabitEthernet0/3/0 down",
    "vppctl ikev2 profile set peer-7 auth shared-key-mic string x",
    "journalctl -u peering-agent -n 10 -f",
    "journalctl -u sshd -n 10",
    "ping -c 3 -W 1 -f 10.0.0.1",
    "ping -c 3 -W 1 example.com",
    "ping -c 3 -W 1 -I -f 10.0.0.1",
    "vtysh -c 'configure terminal'",
    "vtysh -c 'show run' -c 'configure terminal'",
    "swanctl --load-all",
])
def test_everything_else_is_refused_naming_the_allow_list(cmd: str) -> None:
    with pytest.raises(Refused) as e:
        plan_command(cmd, DEFAULT)
    assert "[remote] allow" in str(e.value)
    assert "vppctl show ..." in str(e.value)


@pytest.mark.parametrize("cmd,why", [
    ("vppctl show ikev2 sa | grep SK", "without a shell"),
    ("ip -br addr; reboot", "without a shell"),
    ("ip -br addr 2>&1", "without a shell"),
    ("ip -br addr ; reboot", "without a shell"),
    ("ping -c 1 -W 1 $(reboot)", "without a shell"),
    ("ping -c 1 -W 1 `reboot`", "without a shell"),
    ("ip -br addr > /etc/passwd", "without a shell"),
    ("ip -br addr\nreboot", "one line"),
    ("vtysh -c 'show run\nconf t'", "one line"),
    ("", "empty"),
    ("ping 'unterminated", "cannot parse"),
    ("x" * 2000, "longer than"),
])
def test_shell_syntax_is_refused_with_its_reason(cmd: str, why: str) -> None:
    with pytest.raises(Refused) as e:
        plan_command(cmd, DEFAULT)
    assert why in str(e.value)


def test_quoted_operators_are_refused_too() -> None:
    # vtysh and VPP's CLI parse their own arguments: no second command through them
    with pytest.raises(Refused, match="without a shell"):
        plan_command("vtysh -c 'show ip route; configure terminal'", DEFAULT)


def test_seed_spellings_are_translated_before_the_allow_list() -> None:
    plan = plan_command("vppctl ikev2 set logging level 5", DEFAULT)
    assert plan.vpp_cli == "set logging class ikev2 level debug"
    assert plan.note is not None and "26.06" in plan.note
    assert plan_command("vppctl show event-logger", DEFAULT).vpp_cli == "show logging"
    assert plan_command("vppctl event-logger clear", DEFAULT).vpp_cli == "clear logging"


def test_operator_entries_extend_and_an_empty_list_refuses_all() -> None:
    allow = parse_allow(["ip -s link show <name>", "ss -tn"])
    assert plan_command("ip -s link show peer7", allow).argv == ("ip", "-s", "link", "show",
                                                                  "peer7")
    with pytest.raises(Refused, match=r"\(empty\)"):
        plan_command("ip -br addr", [])


def test_placeholders_are_strict() -> None:
    allow = parse_allow(["ping -c <n> <ip>"])
    for bad in ("ping -c -1 10.0.0.1", "ping -c 99999999 10.0.0.1", "ping -c 1 10.0.0",
                "ping -c 1 10.0.0.1 extra"):
        with pytest.raises(Refused):
            plan_command(bad, allow)
    assert plan_command("ping -c 1 2001:db8::1", allow).argv[-1] == "2001:db8::1"


@pytest.mark.parametrize("entry,why", [
    ("", "empty"), ("* -x", "must be named"), ("ls ... -l", "last word"),
    ("ping <host>", "unknown placeholder"), ("ls 'x", "closing quotation"),
])
def test_bad_entries_are_configuration_errors(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_pattern(entry)
    with pytest.raises(ConfigError) as e:
        parse_config({"remote": {"allow": [entry]}}, {})
    assert str(e.value).startswith("remote.allow") and why in str(e.value)


def test_allow_list_from_the_environment_is_a_json_array() -> None:
    cfg = parse_config({}, {"PEERING_AGENT_REMOTE__ALLOW": '["ip -br addr"]'})
    assert cfg.remote.allow == ("ip -br addr",)
    with pytest.raises(ConfigError, match="JSON array"):
        parse_config({}, {"PEERING_AGENT_REMOTE__ALLOW": "ip -br addr"})
