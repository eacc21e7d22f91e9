"""The lab's real VPP logs to its own output, never through syslog. Real-VPP tier.

These machines run no syslog daemon, and VPP opens syslog with LOG_CONS: glibc then
writes every line to the serial console, which blocks VPP for milliseconds per line.
VPP logs two lines per tunnel address it adds (its "Secondary MAC Addresses not
supported" error), so each benchmark run and lab test would stall on the console.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from agent.lab.realvpp import RealVpp
from tests.real_vpp import require_real_vpp


def test_the_lab_vpp_writes_its_log_lines_to_its_output_not_to_syslog() -> None:
    require_real_vpp()
    ns = f"log-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vl-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, run)
    try:
        vpp.start()
        vpp.ctl("create", "ipip", "tunnel", "src", "10.0.0.1", "dst", "10.0.0.2")
        vpp.ctl("set", "interface", "state", "ipip0", "up")
        vpp.ctl("set", "interface", "ip", "address", "ipip0", "10.9.0.0/31")
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
    out = (run / "vpp.stdout").read_text(errors="replace")
    shutil.rmtree(run, ignore_errors=True)
    lines = [ln for ln in out.splitlines() if "Secondary MAC Addresses not supported" in ln]
    assert lines, out[-2000:]
    # syslog's copy on stderr (LOG_PERROR) reads "vpp[PID]: interface: ..."; VPP's own
    # (nosyslog) reads "interface   [error ]: ..."
    assert all("[error ]" in ln and "vpp[" not in ln for ln in lines), lines
