"""Configuration: TOML + environment, defaults, errors that name the key, reference table."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    AgentConfig,
    ConfigError,
    config_reference,
    config_reference_markdown,
    load_config,
    parse_config,
)

FULL = """
[controller]
url = "wss://manage.example.net"
machine_id = "3f1c0a"
token_file = "/etc/peering-agent/device.token"
ca_file = ""
allow_insecure = false
[vpp]
api_socket = "/run/vpp/api.sock"
[state]
dir = "/var/lib/peering-agent"
[interfaces]
"pci:0000:00:03.00" = "GigabitEthernet0/3/0"
[security]
allow_weak_crypto = false
[monitor]
interval = 1.0
window = 30
[admin]
socket = "/run/peering-agent/admin.sock"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env or {})
    return exc.value.problems


def test_documented_file_loads_with_documented_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), {})
    assert cfg.controller.url == "wss://manage.example.net"
    assert cfg.controller.machine_id == "3f1c0a"
    assert cfg.controller.token_file == Path("/etc/peering-agent/device.token")
    assert cfg.interfaces == {"pci:0000:00:03.00": "GigabitEthernet0/3/0"}
    assert cfg.monitor.window == 30 and cfg.monitor.interval == 1.0
    assert cfg.vpp.api_socket == Path("/run/vpp/api.sock")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), {})
    assert cfg == AgentConfig()
    c = cfg.controller
    assert (c.allow_insecure, c.fwagent_version, c.retry_quick_min, c.retry_slow_max) == (
        False, "6.3.0", 5.0, 70.0)
    assert c.silence_timeout == 80.0 and c.ping_interval == 20.0
    assert cfg.logging.level == "info" and cfg.metrics.listen == "" and cfg.vpp.call_timeout == 5.0


def test_environment_overrides_file(tmp_path: Path) -> None:
    env = {
        "PEERING_AGENT_CONTROLLER__URL": "ws://127.0.0.1:8080",
        "PEERING_AGENT_CONTROLLER__ALLOW_INSECURE": "true",
        "peering_agent_monitor__window": "10",
        "PEERING_AGENT_INTERFACES": '{"pci:0000:00:08.00": "GigabitEthernet0/8/0"}',
        "PEERING_AGENT_CONFIG": "/somewhere.toml",  # not a setting: ignored
        "HOME": "/root",
    }
    cfg = load_config(write(tmp_path, FULL), env)
    assert cfg.controller.url == "ws://127.0.0.1:8080" and cfg.controller.allow_insecure
    assert cfg.monitor.window == 10
    assert cfg.interfaces == {"pci:0000:00:08.00": "GigabitEthernet0/8/0"}
    assert cfg.controller.machine_id == "3f1c0a"  # untouched keys keep the file's value


def test_plain_ws_needs_allow_insecure(tmp_path: Path) -> None:
    assert problems(tmp_path, '[controller]\nurl = "ws://ctl.lab:80"\n') == [
        "controller.url: ws:// requires controller.allow_insecure = true"
    ]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("[controller]\nurll = 'x'\n", {}, "controller.urll: unknown setting"),
        ("[monitor]\nwindow = 'many'\n", {}, "monitor.window: Input should be a valid integer"),
        ("[controller]\nurl = 'ftp://x'\n", {}, "controller.url: must start with wss://"),
        ("[controller]\nfwagent_version = '4.3.1'\n", {}, "controller.fwagent_version: flexi"),
        ("[controller]\nbackoff_min = 0\n", {}, "controller.backoff_min: Input should be greater"),
        ("[controller]\nca_file = '/nonexistent/ca.pem'\n", {}, "controller.ca_file: file not"),
        ("[metrics]\nlisten = 'nope'\n", {}, "metrics.listen: invalid value 'nope' must be"),
        ("[logging]\nlevel = 'chatty'\n", {}, "logging.level: Input should be"),
        ("[controller]\nmachine_id = 'a/b'\n", {}, "controller.machine_id: must be 1-50 hex"),
        # what flexiManage's validateMachineID refuses at registration (HTTP 408)
        ("[controller]\nmachine_id = 'edge_01.lab'\n", {}, "controller.machine_id: must be"),
        (f"[controller]\nmachine_id = '{'a' * 51}'\n", {}, "controller.machine_id: must be"),
        ("[bogus]\nx = 1\n", {}, "bogus: unknown setting"),
        (
            "",
            {"PEERING_AGENT_CONTROLER__URL": "x"},
            "PEERING_AGENT_CONTROLER__URL: no configuration",
        ),
        (
            "",
            {"PEERING_AGENT_VPP__SOCKET": "x"},
            "PEERING_AGENT_VPP__SOCKET: no setting vpp.socket",
        ),
        (
            "",
            {"PEERING_AGENT_MONITOR__INTERVAL": "fast"},
            "monitor.interval (from PEERING_AGENT_MONITOR__INTERVAL): Input should be a valid",
        ),
        ("", {"PEERING_AGENT_INTERFACES": "[1]"}, "interfaces (from PEERING_AGENT_INTERFACES)"),
        (
            "[controller]\nbackoff_min = 10.0\nbackoff_max = 5.0\n",
            {},
            "controller.backoff_min: must not exceed controller.backoff_max",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], expected: str) -> None:
    found = problems(tmp_path, text, env)
    assert any(p.startswith(expected) for p in found), found


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[controller\n"), {})


def test_reference_lists_every_setting_with_its_default() -> None:
    rows = {key: (default, meaning) for key, default, meaning in config_reference()}
    for section, field in AgentConfig.model_fields.items():
        sub = field.annotation
        keys = sub.model_fields if isinstance(sub, type) and hasattr(sub, "model_fields") else {}
        for key in keys or [None]:
            name = f"{section}.{key}" if key else section
            assert name in rows, name
            assert rows[name][1], f"{name} has no meaning documented"
    assert rows["controller.url"][0] == '"wss://manage.example.net"'
    assert rows["controller.allow_insecure"][0] == "false"
    assert rows["monitor.window"][0] == "30"
    table = config_reference_markdown()
    assert table.startswith("| key | default | meaning |")
    assert "| `controller.retry_quick_min` | `5.0` |" in table


def test_metrics_endpoint_must_stay_on_loopback() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"metrics": {"listen": "0.0.0.0:9465"}}, {})
    assert "metrics.listen" in e.value.problems[0] and "loopback" in e.value.problems[0]
    assert parse_config({"metrics": {"listen": "127.0.0.1:9465"}}, {}).metrics.listen
