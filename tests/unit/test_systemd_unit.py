"""The shipped systemd unit: the settings the daemon relies on, and systemd's own check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "peering-agent.service"


def _settings() -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_service_contract() -> None:
    s = _settings()
    svc = s["Service"]
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["ExecStart"] == [
        "/usr/bin/peering-agent run --config /etc/peering-agent/agent.toml"
    ]
    assert svc["Restart"] == ["on-failure"]
    assert svc["RestartPreventExitStatus"] == ["2"]  # agent.main's config error exit
    watchdog = int(svc["WatchdogSec"][0])
    assert 10 <= watchdog <= int(svc["TimeoutStartSec"][0])
    assert svc["StateDirectory"] == ["peering-agent"]
    assert svc["RuntimeDirectory"] == ["peering-agent"]
    assert svc["StateDirectoryMode"] == ["0700"]  # PSKs live there


def test_ordering_after_vpp() -> None:
    unit = _settings()["Unit"]
    assert "vpp.service" in " ".join(unit["After"]).split()
    assert unit["Wants"] == ["vpp.service"]
    assert "Requires" not in unit and "BindsTo" not in unit  # a VPP restart must not stop us


def test_least_privilege() -> None:
    svc = _settings()["Service"]
    assert svc["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert svc["AmbientCapabilities"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert svc["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "UMask": "0077", "PrivateDevices": "yes",
    }.items():
        assert svc[key] == [value], key
    # the agent must keep the host network: linux-cp interfaces live there
    assert "PrivateNetwork" not in svc


def test_paths_match_agent_defaults() -> None:
    from agent.config import AgentConfig

    cfg = AgentConfig()
    assert cfg.state.dir == Path("/var/lib/") / _settings()["Service"]["StateDirectory"][0]
    assert cfg.admin.socket.parent == Path("/run/") / _settings()["Service"]["RuntimeDirectory"][0]


def _verify_copy(tmp_path: Path) -> Path:
    """`systemd-analyze verify` insists that ExecStart's binary exists: use /bin/true."""
    text = UNIT.read_text()
    exec_line = "ExecStart=/usr/bin/peering-agent run --config /etc/peering-agent/agent.toml"
    assert exec_line in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(exec_line, "ExecStart=/bin/true"))
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    copy = _verify_copy(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(copy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # verify also warns (without failing) about unknown keys and bad values
    problems = [ln for ln in r.stderr.splitlines() if UNIT.name in ln]
    assert problems == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package: systemd)")
def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    copy = _verify_copy(tmp_path)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=30",
                        str(copy)], capture_output=True, text=True, timeout=60)
    if "--offline" in r.stderr and "unrecognized" in r.stderr:
        pytest.skip("systemd-analyze too old for --offline (needs systemd >= 250)")
    # --threshold=30 makes it fail above exposure 3.0 ("OK" band)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "Overall exposure level" in r.stdout
