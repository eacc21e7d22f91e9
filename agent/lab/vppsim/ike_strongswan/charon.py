"""One charon process with private files, and what it needs installed.

Each lab charon has its own strongswan.conf, VICI socket, pid file and logs, so
several labs can run at once; every plugin it loads is named with the Debian
package that ships it (a lab test checks both facts).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


CHARON = Path("/usr/lib/ipsec/charon")
PLUGIN_DIR = Path("/usr/lib/ipsec/plugins")
# Every plugin the lab's charons load, and the Debian (bookworm) package that ships it;
# scripts/bootstrap.sh installs each of these packages (a lab test checks both facts).
# kdf: key derivation in 5.9.8; openssl: the ciphers, hashes and DH groups;
# kernel-libipsec: ESP in user space (no kernel ESP here).
PLUGIN_PACKAGES: dict[str, str] = {
    "random": "libstrongswan",
    "nonce": "libstrongswan",
    "openssl": "libstrongswan-standard-plugins",
    "hmac": "libstrongswan",
    "kdf": "libstrongswan",
    "pem": "libstrongswan",
    "pkcs1": "libstrongswan",
    "pubkey": "libstrongswan",
    "x509": "libstrongswan",
    "kernel-libipsec": "libcharon-extra-plugins",
    "kernel-netlink": "libstrongswan",
    "socket-default": "strongswan-libcharon",
    "vici": "strongswan-swanctl",
}
PLUGINS = " ".join(PLUGIN_PACKAGES)
_LOAD_RE = re.compile(r"^\s*load\s*=\s*(.*?)\s*$", re.MULTILINE)


def plugin_path(name: str) -> Path:
    return PLUGIN_DIR / f"libstrongswan-{name}.so"


def load_list(conf: str) -> list[str]:
    """The plugins a strongswan.conf text tells charon to load."""
    return [name for m in _LOAD_RE.finditer(conf) for name in m.group(1).split()]


def missing_plugin(plugins: Iterable[str]) -> str | None:
    """One line naming the first plugin that is not installed and the package to install."""
    for name in plugins:
        if not plugin_path(name).exists():
            package = PLUGIN_PACKAGES.get(name)
            fix = (f"install the Debian package {package} (scripts/bootstrap.sh does)"
                   if package else "no Debian package known to ship it")
            return f"strongSwan plugin '{name}' is not installed ({plugin_path(name)}): {fix}"
    return None


class CharonError(Exception):
    """charon could not be started or did not answer over VICI."""


def strongswan_conf(vici_socket: Path, log_file: Path, table: int,
                    retransmit_timeout: float = 0.5, retransmit_tries: int = 2,
                    log_level: int = 1) -> str:
    """A private strongswan.conf: own VICI socket and log; routes to a dead table."""
    return f"""\
charon {{
  load = {PLUGINS}
  install_routes = no
  install_virtual_ip = no
  # kernel-libipsec installs routes for the remote selectors whatever
  # install_routes says: send them to a table whose rule only matches a mark
  # that nothing sets, so they never steer a packet.
  routing_table = {table}
  routing_table_prio = {table}
  retransmit_timeout = {retransmit_timeout}
  retransmit_base = 1.4
  retransmit_tries = {retransmit_tries}
  retransmit_jitter = 0
  half_open_timeout = 5
  plugins {{
    vici {{ socket = unix://{vici_socket} }}
    kernel-netlink {{ fwmark = {table:#x} }}
  }}
  syslog {{ identifier = charon-lab }}
  filelog {{
    lab {{
      path = {log_file}
      time_format = %T
      default = {log_level}
      ike = 1
      cfg = 1
      knl = 1
      flush_line = yes
    }}
  }}
}}
"""


def vici_session(path: Path, timeout: float = 5.0) -> Any:
    """A VICI session on charon's socket (the vici package is blocking)."""
    import vici  # type: ignore[import-untyped]  # the lab's dependency, imported where used

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return vici.Session(sock)


class Charon:
    """One charon process with private files, optionally in a named network namespace.

    charon insists on /var/run/charon.pid, so it runs in its own mount namespace
    with a private /run; its VICI socket lives in `workdir`.
    """

    def __init__(self, workdir: Path, netns: str | None = None, *, table: int = 4242,
                 conf: str | None = None, label: str = "charon") -> None:
        self.workdir = workdir
        self.netns = netns
        self.label = label
        self.vici_path = workdir / "charon.vici"
        self.log_path = workdir / "charon.log"
        self.conf_path = workdir / "strongswan.conf"
        self.run_dir = workdir / "run"
        self.table = table
        self._conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start charon and wait until its VICI socket answers."""
        if not CHARON.exists():
            raise CharonError(f"{CHARON} is missing (Debian package strongswan-charon)")
        conf = self._conf or strongswan_conf(self.vici_path, self.log_path, self.table)
        # A missing plugin makes charon dump a page of errors and exit 66: say it in one line.
        problem = missing_plugin(load_list(conf))
        if problem is not None:
            raise CharonError(f"{self.label}: {problem}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.conf_path.write_text(conf)
        with contextlib.suppress(FileNotFoundError):
            self.vici_path.unlink()
        (self.run_dir / "charon.pid").unlink(missing_ok=True)
        cmd = ["unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", 'mount --bind "$0" /run && exec "$1"', str(self.run_dir), str(CHARON)]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "STRONGSWAN_CONF": str(self.conf_path)}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CharonError(f"{self.label} exited with {self.proc.returncode}: "
                                  f"{self.log_tail()}")
            if self.vici_path.exists():
                try:
                    session = vici_session(self.vici_path, 1.0)
                    session.version()
                    session.transport.close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise CharonError(f"{self.label}: VICI did not answer within {timeout:g} s")
            time.sleep(0.02)
        log.info("charon started", label=self.label, netns=self.netns, pid=self.proc.pid)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL; charon removes its TUN device when it exits."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def kill(self) -> None:
        """Die without a goodbye (no DELETE to the peer): a crash or power loss."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def session(self) -> Any:
        return vici_session(self.vici_path)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def charon_available() -> str | None:
    """Why a strongSwan lab cannot run here, or None."""
    if not CHARON.exists():
        return f"{CHARON} missing (install strongswan-charon)"
    problem = missing_plugin(PLUGIN_PACKAGES)
    if problem is not None:
        return problem
    if shutil.which("unshare") is None:
        return "unshare (util-linux) missing"
    try:
        import vici  # noqa: F401
    except ImportError:
        return "the vici Python package is not installed"
    return None
