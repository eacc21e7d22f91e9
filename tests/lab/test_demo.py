"""The README's main command: real IKE with a strongSwan peer, live status, full cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lab.vppsim.ike_strongswan import charon_available
from tests.real_vpp import require_real_vpp

ROOT = Path(__file__).resolve().parents[2]


def _lab_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("lab-")}


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo builds network namespaces: needs root")
@pytest.mark.skipif(charon_available() is not None, reason=str(charon_available()))
def test_demo_brings_the_tunnel_up_with_measured_delay_and_cleans_up() -> None:
    before = _lab_names()
    done = subprocess.run(
        [sys.executable, "-m", "agent.lab.demo", "--duration", "8", "--delay-ms", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("reply ok=1" in line for line in lines), done.stdout
    up = [line for line in lines if "sa=up" in line and "status=up" in line]
    assert up, done.stdout
    rtt = float(up[-1].split("rtt=")[1].split()[0])
    assert 10.0 <= rtt <= 15.0, up[-1]  # the injected 10 ms, through real ESP
    assert _demo_labs_gone(done.stdout, before)


def _demo_labs_gone(stdout: str, before: set[str]) -> bool:
    """The demo's own namespaces (it prints its device's) are gone; other labs running
    on the machine at the same time may come and go."""
    tag = stdout.split("lab: device lab-")[1].split("-dev")[0]
    return not {n for n in _lab_names() - before if n.startswith(f"lab-{tag}-")}


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo builds network namespaces: needs root")
@pytest.mark.skipif(charon_available() is not None, reason=str(charon_available()))
def test_demo_on_real_vpp_shows_the_tunnel_up_through_vpps_esp() -> None:
    require_real_vpp()
    before = _lab_names()
    done = subprocess.run(
        [sys.executable, "-m", "agent.lab.demo", "--vpp", "real", "--duration", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "data plane: real VPP 26.06" in done.stdout, done.stdout
    up = [line for line in done.stdout.splitlines() if "sa=up" in line and "status=up" in line]
    assert up, done.stdout
    assert " drop=0.0 %" in up[-1], up[-1]
    assert _demo_labs_gone(done.stdout, before)
