"""A private FRR (zebra, ospfd, bgpd) in one network namespace, for tests and the lab.

Never the host's frr service: every daemon gets the vty socket directory, pid
files and zserv socket of a temporary directory, no configuration file and no
TCP vty, so several instances (device and peer side, parallel labs) coexist.
vtysh reaches an instance from any namespace through `--vty_socket <dir>` (the
vty sockets are Unix sockets in that directory). Stopping ends the daemons this
object started, by their process ids, and removes the directory.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

FRR_LIB = Path("/usr/lib/frr")
DAEMONS = ("zebra", "ospfd", "bgpd")


class FrrUnavailable(RuntimeError):
    """FRR is not installed here (scripts/bootstrap.sh installs Debian's frr)."""


def missing() -> str | None:
    """Why a private FRR cannot run here, or None."""
    for d in DAEMONS:
        if not (FRR_LIB / d).exists():
            return f"{FRR_LIB / d} missing: install Debian's frr (scripts/bootstrap.sh)"
    if shutil.which("vtysh") is None:
        return "vtysh missing: install Debian's frr (scripts/bootstrap.sh)"
    try:
        pwd.getpwnam("frr")
    except KeyError:
        return "no frr user: install Debian's frr (scripts/bootstrap.sh)"
    return None


class Frr:
    """zebra + ospfd + bgpd in namespace `netns` (None: the caller's)."""

    def __init__(self, netns: str | None, name: str = "frr") -> None:
        self.netns = netns
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"lab-{name}-"))
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def vty_socket(self) -> str:
        return str(self.dir)

    def start(self, timeout: float = 10.0) -> Frr:
        reason = missing()
        if reason:
            raise FrrUnavailable(reason)
        os.chown(self.dir, pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        for daemon in DAEMONS:
            log = open(self.dir / f"{daemon}.out", "wb")  # noqa: SIM115 - the daemon holds it
            with log:
                self._procs.append(subprocess.Popen(
                    [*prefix, str(FRR_LIB / daemon), "--vty_socket", str(self.dir),
                     "-i", str(self.dir / f"{daemon}.pid"), "-z", str(self.dir / "zserv.api"),
                     "-f", "/dev/null", "-P", "0"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
            # ospfd and bgpd connect to zebra's zserv socket: let it exist first
            vty = self.dir / f"{daemon}.vty"
            self._wait(vty.exists, timeout, daemon)
        self._wait(lambda: self.vtysh("show version").returncode == 0, timeout, "vtysh")
        return self

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                outs = " ".join((self.dir / f"{d}.out").read_text(errors="replace")[-300:]
                                for d in DAEMONS if (self.dir / f"{d}.out").exists())
                self.stop()
                raise FrrUnavailable(f"{self.name}: {what} did not start: {outs.strip()}")
            time.sleep(0.05)

    def vtysh(self, *commands: str) -> subprocess.CompletedProcess[str]:
        argv = ["vtysh", "--vty_socket", str(self.dir)]
        for c in commands:
            argv += ["-c", c]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def configure(self, *lines: str) -> None:
        """Configure like an operator at the vtysh prompt (`configure terminal` first)."""
        r = self.vtysh("configure terminal", *lines)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: vtysh refused: {r.stdout}{r.stderr}")

    def running_config(self) -> str:
        r = self.vtysh("show running-config")
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: show running-config: {r.stdout}{r.stderr}")
        return r.stdout

    def _terminate(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again with no configuration, as an FRR restart on a device."""
        self._terminate()
        for f in self.dir.iterdir():
            f.unlink()
        self.start(timeout)

    def __enter__(self) -> Frr:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
