"""What the device says about itself: versions, interface facts, `reconfig`.

flexiManage validates the `get-device-info` reply with a Joi schema that rejects
unknown keys and then saves the versions with a mongoose schema that is stricter
(protocol reference 9.2); any failure disconnects the device. Registration
(section 2.2) validates the interface entries with the interface schema. The
builders here produce values that pass both; they are pure except
`detect_frr_version`, which asks vtysh once at start.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from agent.jobs.wirejson import canonical
from agent.vpp.readers import WanFacts

# flexiManage's mongoose patterns: agent/router/frr/device without suffix, vpp with one.
PLAIN_VERSION = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?$")
VPP_VERSION = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?(-[a-z0-9]{1,10})?$", re.I)
_LEADING = re.compile(r"^v?([0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,3})?)(.*)$", re.I)
_SUFFIX = re.compile(r"^-[a-z0-9]{1,10}$", re.I)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_/.]")


def normalize_vpp_version(raw: str, fallback: str) -> str:
    """VPP's version in a form flexiManage stores: ``26.06-release`` stays, a dev
    build such as ``26.06-rc2~13-g0123abcd`` becomes ``26.06``; `fallback` when
    nothing usable is known (VPP not connected yet)."""
    m = _LEADING.match(raw.strip())
    if not m:
        return fallback
    base, rest = m.groups()
    return base + rest if _SUFFIX.match(rest) else base


def normalize_plain_version(raw: str) -> str | None:
    """The leading X.Y[.Z] of a version text (``10.2.1-dev`` -> ``10.2.1``), None if none."""
    m = _LEADING.match(raw.strip())
    return m.group(1) if m else None


def parse_vtysh_version(text: str) -> str | None:
    """The FRR version in vtysh's ``--version`` (``vtysh 8.4.4 ...``) or ``--help``
    (``Integrated shell for FRR (version 8.4.4).``) output."""
    for line in text.splitlines():
        m = re.search(r"\b(?:vtysh|FRRouting)\b\s+v?([0-9][^\s(]*)", line) \
            or re.search(r"\(version\s+v?([0-9][^\s)]*)\)", line)
        if m:
            return normalize_plain_version(m.group(1))
    return None


def detect_frr_version(fallback: str) -> str:
    """FRR's version from vtysh when FRR is installed, else `fallback`. Debian 12's
    vtysh (8.4.4) has no ``--version`` but names its version in ``--help``."""
    vtysh = shutil.which("vtysh")
    if vtysh is None:
        return fallback
    for option in ("--version", "--help"):
        try:
            done = subprocess.run([vtysh, option], capture_output=True, text=True,
                                  timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return fallback
        if found := parse_vtysh_version(done.stdout + done.stderr):
            return found
    return fallback


def distro_facts(os_release: Path = Path("/etc/os-release")) -> dict[str, str]:
    """``{version, codename}`` from os-release (flexiagent uses ``lsb_release -rscs``)."""
    try:
        lines = os_release.read_text().splitlines()
    except OSError:
        return {"version": "", "codename": ""}
    info = {k: v.strip().strip('"') for k, v in (ln.split("=", 1) for ln in lines if "=" in ln)}
    return {"version": info.get("VERSION_ID", ""), "codename": info.get("VERSION_CODENAME", "")}


def cpu_facts() -> dict[str, Any]:
    """flexiagent's `cpuInfo`, sent at registration and in every get-device-info:
    flexiManage rebuilds it from each get-device-info, 2 cores when it is missing."""
    cores = os.cpu_count() or 1
    return {"hwCores": cores, "grubCores": cores, "vppCores": 1, "configuredVppCores": 1,
            "powerSaving": False}


def interface_name(name: str) -> str:
    """flexiManage allows ``[a-zA-Z0-9_/.]{1,64}``: ``host-eth0`` -> ``host_eth0``."""
    return (_NAME_BAD.sub("_", name) or "if")[:64]


def interface_entry(f: WanFacts) -> dict[str, Any]:
    """One entry of registration's `interfaces` and of `network.interfaces` (section 2.2)."""
    entry: dict[str, Any] = {
        "name": interface_name(f.name),
        "devId": f.dev_id,
        "driver": "vpp",
        "IPv4": str(f.addr.ip) if f.addr is not None else "",
        "IPv4Mask": str(f.addr.network.prefixlen) if f.addr is not None else "",
        "IPv6": "",
        "IPv6Mask": "",
        "dhcp": "no",
        "gateway": f.gateway,
        # flexiManage refuses to assign WANs of equal metrics, so each WAN's own
        "metric": str(f.metric) if f.gateway else "",
        "link": "up" if f.link_up else "down",
        "public_ip": "",
        "public_port": "",
        "nat_type": "",
        "deviceType": "dpdk",
    }
    if f.mac:
        entry["MAC"] = f.mac
    if 500 <= f.mtu <= 9999:
        entry["mtu"] = f.mtu
    return entry


def reconfig_hash(entries: Iterable[dict[str, Any]]) -> str:
    """md5 over the interface facts flexiagent hashes (type, address, gateway, metric,
    mtu, public address, link): changes exactly when flexiManage should re-read them."""
    facts = []
    for e in entries:
        addr = f"{e.get('IPv4', '')}/{e.get('IPv4Mask', '')}" if e.get("IPv4") else ""
        item = [e.get("devId"), e.get("deviceType"), addr, e.get("gateway"), e.get("metric"),
                e.get("mtu")]
        if e.get("gateway") and addr:
            item += [e.get("public_ip"), e.get("public_port")]
        item.append(e.get("link"))
        facts.append(item)
    return hashlib.md5(canonical(facts).encode(), usedforsecurity=False).hexdigest()


def device_info_body(*, agent_version: str, vpp_version: str, frr_version: str,
                     interfaces: Sequence[dict[str, Any]],
                     distro: dict[str, str] | None = None,
                     cpu_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The get-device-info `message` without `jobs` (the link adds them)."""
    return {
        "device": agent_version,
        "components": {
            "agent": {"version": agent_version},
            "router": {"version": agent_version},
            "vpp": {"version": vpp_version},
            "frr": {"version": frr_version},
        },
        "network": {"interfaces": list(interfaces)},
        "reconfig": reconfig_hash(interfaces),
        "tunnels": [],
        **({"distro": distro} if distro else {}),
        **({"cpuInfo": cpu_info} if cpu_info else {}),
    }
