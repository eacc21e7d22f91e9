"""flexiManage 6.3's acceptance rules for what a device sends, written from the
protocol reference (sections 2, 4.2, 9.2, 10.2) for the controller double and the
tests. Each validator returns the list of problems ([] = flexiManage accepts).
Never imported by product code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

# flexiManage backend/versioning.js: isSemVer / isVppVersion (case-insensitive)
SEMVER = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?$", re.I)
VPPVER = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?(-[a-z0-9]{1,10})?$", re.I)
DEVICE_VERSION = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$")
STATS_KEY = re.compile(r"^[a-z0-9:._/-]{1,64}$", re.I)
COUNTERS = ("rx_bytes", "rx_pkts", "tx_bytes", "tx_pkts")

_INFO_KEYS = {"device", "components", "network", "reconfig", "tunnels", "jobs", "ikev2",
              "cpuInfo", "distro", "stats"}
_STATS_ENTRY_KEYS = {"ok", "period", "utc", "stats", "running", "state", "stateReason",
                     "tunnel_stats", "health", "alerts", "alerts_hash", "reconfig", "ikev2",
                     "application_stats", "lte_stats", "wifi_stats", "vrrp", "bgp"}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def validate_device_info(message: Any) -> list[str]:
    """Joi schema (unknown keys rejected) + the mongoose version patterns + 9.4."""
    if not isinstance(message, Mapping):
        return ["message must be an object"]
    errors = [f"{k} is not allowed" for k in message if k not in _INFO_KEYS]
    device = message.get("device")
    if not isinstance(device, str) or not DEVICE_VERSION.match(device):
        errors.append(f"device {device!r} must match X.Y.Z")
    comps = message.get("components")
    if not isinstance(comps, Mapping):
        errors.append("components is required")
    else:
        for name in comps:
            if name not in ("agent", "router", "vpp", "frr", "edgeui"):
                errors.append(f"components.{name} is not allowed")
        for name in ("agent", "router", "vpp", "frr"):
            comp = comps.get(name)
            if not isinstance(comp, Mapping):
                errors.append(f"components.{name} is required")
                continue
            errors += [f"components.{name}.{k} is not allowed" for k in comp if k != "version"]
            version = comp.get("version")
            if not isinstance(version, str) or not version:
                errors.append(f"components.{name}.version is not allowed to be empty")
                continue
            if not (SEMVER.match(version) or VPPVER.match(version)):
                errors.append(f"components.{name}.version {version!r} fails isSemVer/isVppVersion")
            strict = VPPVER if name == "vpp" else SEMVER
            if name != "edgeui" and not strict.match(version):
                errors.append(f"versions.{name} {version!r} fails the device schema (save throws)")
    if "network" in message and not isinstance(message["network"], Mapping):
        errors.append("network must be an object")
    reconfig = message.get("reconfig")
    if "reconfig" in message and not isinstance(reconfig, str):
        errors.append("reconfig must be a string")
    if reconfig:
        network = message.get("network")
        interfaces = network.get("interfaces") if isinstance(network, Mapping) else None
        if not isinstance(interfaces, list):
            errors.append("non-empty reconfig without network.interfaces (TypeError)")
        else:
            for i, itf in enumerate(interfaces):
                errors += [f"network.interfaces[{i}]: {e}" for e in validate_interface(itf)]
    for key in ("tunnels", "jobs"):
        if key in message and not isinstance(message[key], list):
            errors.append(f"{key} must be an array")
    for i, job in enumerate(message.get("jobs") or []):
        if not isinstance(job, Mapping) or set(job) != {"job_id", "request", "received_at",
                                                       "errors", "state"}:
            errors.append(f"jobs[{i}] must be {{job_id, request, received_at, errors, state}}")
        elif job["state"] not in ("complete", "failed", "running") or \
                not isinstance(job["errors"], list):
            errors.append(f"jobs[{i}] has a bad state or errors")
    ikev2 = message.get("ikev2")
    if ikev2 is not None and (not isinstance(ikev2, Mapping)
                              or set(ikev2) - {"certificateExpiration", "error"}):
        errors.append("ikev2 must be {certificateExpiration?, error?}")
    for key in ("cpuInfo", "distro", "stats"):
        if key in message and not isinstance(message[key], Mapping):
            errors.append(f"{key} must be an object")
    return errors


def validate_interface(itf: Any) -> list[str]:
    """The interface schema of flexiManage backend/models/devices.js (section 2.2)."""
    if not isinstance(itf, Mapping):
        return ["not an object"]
    errors = []
    name = itf.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-zA-Z0-9_/.]{1,64}$", name):
        errors.append(f"name {name!r} is invalid")
    dev_id = itf.get("devId")
    if not isinstance(dev_id, str) or not re.match(
            r"^(pci:([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]{2}|usb:usb[0-9].*|"
            r"vlan\.[0-9]{1,4}\.pci:.*)$", dev_id, re.I):
        errors.append(f"devId {dev_id!r} is invalid (dropped)")
    driver = itf.get("driver")
    if not isinstance(driver, str) or not re.match(r"^[a-z0-9_-]{1,30}$", driver):
        errors.append(f"driver {driver!r} is invalid")
    if "MAC" in itf and not (isinstance(itf["MAC"], str) and re.match(
            r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", itf["MAC"], re.I)):
        errors.append(f"MAC {itf['MAC']!r} is invalid")
    ip = r"^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$"
    for key in ("IPv4", "gateway"):
        value = itf.get(key, "")
        if value != "" and not (isinstance(value, str) and re.match(ip, value)):
            errors.append(f"{key} {value!r} is invalid")
    mask = itf.get("IPv4Mask", "")
    if mask != "" and not (isinstance(mask, str) and re.match(r"^[0-9]{1,2}$", mask)
                           and int(mask) <= 32):
        errors.append(f"IPv4Mask {mask!r} is invalid")
    if itf.get("dhcp", "no") not in ("yes", "no"):
        errors.append("dhcp must be yes or no")
    metric = itf.get("metric", "")
    if metric != "" and not (isinstance(metric, str) and metric.isdigit()):
        errors.append(f"metric {metric!r} is invalid")
    if "mtu" in itf:
        try:
            mtu = int(itf["mtu"])
        except (TypeError, ValueError):
            mtu = 0
        if not 500 <= mtu <= 9999:
            errors.append(f"mtu {itf['mtu']!r} is invalid")
    if itf.get("link", "") not in ("up", "down", ""):
        errors.append("link must be up, down or ''")
    return errors


def validate_stats(message: Any) -> list[str]:
    """Each entry with the Joi schema (unknown keys rejected) plus the processing needs
    of deviceStatus.js (stats present, cpu non-empty, period > 0 with counters)."""
    if not isinstance(message, list):
        return ["message must be an array"]
    errors: list[str] = []
    for i, entry in enumerate(message):
        where = f"[{i}]"
        if not isinstance(entry, Mapping):
            errors.append(f"{where} is not an object")
            continue
        errors += [f"{where}.{k} is not allowed" for k in entry if k not in _STATS_ENTRY_KEYS]
        if not isinstance(entry.get("ok"), int) or isinstance(entry.get("ok"), bool):
            errors.append(f"{where}.ok is required (integer)")
        for key in ("period", "utc"):
            if not _number(entry.get(key)):
                errors.append(f"{where}.{key} is required (number)")
        stats = entry.get("stats")
        if not isinstance(stats, Mapping):
            errors.append(f"{where}.stats is missing (the traffic code iterates it)")
            stats = {}
        has_counters = False
        for dev, counters in stats.items():
            if not STATS_KEY.match(str(dev)):
                errors.append(f"{where}.stats key {dev!r} is invalid")
            if not isinstance(counters, Mapping) or set(counters) != set(COUNTERS) or \
                    not all(_number(v) for v in counters.values()):
                errors.append(f"{where}.stats.{dev} must be exactly {{{', '.join(COUNTERS)}}}")
            else:
                has_counters = True
        tunnels = entry.get("tunnel_stats", {})
        if not isinstance(tunnels, Mapping):
            errors.append(f"{where}.tunnel_stats must be an object")
            tunnels = {}
        for tid, t in tunnels.items():
            if isinstance(t, Mapping) and any(k in t for k in COUNTERS):
                has_counters = True
                if not all(_number(t.get(k)) for k in COUNTERS):
                    errors.append(f"{where}.tunnel_stats.{tid} counters must be numbers")
        if has_counters and not (_number(entry.get("period")) and entry["period"] > 0):
            errors.append(f"{where}.period must be > 0 when counters are reported")
        if "running" in entry and not isinstance(entry["running"], bool):
            errors.append(f"{where}.running must be a boolean")
        if "state" in entry and entry["state"] not in ("running", "stopped", "failed"):
            errors.append(f"{where}.state {entry['state']!r} is invalid")
        if "stateReason" in entry and not isinstance(entry["stateReason"], str):
            errors.append(f"{where}.stateReason must be a string")
        health = entry.get("health", {})
        if not isinstance(health, Mapping):
            errors.append(f"{where}.health must be an object")
        else:
            errors += [f"{where}.health.{k} is not allowed" for k in health
                       if k not in ("cpu", "mem", "disk", "temp")]
            cpu = health.get("cpu")
            if "cpu" in health and (not isinstance(cpu, list) or not cpu
                                    or not all(_number(c) for c in cpu)):
                errors.append(f"{where}.health.cpu must hold at least 1 number")
            for key in ("mem", "disk"):
                if key in health and not _number(health[key]):
                    errors.append(f"{where}.health.{key} must be a number")
        if "alerts" in entry and not isinstance(entry["alerts"], Mapping):
            errors.append(f"{where}.alerts must be an object")
        for event, alert in (entry.get("alerts") or {}).items():
            values = alert.values() if isinstance(alert, Mapping) and "value" not in alert \
                else [alert]
            for a in values:
                if not isinstance(a, Mapping) or not _number(a.get("value")):
                    errors.append(f"{where}.alerts[{event!r}] value must be a number")
        for key in ("alerts_hash", "reconfig"):
            if key in entry and not isinstance(entry[key], str):
                errors.append(f"{where}.{key} must be a string")
        if "bgp" in entry:
            errors += validate_bgp(entry["bgp"], f"{where}.bgp")
    return errors


_BGP_TOP = {"routerId": str, "as": "number", "failedPeers": "number",
            "displayedPeers": "number", "totalPeers": "number", "peers": Mapping}
_BGP_PEER = {"remoteAs": "number", "msgRcvd": "number", "msgSent": "number",
             "peerUptime": str, "peerUptimeMsec": "number", "pfxRcd": "number",
             "pfxSnt": "number", "state": str, "peerState": str}


def validate_bgp(bgp: Any, where: str = "bgp") -> list[str]:
    """The `bgp` object of stats and of get-bgp-status (10.2, 12.6): `{}` or exactly the
    listed keys with their types, peers keyed by IPv4 address; unknown keys rejected."""
    if not isinstance(bgp, Mapping):
        return [f"{where} must be an object"]
    if not bgp:
        return []
    errors = [f"{where}.{k} is not allowed" for k in bgp if k not in _BGP_TOP]
    errors += _typed(bgp, _BGP_TOP, where)
    for ip, peer in (bgp.get("peers") or {}).items():
        at = f"{where}.peers[{ip!r}]"
        if not _ipv4(ip):
            errors.append(f"{at}: the key must be an IPv4 address")
        if not isinstance(peer, Mapping):
            errors.append(f"{at} must be an object")
            continue
        errors += [f"{at}.{k} is not allowed" for k in peer if k not in _BGP_PEER]
        errors += _typed(peer, _BGP_PEER, at)
    return errors


def _ipv4(text: Any) -> bool:
    try:
        IPv4Address(str(text))
    except ValueError:
        return False
    return True


def _typed(obj: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> list[str]:
    errors = []
    for key, kind in spec.items():
        if key not in obj:
            continue  # Joi keys are optional; present ones must have their type
        ok = _number(obj[key]) if kind == "number" else isinstance(obj[key], kind)
        if not ok:
            name = kind if isinstance(kind, str) else kind.__name__
            errors.append(f"{where}.{key} must be a {name}")
    return errors


def validate_reply(doc: Any) -> list[str]:
    """The reply envelope: seq, and ok as the integer 1 or 0."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("seq"), str):
        return ["reply without seq (dropped)"]
    msg = doc.get("msg")
    if not isinstance(msg, Mapping) or msg.get("ok") not in (0, 1) or \
            isinstance(msg.get("ok"), bool):
        return ["msg.ok must be the integer 1 or 0"]
    if msg.get("ok") == 1 and not isinstance(msg.get("router-cfg-hash"), str):
        return ["ok:1 reply without router-cfg-hash"]
    return []


def validate_registration(form: Mapping[str, str]) -> tuple[int, str]:
    """What routes/connect.js answers for a registration form: (status, error text)."""
    version = form.get("fwagent_version", "")
    m = re.match(r"^([0-9]{1,3})\.([0-9]{1,3})(\.[0-9]{1,3})?$", version)
    if not m:
        return 400, "Invalid device version"
    if int(m.group(1)) > 6:
        return 400, "Device version too high"
    if int(m.group(1)) < 5:
        return 403, "Device version too low"
    if not re.match(r"^[a-f0-9-]{1,50}$", form.get("machine_id", ""), re.I):
        return 408, "machine_id is invalid"
    if not re.match(r"^[a-z0-9-_.]{1,253}$", form.get("machine_name", "")):
        return 408, "machine_name is invalid"
    try:
        interfaces = json.loads(form.get("interfaces", ""))
    except ValueError:
        return 500, "Unexpected token in JSON (interfaces)"
    if not isinstance(interfaces, list) or not interfaces:
        return 500, "Device without interfaces is not allowed"
    for text_field in ("cpuInfo", "distro"):
        if text_field in form:
            text = form[text_field].replace("'", '"').replace("False", "false")
            text = text.replace("True", "true")
            try:
                json.loads(text)
            except ValueError:
                return 500, f"Unexpected token in JSON ({text_field})"
    usable = [i for i in interfaces if isinstance(i, Mapping)
              and not any("devId" in e for e in validate_interface(i))]
    if not usable:
        return 500, "The interfaces are not supported"
    for itf in usable:
        problems = validate_interface(itf)
        if problems:
            return 408, "; ".join(problems)
    return 200, ""
