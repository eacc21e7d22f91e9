"""vppsim's strongSwan IKE backend: the agent's IKEv2 profiles negotiated for real.

`StrongswanIke` owns one charon in the namespace vppsim runs in (private
strongswan.conf, VICI socket, pid file and logs: several labs can run at once)
and drives it over VICI:

* a profile becomes a connection with the same proposal, IDs, PSK, selectors,
  child lifetime, addresses and UDP encapsulation; it is loaded when the agent
  initiates and unloaded when the profile goes;
* `ikev2_initiate_sa_init` -> VICI `initiate` in a worker thread (the API reply
  does not wait); the log lines charon streams back name a failure, which is
  mapped to VPP's SA states (AUTH_FAILED, NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE);
* `list-sas`, polled, is the truth for the SA dumps: real SPIs, states and
  transforms; an SA charon no longer has (peer deleted it, DPD) leaves vppsim too;
* delete/rekey by SPI -> VICI `terminate` / `rekey`.

Data plane. ESP runs in charon's user space (kernel-libipsec; this kernel has no
ESP), which reads and writes cleartext packets on its TUN device `ipsec0`. The
backend plays VPP's part between that engine and Linux: for every linux-cp pair
it creates the host TUN (`peer7`) with the tunnel's addresses and mirrors the
routes the agent programs through the tunnel, then shuttles packets: what Linux
sends into `peer7` goes out through `ipsec0` (charon encrypts it), what charon
decrypts arrives on `ipsec0` and is handed to the `peer<N>` TUN whose address it
is for. The kernel never routes through `ipsec0`: charon's own routes for the
remote selectors go to a private table that no rule consults (with 0.0.0.0/0
selectors they would otherwise capture charon's own IKE/ESP packets and loop),
and packets arriving on `ipsec0` are dropped by nftables after vppsim's packet
socket took its copy. So only the routes the agent programs steer traffic into
the tunnel, and the IKE endpoints stay reachable outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from agent.lab.vppsim.state import (
    AUTH_FAILED,
    AUTH_FAILED_LOG,
    AUTHENTICATED,
    NO_PROPOSAL_CHOSEN,
    SA_INIT,
    TS_UNACCEPTABLE,
    ChildSa,
    IkeSa,
    Profile,
    SimState,
)
from agent.peers import strongswan

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

# charon's log lines that name why a negotiation failed, most specific first
FAILURES: tuple[tuple[str, int], ...] = (
    ("NO_PROPOSAL_CHOSEN", NO_PROPOSAL_CHOSEN),
    ("no acceptable proposal", NO_PROPOSAL_CHOSEN),
    ("TS_UNACCEPTABLE", TS_UNACCEPTABLE),
    ("no acceptable traffic selectors", TS_UNACCEPTABLE),
    ("AUTHENTICATION_FAILED", AUTH_FAILED),
    ("authentication of", AUTH_FAILED),  # "... failed" when the peer's AUTH is wrong
    ("no shared key found", AUTH_FAILED),
    ("constraint check failed", AUTH_FAILED),  # the peer's ID is not the one configured
    ("no matching peer config", AUTH_FAILED),
)


def classify_failure(lines: list[str]) -> int | None:
    """VPP's SA state for a failed negotiation, from charon's log lines (None: unknown)."""
    for needle, state in FAILURES:
        for line in lines:
            if needle in line and (needle != "authentication of" or "failed" in line):
                return state
    return None


class CharonError(Exception):
    """charon could not be started or did not answer over VICI."""


def _proposal(t: dict[str, int], *, ike: bool) -> str:
    """The profile's transforms as VPP holds them, every one spelt out (the PRF too)."""
    encr = t.get("crypto_alg", 0)
    parts = [strongswan.encr_keyword(encr, t.get("crypto_key_size", 0) or 256)]
    integ = t.get("integ_alg", 0)
    if integ and encr not in strongswan.AEAD_ENCR:
        parts.append(strongswan.integ_keyword(integ))
    if ike:
        parts.append(strongswan.prf_keyword(t.get("prf_alg") or 5))  # VPP's default PRF
        parts.append(strongswan.dh_keyword(t.get("dh_group", 0)))
    elif t.get("dh_group"):
        parts.append(strongswan.dh_keyword(t["dh_group"]))
    return "-".join(parts)


def _identity(ident: tuple[int, bytes]) -> str:
    kind, data = ident
    if kind == 1:
        text = str(ipaddress.IPv4Address(data))
    elif kind == strongswan.IP6_ADDR:
        text = str(ipaddress.IPv6Address(data))
    else:
        text = data.decode("ascii", "replace")
    return strongswan.identity(kind, text)


def _ts(ts: dict[str, Any] | None) -> list[str]:
    if ts is None:
        return ["dynamic"]
    nets = ipaddress.summarize_address_range(ts["start_addr"], ts["end_addr"])
    proto = ts["protocol_id"]
    ports = ""
    if (ts["start_port"], ts["end_port"]) != (0, 65535):
        ports = (str(ts["start_port"]) if ts["start_port"] == ts["end_port"]
                 else f"{ts['start_port']}-{ts['end_port']}")
    suffix = f"[{proto or '%any'}/{ports}]" if proto or ports else ""
    return [f"{n}{suffix}" for n in nets]


def connection_for(p: Profile, local_addr: str, dpd_delay: float = 10.0) -> dict[str, Any]:
    """The VICI `load-conn` body that realizes VPP profile `p` (one IKE/ESP proposal).

    dpd_delay plays VPP's global liveness period (`ikev2_profile_set_liveness`).
    """
    assert p.ike is not None and p.esp is not None and p.responder_addr is not None
    # VPP 26.06's meaning: the child SA is rekeyed at lifetime + random(0..jitter) s;
    # handover is the interval between rekey retries, so the SA may live a few retries
    # beyond that before it is gone
    lifetime = p.lifetime or 3600
    handover = p.handover or max(lifetime // 20, 1)
    child: dict[str, Any] = {
        "mode": "tunnel",
        "local_ts": _ts(p.loc_ts),
        "remote_ts": _ts(p.rem_ts),
        "esp_proposals": [_proposal(p.esp, ike=False)],
        "life_time": str(lifetime + p.lifetime_jitter + 3 * handover),
        "rekey_time": str(lifetime),
        "rand_time": str(p.lifetime_jitter),
        "start_action": "none",
        # VPP 26.06 re-initiates the IKE SA by itself when DPD finds the peer gone
        "dpd_action": "restart",
        "close_action": "none",
    }
    return {
        "version": "2",
        "local_addrs": [local_addr],
        "remote_addrs": [str(p.responder_addr)],
        "proposals": [_proposal(p.ike, ike=True)],
        "encap": "yes" if p.udp_encap else "no",
        "mobike": "no",
        "keyingtries": "1",
        "unique": "replace",
        "dpd_delay": f"{max(1, round(dpd_delay))}s",
        "local": {"auth": "psk", "id": _identity(p.loc_id)},
        "remote": {"auth": "psk", "id": _identity(p.rem_id)},
        "children": {p.name: child},
    }


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


# --- the data plane between linux-cp TUNs and charon's ipsec0 ----------------------
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_ETH_P_IP = 0x0800
_PACKET_OUTGOING = 4


def open_tun(name: str) -> int:
    """Create TUN `name` (no packet info header); the fd keeps it alive."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass
class _HostTun:
    name: str
    fd: int
    addresses: set[str] = field(default_factory=set)  # "a.b.c.d/len"
    routes: set[str] = field(default_factory=set)  # "prefix/len"


class DataPlane:
    """VPP's part between linux-cp TUNs and the ESP engine (charon's ipsec0).

    Runs on the event loop of the namespace vppsim runs in.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, esp_if: str = "ipsec0",
                 nft_table: str = "vppsim_lab") -> None:
        self.loop = loop
        self.esp_if = esp_if
        self.nft_table = nft_table
        self.tuns: dict[int, _HostTun] = {}  # VPP tunnel sw_if_index -> host TUN
        self._pkt: socket.socket | None = None
        self._ipr: Any = None
        self.counters = {"to_esp": 0, "from_esp": 0, "no_owner": 0}

    async def start(self) -> None:
        from pyroute2 import AsyncIPRoute

        self._ipr = AsyncIPRoute()
        nft = (f"table inet {self.nft_table} {{\n chain pre {{\n"
               "  type filter hook prerouting priority -300; policy accept;\n"
               f"  iifname \"{self.esp_if}\" drop\n }}\n}}\n")
        proc = await asyncio.create_subprocess_exec(
            "nft", "-f", "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate(nft.encode())
        if proc.returncode != 0:
            raise RuntimeError(f"nft: {err.decode().strip()}")

    def _ensure_packet_socket(self) -> bool:
        if self._pkt is not None:
            return True
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
            s.bind((self.esp_if, _ETH_P_IP))
        except OSError:
            return False  # no ipsec0 yet (charon starting or restarting)
        s.setblocking(False)
        self._pkt = s
        self.loop.add_reader(s.fileno(), self._from_esp)
        return True

    def _drop_packet_socket(self) -> None:
        if self._pkt is not None:
            self.loop.remove_reader(self._pkt.fileno())
            self._pkt.close()
            self._pkt = None

    def _from_esp(self) -> None:
        assert self._pkt is not None
        for _ in range(64):
            try:
                data, addr = self._pkt.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:  # ipsec0 vanished with its charon
                self._drop_packet_socket()
                return
            if addr[2] == _PACKET_OUTGOING or len(data) < 20:
                continue
            dst = socket.inet_ntoa(data[16:20])
            if data[16] >> 4 == 0xE:
                # multicast (OSPF's 224.0.0.5/6): linux-cp hands it to the host side of
                # the tunnel it came through; one ESP engine serves all tunnels here, so
                # that tunnel is the one whose /31 holds the sender
                src = ipaddress.IPv4Address(data[12:16])
                owner = next((t for t in self.tuns.values()
                              if any(src in ipaddress.IPv4Interface(a).network
                                     for a in t.addresses)), None)
            else:
                owner = next((t for t in self.tuns.values()
                              if any(a.split("/")[0] == dst for a in t.addresses)), None)
            if owner is None:
                self.counters["no_owner"] += 1
                continue
            with contextlib.suppress(OSError):
                os.write(owner.fd, data)
                self.counters["from_esp"] += 1

    def _to_esp(self, tun: _HostTun) -> None:
        for _ in range(64):
            try:
                data = os.read(tun.fd, 65535)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data or data[0] >> 4 != 4:
                continue
            if not self._ensure_packet_socket():
                continue  # no ESP engine: VPP drops too
            assert self._pkt is not None
            try:
                self._pkt.sendto(data, (self.esp_if, _ETH_P_IP))
                self.counters["to_esp"] += 1
            except OSError:
                self._drop_packet_socket()

    async def sync(self, state: SimState) -> None:
        """Make Linux match vppsim: TUNs for lcp pairs, their addresses and routes.

        A host TUN stays up whatever the tunnel's state: without an SA charon drops
        what it is given, as VPP drops what it cannot encrypt.
        """
        self._ensure_packet_socket()
        wanted: dict[int, tuple[str, set[str], set[str]]] = {}
        for tun_idx, pair in state.lcp.items():
            itf = state.interfaces.get(tun_idx)
            if itf is None:
                continue
            addrs = {str(a) for a in state.addresses.get(tun_idx, []) if a.version == 4}
            routes = {str(r.prefix) for r in state.routes.values()
                      if r.prefix.version == 4 and r.table_id == 0
                      and any(p.get("sw_if_index") == tun_idx for p in r.paths)}
            wanted[tun_idx] = (pair["host_if_name"], addrs, routes)
        for tun_idx in [i for i in self.tuns if i not in wanted
                        or self.tuns[i].name != wanted[i][0]]:
            self._remove(tun_idx)
        for tun_idx, (name, addrs, routes) in wanted.items():
            tun = self.tuns.get(tun_idx)
            if tun is None:
                tun = await self._create(tun_idx, name)
            await self._apply(tun, addrs, routes)

    async def _create(self, tun_idx: int, name: str) -> _HostTun:
        fd = open_tun(name)
        tun = _HostTun(name, fd)
        self.tuns[tun_idx] = tun
        self.loop.add_reader(fd, self._to_esp, tun)
        idx = (await self._ipr.link_lookup(ifname=name))[0]
        await self._ipr.link("set", index=idx, state="up")
        # replies from the far end arrive here with foreign sources: no rp_filter
        with contextlib.suppress(OSError):
            await asyncio.to_thread(
                Path(f"/proc/sys/net/ipv4/conf/{name}/rp_filter").write_text, "0")
        log.info("host tun created", name=name, sw_if_index=tun_idx)
        return tun

    async def _apply(self, tun: _HostTun, addrs: set[str], routes: set[str]) -> None:
        if tun not in self.tuns.values() or (tun.addresses, tun.routes) == (addrs, routes):
            return
        idx = (await self._ipr.link_lookup(ifname=tun.name))[0]
        for a in tun.addresses - addrs:
            ip, plen = a.split("/")
            with contextlib.suppress(Exception):
                await self._ipr.addr("del", index=idx, address=ip, prefixlen=int(plen))
        for a in addrs - tun.addresses:
            ip, plen = a.split("/")
            await self._ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
        tun.addresses = set(addrs)
        for r in tun.routes - routes:
            with contextlib.suppress(Exception):
                await self._ipr.route("del", dst=r, oif=idx)
        for r in routes - tun.routes:
            with contextlib.suppress(Exception):  # e.g. the connected /31 itself
                await self._ipr.route("replace", dst=r, oif=idx)
        tun.routes = set(routes)

    def _remove(self, tun_idx: int) -> None:
        tun = self.tuns.pop(tun_idx)
        self.loop.remove_reader(tun.fd)
        os.close(tun.fd)  # the TUN and its addresses and routes go with the fd
        log.info("host tun deleted", name=tun.name, sw_if_index=tun_idx)

    def close(self) -> None:
        for tun_idx in list(self.tuns):
            self._remove(tun_idx)
        self._drop_packet_socket()
        subprocess.run(["nft", "delete", "table", "inet", self.nft_table], capture_output=True)
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


# --- the backend --------------------------------------------------------------------
@dataclass
class _Link:
    """A vppsim SA and the charon IKE SA that realizes it."""

    uniqueid: str | None = None


class StrongswanIke:
    """IkeBackend whose negotiations a real charon performs (see the module docstring).

    workdir: private directory for charon's files (short path: it holds a socket).
    netns: the namespace charon runs in; None = the current process's one, which
    must be the namespace vppsim runs in (its WAN addresses are charon's).
    dpd_delay: liveness check period; None follows VPP's global liveness setting.
    """

    def __init__(self, workdir: Path, netns: str | None = None, *, poll: float = 0.2,
                 failed_linger: float = 2.0, initiate_timeout: float = 8.0,
                 data_plane: bool = True, table: int = 4242,
                 dpd_delay: float | None = None) -> None:
        self.workdir = Path(workdir)
        self.charon = Charon(self.workdir / "device-charon", netns, table=table,
                             label="vppsim charon")
        self.poll = poll
        self.failed_linger = failed_linger
        self.initiate_timeout = initiate_timeout
        self.want_data_plane = data_plane
        self.dpd_delay = dpd_delay  # None: VPP's liveness period as the agent set it
        self.data_plane: DataPlane | None = None
        self.failures: dict[str, list[str]] = {}  # profile -> charon's last failure lines
        self._state: SimState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._links: dict[int, _Link] = {}
        self._inflight: set[int] = set()  # SA indexes whose VICI initiate runs
        # conn name -> (body, PSK) loaded into charon; reloaded when either changes
        self._loaded: dict[str, tuple[dict[str, Any], bytes]] = {}
        # Loading and unloading a connection run on worker threads; a profile deleted
        # and re-created at once (the agent's negotiation restart) must not have its
        # new connection unloaded by the old one's cleanup.
        self._load_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._sync_pending = False
        self._linux_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------
    def attach(self, state: SimState, loop: asyncio.AbstractEventLoop) -> None:
        self._state, self._loop = state, loop
        self._links.clear()
        self._inflight.clear()
        self._linux_lock = asyncio.Lock()  # bound to this (possibly new) loop

    async def start(self) -> None:
        """Start charon (and the data plane); called by VppSim.start after attach."""
        await asyncio.to_thread(self.charon.start)
        assert self._loop is not None
        if self.want_data_plane:
            self.data_plane = DataPlane(self._loop, nft_table=f"vppsim_{os.getpid()}")
            try:
                await self.data_plane.start()
            except BaseException:
                self.close()
                raise
        self._poller = self._loop.create_task(self._poll_loop())

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self.data_plane is not None:
            self.data_plane.close()
            self.data_plane = None
        self.charon.stop()
        self._loaded.clear()

    # -- vici plumbing ----------------------------------------------------------
    @contextlib.contextmanager
    def _vici(self) -> Iterator[Any]:
        session = vici_session(self.charon.vici_path, timeout=self.initiate_timeout + 2)
        try:
            yield session
        finally:
            with contextlib.suppress(Exception):
                session.transport.close()

    def _spawn(self, fn: Callable[[], Any], then: Callable[[Any], None] | None = None) -> None:
        assert self._loop is not None

        async def run() -> None:
            try:
                result = await asyncio.to_thread(fn)
            except Exception as e:  # charon refused: logged, state decided by the poll
                log.warning("vici request failed", error=str(e))
                return
            if then is not None:
                then(result)

        task = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def state_changed(self) -> None:
        """VppSim calls this after every accepted write: mirror it soon (coalesced)."""
        if self._sync_pending or self._loop is None:
            return
        self._sync_pending = True
        self._loop.call_soon(self._mirror)

    def _mirror(self) -> None:
        self._sync_pending = False
        state = self._state
        if state is None or self._loop is None:
            return
        for name in [n for n in self._loaded if n not in state.profiles]:
            self._spawn(functools.partial(self._with_session, functools.partial(
                self._unload, name=name)))
        if self.data_plane is not None:
            task = self._loop.create_task(self._sync_linux(state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sync_linux(self, state: SimState) -> None:
        async with self._linux_lock:  # one sync at a time, in order
            if self.data_plane is None:
                return
            try:
                await self.data_plane.sync(state)
            except Exception as e:
                log.error("mirroring the tunnel to Linux failed", error=str(e))

    # -- IkeBackend ---------------------------------------------------------------
    def initiate(self, profile: Profile, sa: IkeSa) -> None:
        try:
            assert self._state is not None
            dpd = self.dpd_delay if self.dpd_delay is not None else self._state.liveness[0]
            body = connection_for(profile, str(sa.iaddr), dpd)
        except (ValueError, KeyError) as e:
            log.warning("profile cannot be expressed for strongSwan", profile=profile.name,
                        error=str(e))
            self._fail(sa.index, NO_PROPOSAL_CHOSEN)
            return
        psk = bytes(profile.auth_data)
        if profile.auth_hex:
            psk = bytes.fromhex(psk.decode("ascii", "replace"))
        name, index = profile.name, sa.index
        owners = [body["local"]["id"], body["remote"]["id"]]
        self._links[index] = _Link()
        self._inflight.add(index)

        def work() -> tuple[list[str], bool, str | None]:
            try:
                return negotiate()
            except Exception as e:  # charon unreachable or refused the connection
                return [f"vici: {e}"], False, None

        def negotiate() -> tuple[list[str], bool, str | None]:
            with self._vici() as s:
                with self._load_lock:
                    if self._loaded.get(name) != (body, psk):
                        s.load_conn({name: body})
                        s.load_shared({"id": f"psk-{name}", "type": "IKE", "data": psk,
                                       "owners": owners})
                        self._loaded[name] = (body, psk)
                lines: list[str] = []
                ok = True
                try:
                    for event in s.initiate({"child": name, "ike": name,
                                             "timeout": int(self.initiate_timeout * 1000),
                                             "init-limits": "no"}):
                        msg = event.get("msg", b"")
                        lines.append(msg.decode(errors="replace") if isinstance(msg, bytes)
                                     else str(msg))
                except Exception as e:  # vici.exception.CommandException: it failed
                    ok = False
                    lines.append(str(e))
            uid = initiated_uid(name, lines)
            if not ok:  # an IKE SA whose child failed (TS/ESP proposal): VPP drops it
                try:
                    with self._vici() as s2:
                        self._terminate_childless(s2, name)
                except Exception as e:
                    log.warning("terminating a child-less IKE SA failed", error=str(e))
            return lines, ok, uid

        def done(result: tuple[list[str], bool, str | None]) -> None:
            self._inflight.discard(index)
            lines, ok, uid = result
            assert self._state is not None
            if not ok:
                self.failures[name] = [ln for ln in lines if "error" in ln or "fail" in ln
                                       or "NO_" in ln or "TS_" in ln][-5:]
                self._fail(index, classify_failure(lines))
            elif index in self._state.sas and uid is not None:
                self._links[index] = _Link(uid)
            elif uid is not None:  # deleted while negotiating: VPP would drop it too
                self._spawn(functools.partial(self._with_session, functools.partial(
                    _terminate, ike_id=uid)))
            self._kick()

        self._spawn(work, done)

    def _fail(self, index: int, vpp_state: int | None) -> None:
        state = self._state
        assert state is not None and self._loop is not None
        sa = state.sas.get(index)
        if sa is None:
            return
        if vpp_state is None:  # no answer / unknown: VPP times the SA out
            state.log(f"ikev2: sa {index} profile {sa.profile} timed out")
            state.remove_sa(index)
            self._links.pop(index, None)
            return
        sa.state = vpp_state
        self._links.setdefault(index, _Link())
        sa.children.clear()
        state.log(f"ikev2: sa {index} profile {sa.profile} failed: state {vpp_state}")
        if vpp_state == AUTH_FAILED:  # VPP's own line (level err: kept by default)
            state.log(AUTH_FAILED_LOG.format(ispi=sa.ispi), level="error")
        self._loop.call_later(self.failed_linger, self._forget, index)

    def _forget(self, index: int) -> None:
        assert self._state is not None
        self._state.remove_sa(index)
        self._links.pop(index, None)

    def delete_ike_sa(self, sa: IkeSa) -> None:
        """Terminate the IKE SA (or forget a failed one); also called on profile delete."""
        assert self._state is not None
        link = self._links.pop(sa.index, None)
        self._state.remove_sa(sa.index)
        uid = link.uniqueid if link else None
        name = sa.profile
        gone_profile = name not in self._state.profiles

        def work() -> None:
            with self._vici() as s:
                if uid is not None:
                    with contextlib.suppress(Exception):
                        for _ in s.terminate({"ike-id": uid, "timeout": 2000, "force": "yes"}):
                            pass
                if gone_profile:
                    self._unload(s, name)

        self._spawn(work)

    def _unload(self, s: Any, name: str) -> None:
        with self._load_lock:
            if self._state is not None and name in self._state.profiles:
                return  # re-created meanwhile: its connection is the new one
            if self._loaded.pop(name, None) is None:
                return
            self._unload_locked(s, name)

    def _unload_locked(self, s: Any, name: str) -> None:
        with contextlib.suppress(Exception):
            for _ in s.terminate({"ike": name, "timeout": 2000, "force": "yes"}):
                pass
        with contextlib.suppress(Exception):
            s.unload_conn({"name": name})
        with contextlib.suppress(Exception):
            s.unload_shared({"id": f"psk-{name}"})

    def _with_session(self, fn: Callable[[Any], None]) -> None:
        with self._vici() as s:
            fn(s)

    def delete_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        assert self._state is not None
        self._state.remove_child(sa, child)
        spi = f"{child.i_spi:08x}"

        def work() -> None:
            with self._vici() as s, contextlib.suppress(Exception):
                for _ in s.terminate({"child-id": self._child_uid(s, spi), "timeout": 2000}):
                    pass

        self._spawn(work, lambda _: self._kick())

    def rekey_child_sa(self, sa: IkeSa, child: ChildSa) -> None:
        spi = f"{child.i_spi:08x}"

        def work() -> None:
            with self._vici() as s:
                uid = self._child_uid(s, spi)
                if uid:
                    s.rekey({"child-id": uid})

        self._spawn(work, lambda _: self._kick())

    @staticmethod
    def _terminate_childless(s: Any, name: str) -> None:
        for entry in s.list_sas({"ike": name}):
            for ike in entry.values():
                children = (ike.get("child-sas") or {}).values()
                if not any(_text(c.get("state")) == "INSTALLED" for c in children):
                    with contextlib.suppress(Exception):
                        for _ in s.terminate({"ike-id": _text(ike.get("uniqueid")),
                                              "timeout": 2000, "force": "yes"}):
                            pass

    @staticmethod
    def _child_uid(s: Any, spi_hex: str) -> str:
        for entry in s.list_sas():
            for ike in entry.values():
                for child in (ike.get("child-sas") or {}).values():
                    spis = {_text(child.get("spi-in")), _text(child.get("spi-out"))}
                    if spi_hex in spis:
                        return _text(child.get("uniqueid"))
        return ""

    # -- list-sas -> vppsim's SAs ---------------------------------------------------
    def _kick(self) -> None:
        """Re-read charon now (after an initiate/terminate finished)."""
        self._spawn(self._list, self._apply)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            if not self.charon.running:
                continue
            try:
                sas = await asyncio.to_thread(self._list)
            except Exception as e:
                log.debug("list-sas failed", error=str(e))
                continue
            self._apply(sas)
            if self.data_plane is not None and self.data_plane._pkt is None:
                self.data_plane._ensure_packet_socket()

    def _list(self) -> dict[str, dict[str, Any]]:
        """uniqueid -> IKE SA (as VICI reports it), for our profiles' connections."""
        out: dict[str, dict[str, Any]] = {}
        with self._vici() as s:
            for entry in s.list_sas():
                for conn, ike in entry.items():
                    conn_name = _text(conn)
                    ike = _decode(ike)
                    ike["_conn"] = conn_name
                    out[ike["uniqueid"]] = ike
        return out

    def _apply(self, sas: dict[str, dict[str, Any]]) -> None:
        state = self._state
        if state is None:
            return
        mapped = {link.uniqueid: idx for idx, link in self._links.items() if link.uniqueid}
        # a profile with an initiation in flight: that initiation claims its IKE SA
        claiming = {state.sas[i].profile for i in self._inflight if i in state.sas}
        # charon SAs vppsim does not know: a rekeyed IKE SA or one the peer initiated
        for uid, ike in sas.items():
            conn = ike["_conn"]
            if uid in mapped or conn not in state.profiles or conn in claiming:
                continue
            adopted = self._adopt(ike)
            if adopted is not None:
                self._links[adopted.index] = _Link(uid)
                mapped[uid] = adopted.index
        for uid, idx in list(mapped.items()):
            sa = state.sas.get(idx)
            if sa is None:
                self._links.pop(idx, None)
                continue
            found = sas.get(uid)
            if found is None:
                if idx in self._inflight:
                    continue  # the initiation's own outcome decides (see initiate)
                if sa.state == AUTHENTICATED or sa.state == SA_INIT:
                    state.log(f"ikev2: sa {idx} profile {sa.profile} gone in charon")
                    self._links.pop(idx, None)
                    state.remove_sa(idx)
                continue
            self._update(sa, found)

    def _adopt(self, ike: dict[str, Any]) -> IkeSa | None:
        """An established charon SA vppsim did not initiate (peer's, or an IKE rekey)."""
        state = self._state
        assert state is not None
        children = (ike.get("child-sas") or {}).values()
        if ike.get("state") != "ESTABLISHED" or not any(
                c.get("state") == "INSTALLED" for c in children):
            return None
        # an initiation whose IKE SA could not be told from its log lines
        linked = {i for i, link in self._links.items() if link.uniqueid}
        for sa in state.sas.values():
            if sa.profile == ike["_conn"] and sa.state == SA_INIT and sa.index not in linked:
                return sa
        p = state.profiles[ike["_conn"]]
        if p.responder_addr is None or state.first_address(
                p.responder_sw_if_index, p.responder_addr.version) is None:
            return None
        sa = state.new_sa(p)
        self._links[sa.index] = _Link()
        return sa

    def _update(self, sa: IkeSa, ike: dict[str, Any]) -> None:
        state = self._state
        assert state is not None
        initiator = ike.get("initiator") == "yes"
        sa.ispi = int(ike.get("initiator-spi", "0"), 16) or sa.ispi
        sa.rspi = int(ike.get("responder-spi", "0"), 16)
        enc = ike.get("encr-alg", "")
        if enc:
            sa.ike = {
                "crypto_alg": strongswan.ENCR_BY_NAME.get(enc, 0),
                "crypto_key_size": int(ike.get("encr-keysize", "0") or 0),
                "integ_alg": strongswan.INTEG_BY_NAME.get(ike.get("integ-alg", ""), 0),
                "prf_alg": strongswan.PRF_BY_NAME.get(ike.get("prf-alg", ""), 0),
                "dh_group": strongswan.DH_BY_NAME.get(ike.get("dh-group", ""), 0),
            }
        if ike.get("state") != "ESTABLISHED":
            return
        installed = {c["uniqueid"]: c for c in (ike.get("child-sas") or {}).values()
                     if c.get("state") == "INSTALLED"}
        if not installed:
            if sa.state == SA_INIT:
                return  # IKE_AUTH done, CHILD_SA being installed
            if sa.children:
                for child in list(sa.children):
                    state.remove_child(sa, child)
            return
        if sa.state != AUTHENTICATED:
            sa.state = AUTHENTICATED
            sa.auth_time = state.clock()
            state.log(f"ikev2: sa {sa.index} profile {sa.profile} AUTHENTICATED (charon)")
        profile = state.profiles.get(sa.profile)
        by_spi = {f"{c.i_spi:08x}": c for c in sa.children}
        keep: list[ChildSa] = []
        for c in installed.values():
            spi_in, spi_out = c.get("spi-in", "0"), c.get("spi-out", "0")
            i_spi, r_spi = (spi_in, spi_out) if initiator else (spi_out, spi_in)
            known = by_spi.get(i_spi)
            if known is None:
                if profile is None:
                    continue
                known = state.add_child(sa, profile)
            child = known
            child.i_spi, child.r_spi = int(i_spi, 16), int(r_spi, 16)
            child.encr = (strongswan.ENCR_BY_NAME.get(c.get("encr-alg", ""), 0),
                          int(c.get("encr-keysize", "0") or 0))
            child.integ = strongswan.INTEG_BY_NAME.get(c.get("integ-alg", ""), 0)
            child.keys = {}
            keep.append(child)
        for child in list(sa.children):
            if child not in keep:  # rekeyed or deleted in charon
                state.remove_child(sa, child)


def initiated_uid(conn: str, lines: list[str]) -> str | None:
    """The unique id of the IKE SA an initiate created or reused, from its log lines."""
    for line in lines:
        m = re.search(rf"IKE_SA {re.escape(conn)}\[(\d+)\]", line)
        if m:
            return m.group(1)
    return None


def _terminate(s: Any, ike_id: str) -> None:
    with contextlib.suppress(Exception):
        for _ in s.terminate({"ike-id": ike_id, "timeout": 2000, "force": "yes"}):
            pass


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _decode(v: Any) -> Any:
    """VICI answers bytes everywhere: text for the fields we read."""
    if isinstance(v, dict):
        return {_text(k): _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return _text(v)


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
