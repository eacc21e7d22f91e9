"""Every controller message the agent knows and how it is handled: the one registry.

The link reads which messages are queries (answered while a job runs) and which
are direct (`jobid: ""`, the device tabs); the dispatcher which are configuration,
which advance the hash chain and which are refused with a reason; the metrics
which get a label value of their own. A message outside the registry is refused
by the dispatcher as unsupported. Names are flexiManage's (protocol reference,
sections 6-16). Pure data, no I/O.

Configuration messages are generated from the configuration items: `add-X` and
`remove-X` for every item, `modify-X` for the modifiable ones, plus start-router
and stop-router; flexiagent's configuration DB semantics for the items
(their keys, their order) are in `agent.jobs.devcfg`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Handling(enum.Enum):
    QUERY = "query"  # answered concurrently with a running job, never journaled
    DIRECT = "direct"  # a device tab's request (jobid ""): the DirectHandler answers it
    CONFIG = "config"  # configuration: recorded, peer tunnels applied (agent.jobs.devcfg)
    JOB = "job"  # another job the dispatcher runs (aggregated, sync-device, reset-device)
    REFUSED = "refused"  # a job this device answers ok:0 with `refusal`


@dataclass(frozen=True)
class MessageKind:
    name: str
    handling: Handling
    signed: bool = False  # its ok:1 reply advances the configuration hash chain
    metric: bool = False  # counted under its own name in the job metrics, else "other"
    refusal: str = ""  # the ok:0 text of a REFUSED job
    reply_entity: str = "agentReply"


@dataclass(frozen=True)
class ConfigItem:
    """One kind of configuration item flexiManage sends (`add-<name>`, ...)."""

    name: str
    key: tuple[str, ...] | None  # params fields that identify one item; None: a singleton
    required: tuple[str, ...] = ()  # key fields that must be present to key an item
    modifiable: bool = False  # flexiManage sends modify-<name>


# flexiagent's application order of add-X inside one request (removes run in reverse)
CONFIG_ITEMS: tuple[ConfigItem, ...] = (
    ConfigItem("ospf", None),
    ConfigItem("routing-filter", ("name",), ("name",)),
    ConfigItem("routing-bgp", None, modifiable=True),
    # signed like the rest: flexiManage 6.3 sends it, flexiagent 6.3.25's sign set lacks it
    ConfigItem("routing-general", None),
    ConfigItem("switch", ("addr",), ("addr",)),
    ConfigItem("interface", ("dev_id",), ("dev_id",), modifiable=True),
    ConfigItem("lte", ("dev_id",), ("dev_id",)),
    ConfigItem("vrrp-group", ("virtualRouterId",), ("virtualRouterId",)),
    ConfigItem("vxlan-config", None, modifiable=True),
    ConfigItem("tunnel", ("tunnel-id",), ("tunnel-id",), modifiable=True),
    ConfigItem("route", ("addr", "via", "dev_id", "metric"), ("addr", "via")),
    ConfigItem("dhcp-config", ("interface",), ("interface",)),
    ConfigItem("application", None),
    ConfigItem("multilink-policy", None),
    ConfigItem("firewall-policy", None),
    ConfigItem("lan-nat-policy", None),
    ConfigItem("qos-traffic-map", None),
    ConfigItem("qos-policy", None),
    ConfigItem("notifications-config", None),
    ConfigItem("app-install", ("identifier",)),
    ConfigItem("app-config", ("identifier",)),
)
ITEMS: Mapping[str, ConfigItem] = MappingProxyType({i.name: i for i in CONFIG_ITEMS})

GET_DEVICE_INFO = "get-device-info"
GET_DEVICE_STATS = "get-device-stats"
EXEC_TIMEOUT = "exec_timeout"
GET_DEVICE_LOGS = "get-device-logs"
GET_DEVICE_CONFIG = "get-device-config"
GET_DEVICE_OS_ROUTES = "get-device-os-routes"
GET_DEVICE_PACKET_TRACES = "get-device-packet-traces"
GET_BGP_STATUS = "get-bgp-status"
AGGREGATED = "aggregated"
SYNC_DEVICE = "sync-device"
RESET_DEVICE = "reset-device"
START_ROUTER = "start-router"
STOP_ROUTER = "stop-router"

# The peer tunnels' own messages: what an operator of a peering device watches.
_PEERING = frozenset({"add-tunnel", "remove-tunnel", "modify-tunnel"})


def _config_kinds() -> list[MessageKind]:
    names = [START_ROUTER, STOP_ROUTER]
    for item in CONFIG_ITEMS:
        names += [f"add-{item.name}", f"remove-{item.name}"]
        if item.modifiable:
            names.append(f"modify-{item.name}")
    return [MessageKind(n, Handling.CONFIG, signed=True, metric=n in _PEERING) for n in names]


def _refused(name: str, why: str) -> MessageKind:
    return MessageKind(name, Handling.REFUSED, refusal=why)


_KINDS: tuple[MessageKind, ...] = (
    MessageKind(GET_DEVICE_INFO, Handling.QUERY, metric=True),
    MessageKind(GET_DEVICE_STATS, Handling.QUERY, metric=True),
    # The device tabs (issue 17). exec_timeout also arrives as a job (flexiManage's
    # upgrade scheduler) and is answered as `osReply`, as flexiagent does.
    MessageKind(EXEC_TIMEOUT, Handling.DIRECT, reply_entity="osReply"),
    MessageKind(GET_DEVICE_LOGS, Handling.DIRECT),
    MessageKind(GET_DEVICE_CONFIG, Handling.DIRECT),
    MessageKind(GET_DEVICE_OS_ROUTES, Handling.DIRECT),
    MessageKind(GET_DEVICE_PACKET_TRACES, Handling.DIRECT),
    MessageKind(GET_BGP_STATUS, Handling.DIRECT),
    # aggregated is in flexiagent's "sign" set; sync-device resets the chain instead.
    MessageKind(AGGREGATED, Handling.JOB, signed=True, metric=True),
    MessageKind(SYNC_DEVICE, Handling.JOB, metric=True),
    MessageKind(RESET_DEVICE, Handling.JOB),
    *_config_kinds(),
    # Jobs that are not configuration, with flexiagent-compatible answers (section 15).
    _refused("upgrade-device-sw",
             "software is managed out of band on this device (package manager)"),
    _refused("upgrade-linux-sw", "the operating system is managed out of band on this device"),
    _refused("get-device-certificate", "IKEv2 certificates are not supported: peers use PSK"),
    _refused("set-cpu-info", "CPU allocation is fixed by VPP's startup.conf on this device"),
    _refused("modify-lte-pin", "this device has no LTE interface"),
    _refused("reset-lte", "this device has no LTE interface"),
)
KINDS: Mapping[str, MessageKind] = MappingProxyType({k.name: k for k in _KINDS})


def _named(handling: Handling) -> frozenset[str]:
    return frozenset(k.name for k in _KINDS if k.handling is handling)


QUERY_MESSAGES = _named(Handling.QUERY)
DIRECT_MESSAGES = _named(Handling.DIRECT)
CONFIG_MESSAGES = _named(Handling.CONFIG)
ROUTER_MESSAGES = frozenset({START_ROUTER, STOP_ROUTER})
SIGNED: frozenset[str] = frozenset(k.name for k in _KINDS if k.signed)
REFUSED: Mapping[str, str] = MappingProxyType(
    {k.name: k.refusal for k in _KINDS if k.handling is Handling.REFUSED})
# Label values of the job metrics (any other message is "other": bounded cardinality)
METRIC_MESSAGES: tuple[str, ...] = tuple(k.name for k in _KINDS if k.metric)


def reply_entity(message: str) -> str:
    """flexiagent answers exec_timeout as `osReply`, everything else as `agentReply`."""
    found = KINDS.get(message)
    return found.reply_entity if found is not None else "agentReply"
