"""A throw-away real VPP 26.06 for the benchmarks (self-contained: no lab code).

Unpacks ../shared/vpp/vpp-26.06-x86_64.tar.gz once into a cache directory
outside the repository and starts VPP in a network namespace of its own, on 4K
pages, with a unique api-segment prefix, with the IKEv2 and MSS-clamp plugins and
without linux-cp (it needs /dev/vhost-net, absent on the development machines).
The WAN stand-in is a loopback interface `loop0` with 192.168.1.10/24 that
connects to nothing: IKE initiations toward the benchmark's peers leave no
namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# ../shared next to the checkout; BENCH_VPP_TARBALL points elsewhere (e.g. from a worktree)
TARBALL = Path(os.environ.get("BENCH_VPP_TARBALL",
                              ROOT.parent / "shared" / "vpp" / "vpp-26.06-x86_64.tar.gz"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peering-agent-bench"
WAN_NAME = "loop0"
WAN_ADDR = "192.168.1.10/24"


def unavailable() -> str | None:
    """Why real VPP cannot run here, or None."""
    if not TARBALL.is_file():
        return f"{TARBALL} absent: the real-VPP tier needs ../shared/vpp"
    if os.geteuid() != 0:
        return "real VPP needs root (network namespace, VPP's own memory setup)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) missing"
    return None


def install() -> Path:
    """The unpacked VPP tree (unpacked once, reused by later runs)."""
    dest = CACHE / "vpp-26.06"
    marker = dest / ".unpacked"
    if not marker.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(TARBALL) as tar:
            tar.extractall(CACHE, filter="tar")
        marker.write_text(str(TARBALL.stat().st_mtime))
    return dest


def startup_conf(run: Path, prefix: str) -> str:
    return f"""unix {{
  nodaemon
  log {run}/vpp.log
  cli-listen {run}/cli.sock
  startup-config {run}/setup.cli
  poll-sleep-usec 100
}}
api-segment {{ prefix {prefix} }}
socksvr {{ socket-name {run}/api.sock }}
statseg {{ socket-name {run}/stats.sock size 32m page-size 4k }}
memory {{ main-heap-size 1G main-heap-page-size 4k }}
buffers {{ buffers-per-numa 16384 page-size 4k }}
plugins {{
  plugin default {{ disable }}
  plugin ikev2_plugin.so {{ enable }}
  plugin mss_clamp_plugin.so {{ enable }}
  plugin ping_plugin.so {{ enable }}
}}
"""


@contextlib.contextmanager
def real_vpp(workdir: Path, tag: str) -> Iterator[tuple[Path, int]]:
    """A fresh VPP; yields its API socket path and pid, and stops it (and its namespace)."""
    vpp_dir = install()
    run = workdir / f"vpp-{tag}"
    run.mkdir(parents=True, exist_ok=True)
    prefix = f"pab{os.getpid()}{tag}"
    netns = f"pab-{os.getpid()}-{tag}"[:15]
    (run / "setup.cli").write_text(
        f"create loopback interface\nset interface state {WAN_NAME} up\n"
        f"set interface ip address {WAN_NAME} {WAN_ADDR}\n")
    (run / "startup.conf").write_text(startup_conf(run, prefix))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    log = (run / "vpp.stdout").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, str(vpp_dir / "bin" / "vpp"), "-c",
         str(run / "startup.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        sock = run / "api.sock"
        deadline = time.monotonic() + 30
        while not _interface_ready(vpp_dir, run):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"VPP did not start; see {run}/vpp.stdout")
            time.sleep(0.1)
        yield sock, proc.pid  # `ip netns exec` execs VPP: same process
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _interface_ready(vpp_dir: Path, run: Path) -> bool:
    """API socket up and the startup CLI applied (loop0 has its address)."""
    if not (run / "api.sock").exists() or not (run / "cli.sock").exists():
        return False
    out = subprocess.run(
        [str(vpp_dir / "bin" / "vppctl"), "-s", str(run / "cli.sock"), "show", "int", "addr"],
        capture_output=True, text=True, timeout=5, check=False)
    return WAN_ADDR in out.stdout
