"""The device configuration as flexiManage sends it, kept like flexiagent's config DB.

flexiManage puts the whole device configuration in every `sync-device` and
bundles interface, route and policy changes with tunnel changes in `aggregated`
(protocol reference, sections 6, 7, 16). A peering device applies what it
implements (peer tunnels) and records everything else verbatim, one item per
interface `dev_id`, per route, per tunnel id, and single items for ospf,
routing-bgp, vxlan-config, notifications-config, multilink-policy and so on, so
that `sync-device` can be diffed and `get-device-config` answered.

Semantics (flexiagent's configuration DB): `add-X` stores (an identical item is a
no-op), `remove-X` of a missing item and `modify-X` of a missing item are no-ops,
`modify-X` merges into the stored item. Only what cannot be keyed is refused.
Pure: no I/O; `agent.jobs.cfgstore` persists the items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.jobs.messages import (
    CONFIG_ITEMS,
    CONFIG_MESSAGES,
    ITEMS,
    ROUTER_MESSAGES,
    START_ROUTER,
    STOP_ROUTER,
)
from agent.jobs.validation import Problem

# item -> the params field(s) that identify one item of that kind (None: a singleton)
KEYS: dict[str, tuple[str, ...] | None] = {i.name: i.key for i in CONFIG_ITEMS}
MODIFIABLE = frozenset(i.name for i in CONFIG_ITEMS if i.modifiable)
ROUTER = ROUTER_MESSAGES

# flexiagent's application order of add-X inside one request (removes run in reverse)
ADD_ORDER = tuple(i.name for i in CONFIG_ITEMS)
_RANK = {item: i for i, item in enumerate(ADD_ORDER)}


@dataclass(frozen=True)
class ConfigRequest:
    """One configuration request: `verb` add|remove|modify (or start/stop for the router)."""

    message: str
    verb: str
    item: str  # "" for start-router / stop-router
    key: str  # the item's key in the DB, "" for start/stop-router
    params: Any
    original: Mapping[str, Any]  # the request as received
    fld: str = "params"  # where its params are in the job, for messages


def split_message(message: str) -> tuple[str, str] | None:
    """("add", "route") for "add-route"; None for a name outside the configuration set."""
    verb, sep, item = message.partition("-")
    if not sep or item not in KEYS or verb not in ("add", "remove", "modify"):
        return None
    if verb == "modify" and item not in MODIFIABLE:
        return None
    return verb, item


def is_config_message(message: str) -> bool:
    return message in CONFIG_MESSAGES


def _key_part(value: Any) -> str:
    if isinstance(value, float) and value == int(value):
        value = int(value)
    return "" if value is None else str(value)


def item_key(item: str, params: Any, fld: str = "params") -> tuple[str, list[Problem]]:
    """The DB key of one item (e.g. ``tunnel:7``, ``route:10.0.0.0/24:10.100.0.17::``)."""
    fields = KEYS[item]
    if fields is None:
        return item, []
    if not isinstance(params, Mapping):
        return "", [Problem(fld, "(not an object)", f"{item} params must be an object",
                            f"an object with {', '.join(ITEMS[item].required or fields)}")]
    problems = []
    for name in ITEMS[item].required:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            problems.append(Problem(f"{fld}.{name}", "(missing or not a scalar)",
                                    f"identifies the {item}", "a non-empty string or number"))
    if problems:
        return "", problems
    if item == "tunnel":
        raw = params["tunnel-id"]
        try:
            return f"tunnel:{int(raw)}", []
        except (TypeError, ValueError):
            return "", [Problem(f"{fld}.tunnel-id", "(not a number)", "identifies the tunnel",
                                "an integer")]
    return item + ":" + ":".join(_key_part(params.get(name)) for name in fields), []


def parse_request(message: str, params: Any, original: Mapping[str, Any],
                  fld: str = "params") -> tuple[ConfigRequest | None, list[Problem]]:
    """Key one configuration request; problems when it cannot be keyed."""
    if message in ROUTER:
        if params is not None and not isinstance(params, Mapping):
            return None, [Problem(fld, "(not an object)", f"{message} params must be an object",
                                  "an object or no params")]
        return ConfigRequest(message, message.split("-")[0], "", "", params, original, fld), []
    parts = split_message(message)
    assert parts is not None
    verb, item = parts
    if verb == "add" and not isinstance(params, Mapping):
        return None, [Problem(fld, "(not an object)", f"{message} params must be an object",
                              "an object")]
    key, problems = item_key(item, params if params is not None else {}, fld)
    if problems:
        return None, problems
    return ConfigRequest(message, verb, item, key, params, original, fld), []


def application_order(requests: Sequence[ConfigRequest]) -> list[ConfigRequest]:
    """flexiagent's order: stop-router, removes (reverse table order), adds, modifies,
    start-router; the relative order of requests of one kind is kept."""
    def rank(r: ConfigRequest) -> tuple[int, int]:
        if r.message == STOP_ROUTER:
            return (0, 0)
        if r.verb == "remove":
            return (1, -_RANK[r.item])
        if r.verb == "add":
            return (2, _RANK[r.item])
        if r.verb == "modify":
            return (3, _RANK[r.item])
        return (4, 0)
    return sorted(requests, key=rank)


def merge(stored: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """`modify-X` semantics: top-level keys replace, nested objects merge one level, so a
    modify-tunnel without `peer.urls` keeps the stored urls."""
    out = dict(stored)
    for key, value in change.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = {**old, **value}
        else:
            out[key] = value
    return out


Items = dict[str, tuple[str, Any]]  # key -> (add-message, params)


def apply_requests(items: Items, requests: Sequence[ConfigRequest]) -> Items:
    """The stored items after `requests` (already in application order)."""
    new = dict(items)
    for r in requests:
        if r.message == START_ROUTER:
            interfaces = r.params.get("interfaces") if isinstance(r.params, Mapping) else None
            for itf in interfaces if isinstance(interfaces, list) else []:
                key, problems = item_key("interface", itf)
                if not problems:
                    new[key] = ("add-interface", itf)
            continue
        if not r.item:
            continue
        if r.verb == "add":
            new[r.key] = (f"add-{r.item}", r.params)
        elif r.verb == "remove":
            new.pop(r.key, None)
        elif r.key in new and isinstance(r.params, Mapping):
            message, stored = new[r.key]
            new[r.key] = (message, merge(stored if isinstance(stored, Mapping) else {}, r.params))
    return new


def recorded(items: Items) -> list[dict[str, Any]]:
    """`[{message, params}]` in flexiagent's add order (the get-device-config answer)."""
    ordered = sorted(items.items(), key=lambda kv: (_RANK.get(kv[1][0][4:], 99), kv[0]))
    return [{"message": message, "params": params} for _, (message, params) in ordered]
