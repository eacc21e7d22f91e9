"""Real VPP 26.06 started the lab's way and the device's way. Real-VPP tier.

The lab's real VPP logs to its own output, never through syslog. These machines run
no syslog daemon, and VPP opens syslog with LOG_CONS: glibc then writes every line to
the serial console, which blocks VPP for milliseconds per line. VPP logs two lines per
tunnel address it adds (its "Secondary MAC Addresses not supported" error), so each
benchmark run and lab test would stall on the console.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from agent.lab.realvpp import RealVpp, conf_from_rendered, has_vhost_net
from agent.vpp.client import VppClient
from agent.vpp.kinds.base import read_interfaces
from agent.vpp.kinds.lcp import lcp_op
from tests.real_vpp import require_real_vpp

# VPP 26.06's API errors: what linux-cp answers without the tap plugin, and what the
# tap driver answers when it cannot open /dev/vhost-net
FEATURE_DISABLED = -30
SYSCALL_ERROR_1 = -11


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


async def _pair_the_tunnel(socket: Path) -> int:
    """The agent's own linux-cp step for ipip0 (tunnel 7's Linux interface): its retval."""
    client = VppClient(str(socket), call_timeout=10)
    await client.start()
    try:
        await client.wait_connected(10)
        async with asyncio.timeout(10):  # VPP's startup-config runs after its API opens
            while not (tunnel := [i.sw_if_index for i in (await read_interfaces(client))
                                  .values() if i.name == "ipip0"]):
                await asyncio.sleep(0.05)
        args = dict(lcp_op(7, "pa-lcp7", True).args)
        args["sw_if_index"] = tunnel[0]
        reply = await client.call("lcp_itf_pair_add_del_v2", _check=False, **args)
        return int(reply.retval)
    finally:
        await client.close()


def test_the_rendered_conf_loads_the_tap_driver_that_linux_cp_needs() -> None:
    """In 26.06 linux-cp makes each Linux interface through tap_plugin.so, looked up by
    symbol. The device's startup.conf (linux_cp on) must load it: without it every
    tunnel's pair fails with -30, so every add-tunnel would be rolled back."""
    require_real_vpp()
    ns = f"lcp-{uuid.uuid4().hex[:6]}"
    run = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    vpp = RealVpp(ns, run, startup_cli=["create ipip tunnel src 10.0.0.1 dst 10.0.0.2"])
    vpp.conf_text = conf_from_rendered(vpp, linux_cp=True)
    try:
        vpp.start()
        retval = asyncio.run(_pair_the_tunnel(vpp.socket_path))
        log = vpp.log_tail(50)
    finally:
        vpp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run, ignore_errors=True)
    assert retval != FEATURE_DISABLED, log
    if has_vhost_net():  # any stock kernel: the pair is made
        assert retval == 0, log
    else:  # these machines: the tap driver ran, and only vhost-net was missing
        assert retval == SYSCALL_ERROR_1 and "/dev/vhost-net" in log, log
