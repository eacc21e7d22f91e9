"""The shipped systemd unit: the settings the daemon relies on, and systemd's own check."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.lab.frr import Frr
from agent.lab.frr import missing as frr_missing

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


def _syscall_set(names: list[str]) -> set[str]:
    """System calls of `names` (groups like @system-service expanded, as systemd does)."""
    out: set[str] = set()
    for name in names:
        if not name.startswith("@"):
            out.add(name)
            continue
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
        members = [ln.strip() for ln in listing.splitlines()[1:]
                   if ln.strip() and not ln.strip().startswith("#")]
        out |= _syscall_set(members)
    return out


def _allowed_syscalls() -> set[str]:
    """The unit's SystemCallFilter= lines in systemd's terms: the first (an allow list)
    sets the default to refuse; each later line removes (~) or adds its calls."""
    lines = _settings()["Service"]["SystemCallFilter"]
    assert not lines[0].startswith("~")
    allowed = _syscall_set(lines[0].split())
    for line in lines[1:]:
        if line.startswith("~"):
            allowed -= _syscall_set(line[1:].split())
        else:
            allowed |= _syscall_set(line.split())
    return allowed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or shutil.which("ping") is None
                    or shutil.which("setpriv") is None or os.geteuid() != 0
                    or ctypes.util.find_library("seccomp") is None,
                    reason="needs root, systemd-analyze, setpriv, ping and libseccomp")
def test_the_command_tabs_ping_runs_under_the_units_privileges(tmp_path: Path) -> None:
    """ping as the Command tab runs it: root with the unit's two capabilities, no new
    privileges, the unit's system call filter; to loopback only."""
    allowed = tmp_path / "allowed"
    allowed.write_text("\n".join(sorted(_allowed_syscalls())))
    done = subprocess.run(_with_units_privileges(
        sys.executable, str(Path(__file__).with_name("seccomp_exec.py")), str(allowed),
        "--", "ping", "-c", "1", "-W", "1", "127.0.0.1"),
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 received" in done.stdout


def _with_units_privileges(*argv: str, groups: bool = True) -> list[str]:
    """`argv` as the unit runs the agent's children: root with the two capabilities,
    no new privileges, and (unless `groups` is False) its supplementary groups."""
    svc = _settings()["Service"]
    caps = ",".join("+" + c.removeprefix("CAP_").lower()
                    for c in svc["AmbientCapabilities"][0].split())
    names = " ".join(svc.get("SupplementaryGroups", [])).split() if groups else []
    group_args = [f"--groups={','.join(names)}"] if names else ["--clear-groups"]
    return ["setpriv", f"--bounding-set=-all,{caps}", f"--inh-caps=-all,{caps}",
            f"--ambient-caps=-all,{caps}", *group_args, "--no-new-privs", "--", *argv]


@pytest.mark.skipif(frr_missing() is not None or shutil.which("setpriv") is None
                    or os.geteuid() != 0, reason="needs root, setpriv and FRR")
def test_vtysh_reaches_frr_with_the_units_privileges() -> None:
    """FRR's vty sockets are frr:frrvty 0770 and vtysh.conf is frr's: root without
    CAP_DAC_OVERRIDE gets through only with the unit's groups, and then cleanly (a
    warning on vtysh's output would corrupt the JSON the agent reads)."""
    ns = f"pa-unit-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    frr = Frr(ns, "unit")
    try:
        frr.start()
        # as Debian's frr package leaves /run/frr (0755): the lab's is private (0700)
        os.chmod(frr.vty_socket, 0o755)
        show = ("vtysh", "--vty_socket", frr.vty_socket, "-c", "show version")
        done = subprocess.run(_with_units_privileges(*show), capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and "FRRouting" in done.stdout, done
        assert done.stderr == "", done.stderr
        without = subprocess.run(_with_units_privileges(*show, groups=False),
                                 capture_output=True, text=True, timeout=30)
        assert without.returncode != 0  # what the unit's groups are for
    finally:
        frr.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
