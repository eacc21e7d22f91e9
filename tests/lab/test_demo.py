"""The README's main command: real IKE with a strongSwan peer, live status, full cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.lab.vppsim.ike_strongswan import charon_available

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
    assert _lab_names() == before
