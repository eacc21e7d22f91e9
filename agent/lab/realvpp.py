"""Real VPP 26.06 for the lab: find an installed build, run it inside a namespace.

VPP comes from `scripts/bootstrap.sh` (the release tarball of ../shared/vpp
unpacked into the user's cache) or from `VPP_PREFIX` (an installed VPP 26.06).
Each `RealVpp` has its own run directory, API/CLI/stats sockets and api-segment
prefix, so several can run at once; every memory size names 4K pages, so VPP
never reserves hugepages (it would write /proc/sys/vm/nr_hugepages itself);
`poll-sleep-usec` keeps an idle VPP at a few % of a core on shared machines;
`nosyslog` sends VPP's log lines to its output file: with no syslog daemon (as on
these machines) glibc writes each line to the serial console (VPP opens syslog with
LOG_CONS), which blocks VPP for milliseconds per line, two lines per tunnel address.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from agent.daemon.startup_conf import (
    LINUX_CP_PLUGINS,
    DpdkDevice,
    StartupParams,
    render_startup_conf,
)

VPP_VERSION = "26.06"
ENABLE_HINT = ("real VPP 26.06 is not installed: run scripts/bootstrap.sh with "
               "../shared/vpp beside the repository (or PEERING_SHARED=DIR), "
               "or set VPP_PREFIX to an installed VPP 26.06")

# what the agent needs, plus af_packet for the lab's veths
LAB_PLUGINS = ("af_packet_plugin.so", "ikev2_plugin.so", "ping_plugin.so",
               "mss_clamp_plugin.so")


def cache_prefix() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "peering-agent" / f"vpp-{VPP_VERSION}"


def find_vpp() -> Path | None:
    """The prefix of an installed VPP 26.06 (VPP_PREFIX first, then bootstrap's cache)."""
    env = os.environ.get("VPP_PREFIX")
    candidates = [Path(env)] if env else [cache_prefix()]
    for prefix in candidates:
        if (prefix / "bin" / "vpp").is_file() and os.access(prefix / "bin" / "vpp", os.X_OK):
            return prefix
    return None


def vpp_unavailable() -> str | None:
    """None when real VPP can run here; otherwise why not (one line for a skip reason)."""
    if os.geteuid() != 0:
        return "real VPP needs root (namespaces, af_packet)"
    prefix = find_vpp()
    if prefix is None:
        return ENABLE_HINT
    try:
        done = subprocess.run([str(prefix / "bin" / "vpp"), "--version"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{prefix}/bin/vpp does not run: {e}"
    if f"v{VPP_VERSION}" not in done.stdout:
        return f"{prefix}/bin/vpp is not VPP {VPP_VERSION}: {done.stdout.strip()[:80]}"
    return None


def has_vhost_net() -> bool:
    """linux-cp creates its Linux interfaces with VPP's tap driver, which needs vhost-net."""
    return os.path.exists("/dev/vhost-net")


def lab_startup_conf(run: Path, prefix_tag: str, *, linux_cp: bool,
                     startup_cli: Path | None = None, plugins: Sequence[str] = (),
                     main_heap: str = "512M") -> str:
    """A startup.conf for the lab: no hugepages, sockets under `run`, own api-segment;
    `plugins` (e.g. "acl_plugin.so") are enabled besides the lab's own."""
    every = [*LAB_PLUGINS, *(LINUX_CP_PLUGINS if linux_cp else ()), *plugins]
    enabled = "\n".join(f"  plugin {p} {{ enable }}" for p in every)
    cli = f"  startup-config {startup_cli}\n" if startup_cli else ""
    lcp = "linux-cp {\n  lcp-sync\n  lcp-auto-subint\n}\n" if linux_cp else ""
    return f"""\
unix {{
  nodaemon
  log {run}/vpp.log
  cli-listen {run}/cli.sock
{cli}  poll-sleep-usec 100
  nosyslog
}}
api-segment {{ prefix {prefix_tag} }}
socksvr {{ socket-name {run}/api.sock }}
statseg {{ socket-name {run}/stats.sock size 32m page-size 4k }}
memory {{ main-heap-size {main_heap} main-heap-page-size 4k }}
buffers {{ buffers-per-numa 16384 page-size 4k }}
plugins {{
  plugin default {{ disable }}
{enabled}
}}
{lcp}"""


class VppFailed(RuntimeError):
    """VPP did not start (its log tail is in the message)."""


class RealVpp:
    """One VPP process in network namespace `netns`, with sockets under `run`."""

    def __init__(self, netns: str, run: Path, *, prefix: Path | None = None,
                 linux_cp: bool = False, startup_cli: Sequence[str] = (),
                 conf_text: str | None = None, plugins: Sequence[str] = (),
                 main_heap: str = "512M") -> None:
        found = prefix or find_vpp()
        if found is None:
            raise VppFailed(ENABLE_HINT)
        self.prefix = found
        self.netns = netns
        self.run = run
        self.linux_cp = linux_cp
        self.startup_cli = list(startup_cli)
        self.tag = f"pa{uuid.uuid4().hex[:10]}"  # api-segment prefix: unique per VPP
        self.conf_text = conf_text
        self.plugins = tuple(plugins)
        self.main_heap = main_heap
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def socket_path(self) -> Path:
        return self.run / "api.sock"

    @property
    def cli_socket(self) -> Path:
        return self.run / "cli.sock"

    @property
    def conf_path(self) -> Path:
        return self.run / "startup.conf"

    def write_conf(self) -> Path:
        self.run.mkdir(parents=True, exist_ok=True)
        cli_path: Path | None = None
        if self.startup_cli:
            cli_path = self.run / "setup.cli"
            cli_path.write_text("\n".join(self.startup_cli) + "\n")
        text = self.conf_text if self.conf_text is not None else lab_startup_conf(
            self.run, self.tag, linux_cp=self.linux_cp, startup_cli=cli_path,
            plugins=self.plugins, main_heap=self.main_heap)
        self.conf_path.write_text(text)
        return self.conf_path

    def start(self, timeout: float = 20.0) -> None:
        """Start VPP and return once its API and CLI answer (or raise VppFailed)."""
        if self.running:
            raise VppFailed("VPP is already running")
        self.write_conf()
        for sock in ("api.sock", "cli.sock", "stats.sock"):
            (self.run / sock).unlink(missing_ok=True)
        out = open(self.run / "vpp.stdout", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, str(self.prefix / "bin" / "vpp"),
                 "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            out.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VppFailed(f"VPP exited with {self.proc.returncode}: {self.log_tail()}")
            if self.socket_path.exists() and self.cli_socket.exists():
                # the startup-config script runs after the CLI opens: wait for the
                # interfaces it creates
                try:
                    shown = self.ctl("show", "interface", timeout=5)
                    if all(f"host-{n}" in shown for n in self._created_interfaces()):
                        return
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise VppFailed(f"VPP did not open its API socket within {timeout:g} s: "
                                f"{self.log_tail()}")
            time.sleep(0.2)

    def _created_interfaces(self) -> list[str]:
        prefix = "create host-interface name "
        return [c[len(prefix):].split()[0] for c in self.startup_cli if c.startswith(prefix)]

    @property
    def pid(self) -> int:
        """VPP's process id (`ip netns exec` execs VPP: the same process)."""
        if self.proc is None:
            raise VppFailed("VPP is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns once the process is gone."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing cleaned up by VPP."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.proc = None

    def restart(self, timeout: float = 20.0) -> None:
        self.kill()
        self.start(timeout)

    def ctl(self, *args: str, timeout: float = 10.0) -> str:
        """vppctl on this VPP's CLI socket; its output."""
        done = subprocess.run(
            [str(self.prefix / "bin" / "vppctl"), "-s", str(self.cli_socket), *args],
            capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"vppctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def hw_mac(self, interface: str) -> str:
        """The Ethernet address VPP gave `interface` (af_packet: its own 02:fe:..., not
        the veth's)."""
        for line in self.ctl("show", "hardware-interfaces", interface).splitlines():
            if "Ethernet address" in line:
                return line.split()[-1]
        raise RuntimeError(f"VPP shows no Ethernet address for {interface}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of VPP's own log and of its stdout/stderr (where it reports aborts)."""
        parts = []
        for name in ("vpp.log", "vpp.stdout"):
            with contextlib.suppress(OSError):
                text = (self.run / name).read_text(errors="replace")
                parts.append(f"[{name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


def conf_from_rendered(vpp: RealVpp, *, linux_cp: bool) -> str:
    """`peering-agent render-startup-conf`'s output for this VPP's sockets, with only what
    the lab cannot have swapped: DPDK for the lab's af_packet veths (set up by the lab's
    startup-config), a unique api-segment prefix, an idle main loop that sleeps, no syslog
    (none runs here: glibc would write VPP's lines to the serial console)."""
    params = StartupParams(
        devices=(DpdkDevice("0000:00:03.0", "GigabitEthernet0/3/0"),),
        api_socket=vpp.socket_path, stats_socket=vpp.run / "stats.sock",
        cli_socket=vpp.cli_socket, log_file=vpp.run / "vpp.log", gid="root",
        main_core=None, page_size="4k", linux_cp=linux_cp, main_heap_size="512M")
    text = render_startup_conf(params)
    swapped, n = re.subn(r"\ndpdk \{\n.*?\n\}\n", "\n", text, flags=re.S)
    swaps = [("  plugin dpdk_plugin.so { enable }\n", "  plugin af_packet_plugin.so { enable }\n"),
             ("unix {\n", f"unix {{\n  startup-config {vpp.run / 'setup.cli'}\n"
                          "  poll-sleep-usec 100\n  nosyslog\n"),
             ("api-segment {\n", f"api-segment {{\n  prefix {vpp.tag}\n")]
    if n != 1 or any(swapped.count(old) != 1 for old, _ in swaps):
        raise VppFailed("the rendered startup.conf no longer has the sections the lab swaps")
    for old, new in swaps:
        swapped = swapped.replace(old, new)
    return swapped
