"""The README's main command: the demo comes up, shows the tunnel up, cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo builds network namespaces: needs root")
def test_demo_shows_a_live_tunnel_and_leaves_nothing_behind() -> None:
    prefix = f"pademotest{os.getpid()}"
    done = subprocess.run(
        [sys.executable, "-m", "agent.lab.demo", "--duration", "7", "--prefix", prefix],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("reply ok=1" in line for line in lines)
    assert any("sa=up" in line and "status=up" in line for line in lines), done.stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in netns
