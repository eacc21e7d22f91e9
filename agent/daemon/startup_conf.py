"""Render VPP's startup.conf for the agent (`peering-agent render-startup-conf`).

The layout and comments live in `vpp_templates/startup.conf.tmpl`
(`string.Template`); this module turns the agent configuration into the values,
validating everything that would otherwise only fail when VPP starts (or, worse,
start a VPP the agent cannot use: a wrong API socket, a missing plugin).

PCI dev_ids come from the controller in fwagent's spelling, ``pci:0000:00:03.00``
(two-digit function); DPDK wants ``0000:00:03.0``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

TEMPLATE_NAME = "startup.conf.tmpl"
# A source checkout keeps the template in vpp_templates/; an installed package has it
# under <prefix>/share/peering-agent/ (see the packaging notes in the README).
TEMPLATE_CANDIDATES: tuple[Path, ...] = (
    Path(__file__).resolve().parents[2] / "vpp_templates" / TEMPLATE_NAME,
    Path(sys.prefix) / "share" / "peering-agent" / "vpp_templates" / TEMPLATE_NAME,
    Path("/usr/share/peering-agent/vpp_templates") / TEMPLATE_NAME,
)

# What the agent needs from VPP, and why.
REQUIRED_PLUGINS: tuple[str, ...] = (
    "dpdk_plugin.so",  # the WAN NICs
    "ikev2_plugin.so",  # IKE negotiation and SA installation
    "ping_plugin.so",  # `ping` CLI used by peerctl diagnostics
    "mss_clamp_plugin.so",  # peer.tcp-mss-clamp
    "acl_plugin.so",  # path selection: classify traffic towards a peer
    "abf_plugin.so",  # path selection: forward the classified traffic into the tunnel
)

# With [vpp] linux_cp (the default): Linux mirrors of tunnels (probes, FRR) and Linux
# routes (FRR/OSPF over the tunnels) into VPP's FIB. In 26.06 the tap driver is a
# plugin that linux-cp calls by symbol: without it every pair fails with -30
# (VNET_API_ERROR_FEATURE_DISABLED, "tap plugin not loaded").
LINUX_CP_PLUGINS: tuple[str, ...] = ("linux_cp_plugin.so", "linux_nl_plugin.so",
                                     "tap_plugin.so")
# 4k, 2m, 1g, default or default-hugepage (VPP's own spellings)
_PAGE_SIZE_RE = re.compile(r"^(4k|2m|1g|default|default-hugepage)$")
_SIZE_RE = re.compile(r"^[1-9][0-9]*[KMG]$")

DEFAULT_API_SOCKET = Path("/run/vpp/api.sock")
DEFAULT_STATS_SOCKET = Path("/run/vpp/stats.sock")
DEFAULT_CLI_SOCKET = Path("/run/vpp/cli.sock")
DEFAULT_LOG_FILE = Path("/var/log/vpp/vpp.log")

_PCI_RE = re.compile(
    r"^(?:pci:)?(?P<domain>[0-9a-fA-F]{4}):(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<device>[0-9a-fA-F]{2})\.(?P<function>[0-9a-fA-F]{1,2})$"
)
# startup.conf is whitespace/brace tokenised: a value must be one plain token
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_./:@+-]+$")
_PLUGIN_RE = re.compile(r"^[a-z0-9_]+_plugin\.so$")


class StartupConfError(ValueError):
    """A value that cannot go into startup.conf; the message names it."""


def pci_address(dev_id: str) -> str:
    """`pci:0000:00:03.00` (fwagent dev_id) -> `0000:00:03.0` (DPDK `dev`)."""
    m = _PCI_RE.match(dev_id)
    if m is None:
        raise StartupConfError(
            f"interfaces: dev_id {dev_id!r} is not a PCI address; expected "
            "pci:DDDD:BB:SS.FF such as pci:0000:00:03.00"
        )
    device, function = int(m["device"], 16), int(m["function"], 16)
    if device > 0x1F or function > 7:
        raise StartupConfError(
            f"interfaces: dev_id {dev_id!r}: PCI slot must be 00-1f and function 0-7"
        )
    return f"{m['domain'].lower()}:{m['bus'].lower()}:{device:02x}.{function:x}"


@dataclass(frozen=True)
class DpdkDevice:
    pci: str  # DPDK spelling, 0000:00:03.0
    name: str  # the VPP interface name the agent's [interfaces] table expects


@dataclass(frozen=True)
class StartupParams:
    devices: tuple[DpdkDevice, ...]
    api_socket: Path = DEFAULT_API_SOCKET
    stats_socket: Path = DEFAULT_STATS_SOCKET
    cli_socket: Path = DEFAULT_CLI_SOCKET
    log_file: Path = DEFAULT_LOG_FILE
    gid: str = "vpp"
    main_core: int | None = 1
    worker_cores: tuple[int, ...] = ()
    buffers_per_numa: int = 16384
    lcp_default_netns: str = ""  # empty: the linux-cp mirrors live in the host namespace
    linux_cp: bool = True  # [vpp] linux_cp: the linux-cp plugins and section
    page_size: str = "default-hugepage"  # for the main heap, the stats segment, buffers
    main_heap_size: str = "1G"
    plugins: tuple[str, ...] = REQUIRED_PLUGINS
    source: str = "the agent configuration"  # named in the header comment

    def validate(self) -> None:
        """Raise StartupConfError for anything VPP would reject or misparse."""
        if not self.devices:
            raise StartupConfError(
                "interfaces: no WAN device; add a 'pci:...' dev_id to the agent's "
                "[interfaces] table so DPDK has a NIC to drive"
            )
        seen_pci: set[str] = set()
        seen_name: set[str] = set()
        for d in self.devices:
            if d.pci in seen_pci:
                raise StartupConfError(f"interfaces: PCI device {d.pci} listed twice")
            if d.name in seen_name:
                raise StartupConfError(f"interfaces: VPP interface name {d.name!r} used twice")
            seen_pci.add(d.pci)
            seen_name.add(d.name)
            _token("interfaces", d.name)
        for key in ("api_socket", "stats_socket", "cli_socket", "log_file"):
            value = getattr(self, key)
            if not value.is_absolute():
                raise StartupConfError(f"{key}: must be an absolute path, got {str(value)!r}")
            _token(key, str(value))
        if len({self.api_socket, self.stats_socket, self.cli_socket}) != 3:
            raise StartupConfError("api_socket, stats_socket and cli_socket must differ")
        _token("gid", self.gid)
        if self.lcp_default_netns:
            _token("lcp_default_netns", self.lcp_default_netns)
        if self.main_core is not None and self.main_core < 0:
            raise StartupConfError(f"main_core: must be >= 0, got {self.main_core}")
        if any(c < 0 for c in self.worker_cores):
            raise StartupConfError("worker_cores: core numbers must be >= 0")
        if len(set(self.worker_cores)) != len(self.worker_cores):
            raise StartupConfError("worker_cores: a core is listed twice")
        if self.main_core is not None and self.main_core in self.worker_cores:
            raise StartupConfError(
                f"worker_cores: core {self.main_core} is already the main core"
            )
        if not 1024 <= self.buffers_per_numa <= 4_194_304:
            raise StartupConfError(
                f"buffers_per_numa: must be 1024..4194304, got {self.buffers_per_numa}"
            )
        for plugin in self.plugins:
            if not _PLUGIN_RE.match(plugin):
                raise StartupConfError(f"plugins: {plugin!r} is not a VPP plugin file name")
        if not _PAGE_SIZE_RE.match(self.page_size):
            raise StartupConfError(
                f"page_size: {self.page_size!r} must be 4k, 2m, 1g, default or default-hugepage")
        if not _SIZE_RE.match(self.main_heap_size):
            raise StartupConfError(
                f"main_heap_size: {self.main_heap_size!r} must be a size such as 512M or 1G")
        missing = [p for p in REQUIRED_PLUGINS if p not in self.plugins]
        if missing:
            raise StartupConfError(f"plugins: the agent needs {', '.join(missing)}")


def _token(key: str, value: str) -> None:
    if not _TOKEN_RE.match(value):
        raise StartupConfError(
            f"{key}: {value!r} must be one word (letters, digits, _ . / : @ + -)"
        )


def devices_from_interfaces(interfaces: Mapping[str, str]) -> tuple[DpdkDevice, ...]:
    """The [interfaces] table (dev_id -> VPP name) as DPDK devices, sorted by PCI address."""
    devices = [DpdkDevice(pci_address(dev_id), name) for dev_id, name in interfaces.items()]
    return tuple(sorted(devices, key=lambda d: d.pci))


def _core_list(cores: Iterable[int]) -> str:
    """[2, 3, 4, 7] -> '2-4,7' (VPP's corelist syntax)."""
    out: list[str] = []
    ordered = sorted(cores)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def load_template(path: Path | None = None) -> str:
    """The template text: `path`, else the first of TEMPLATE_CANDIDATES that exists."""
    if path is None:
        path = next((p for p in TEMPLATE_CANDIDATES if p.is_file()), None)
        if path is None:
            raise StartupConfError(
                f"template {TEMPLATE_NAME} not found in "
                f"{', '.join(str(p.parent) for p in TEMPLATE_CANDIDATES)}; pass --template"
            )
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise StartupConfError(f"cannot read template {path}: {e.strerror}") from None


def render_startup_conf(params: StartupParams, template: str | None = None) -> str:
    """The startup.conf text; raises StartupConfError naming a bad value."""
    params.validate()
    cpu = ""
    if params.main_core is not None:
        cpu += f"  main-core {params.main_core}\n"
    if params.worker_cores:
        cpu += f"  corelist-workers {_core_list(params.worker_cores)}\n"
    dpdk = "".join(f"  dev {d.pci} {{ name {d.name} }}\n" for d in params.devices)
    enabled = [*params.plugins,
               *(p for p in LINUX_CP_PLUGINS if params.linux_cp and p not in params.plugins)]
    plugins = "".join(f"  plugin {p} {{ enable }}\n" for p in enabled)
    linux_cp = ""
    if params.linux_cp:
        netns = (f"  default netns {params.lcp_default_netns}\n"
                 if params.lcp_default_netns else "")
        linux_cp = ("\n# Mirror VPP interfaces into Linux (probes leave through the tunnels' "
                    "Linux side),\n# keep their state/addresses/MTU in sync, and create "
                    f"Linux sub-interfaces too.\nlinux-cp {{\n{netns}  lcp-sync\n"
                    "  lcp-auto-subint\n}\n")
    values = {
        "source": " ".join(params.source.split()),
        "log_file": params.log_file,
        "cli_socket": params.cli_socket,
        "gid": params.gid,
        "api_socket": params.api_socket,
        "stats_socket": params.stats_socket,
        "cpu": cpu,
        "buffers_per_numa": params.buffers_per_numa,
        "page_size": params.page_size,
        "main_heap_size": params.main_heap_size,
        "dpdk_devices": dpdk,
        "plugins": plugins,
        "linux_cp": linux_cp,
    }
    try:
        return Template(load_template() if template is None else template).substitute(values)
    except KeyError as e:
        raise StartupConfError(
            f"template: unknown placeholder ${e.args[0]}; known: {', '.join(sorted(values))}"
        ) from None
    except ValueError as e:  # a '$' not followed by a name
        raise StartupConfError(f"template: {e}") from None


# --- `peering-agent render-startup-conf` ------------------------------------------


def _cores(text: str) -> tuple[int, ...]:
    """'2-4,7' -> (2, 3, 4, 7) for --worker-cores."""
    cores: list[int] = []
    try:
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi or lo)
            if last < first:
                raise ValueError
            cores.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a core list such as 2-3 or 2,4,6"
        ) from None
    return tuple(cores)


def add_render_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                      default_config: Path = Path("/etc/peering-agent/agent.toml")) -> None:
    """Add `render-startup-conf` to the `peering-agent` sub-commands."""
    p = subparsers.add_parser(
        "render-startup-conf",
        help="write VPP's startup.conf for this agent configuration",
        description="Render VPP's startup.conf from the agent configuration: the WAN "
        "devices of [interfaces], the API socket of [vpp], the plugins the agent needs.",
    )
    p.add_argument("--config", type=Path, default=default_config)
    p.add_argument("--output", type=Path, default=None,
                   help="file to write (atomically); default: standard output")
    p.add_argument("--main-core", type=int, default=1, help="VPP main thread core")
    p.add_argument("--worker-cores", type=_cores, default=(),
                   help="worker thread cores, e.g. 2-3 (default: no workers)")
    p.add_argument("--buffers-per-numa", type=int, default=16384)
    p.add_argument("--stats-socket", type=Path, default=DEFAULT_STATS_SOCKET)
    p.add_argument("--page-size", default="default-hugepage",
                   help="page size of VPP's main heap, stats segment and buffers: "
                        "default-hugepage (default), 2m, 1g or 4k (no hugepages)")
    p.add_argument("--lcp-netns", default="",
                   help="network namespace for the linux-cp mirrors (default: host)")
    p.add_argument("--template", type=Path, default=None,
                   help=f"template file (default: the installed {TEMPLATE_NAME})")


def render_startup_conf_cli(args: argparse.Namespace,
                            env: Mapping[str, str] | None = None) -> int:
    """Run `render-startup-conf`; 0 on success, 2 on a configuration problem."""
    from agent.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, os.environ if env is None else env)
        params = StartupParams(
            devices=devices_from_interfaces(cfg.interfaces),
            api_socket=cfg.vpp.api_socket,
            stats_socket=args.stats_socket,
            main_core=args.main_core,
            worker_cores=tuple(args.worker_cores),
            buffers_per_numa=args.buffers_per_numa,
            lcp_default_netns=args.lcp_netns,
            linux_cp=cfg.vpp.linux_cp,
            page_size=args.page_size,
            source=str(args.config),
        )
        text = render_startup_conf(params, load_template(args.template))
    except ConfigError as e:
        for problem in e.problems:
            print(f"peering-agent: {args.config}: {problem}", file=sys.stderr)
        return 2
    except StartupConfError as e:
        print(f"peering-agent: {args.config}: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write_atomically(args.output, text)
    except OSError as e:
        print(f"peering-agent: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """VPP must never read a half-written startup.conf: write aside, then rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

