"""pydantic shape errors (missing fields, wrong JSON types) -> problems."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agent.jobs import vocab
from agent.jobs.models import describe_type
from agent.jobs.validation.policy import PSK_ALLOWED, ROLES, TUNNEL_ID_MAX, TUNNEL_ID_MIN
from agent.jobs.validation.problems import Problems, Shown, render

_TYPE_ERRORS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "wire_int": ("not an integer", "an integer (JSON number or string of digits)"),
        "string_type": ("not a string", "a string"),
        "psk_type": ("not a string", PSK_ALLOWED),
        "bool_type": ("not a boolean", "true or false"),
        "model_type": ("not an object", "a JSON object"),
        "model_attributes_type": ("not an object", "a JSON object"),
        "dict_type": ("not an object", "a JSON object"),
        "list_type": ("not a list", "a JSON list"),
        "wire_name": ("not a string or an integer", "a string or an integer"),
    }
)

_REQUIRED_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "encryption-mode": "ikev2",
        "dev_id": "the dev_id of the WAN interface",
        "tunnel-id": f"{TUNNEL_ID_MIN}-{TUNNEL_ID_MAX}",
        "src": "the IPv4 address of dev_id",
        "dst": "the peer's public IPv4 address",
        "peer.addr": "an IPv4 /31 interface address such as 10.100.0.16/31",
        "ikev2": "an object with the IKEv2 parameters",
        "ikev2.role": ", ".join(ROLES),
        "ikev2.mode": "psk",
        "ikev2.psk": PSK_ALLOWED,
        "ikev2.local-device-id-type": ", ".join(vocab.ID_TYPE_NAMES),
        "ikev2.remote-device-id-type": ", ".join(vocab.ID_TYPE_NAMES),
        "ikev2.local-device-id": "an identity matching local-device-id-type",
        "ikev2.remote-device-id": "an identity matching remote-device-id-type",
        "ikev2.ike": "an object with crypto-alg, integ-alg, dh-group, key-size",
        "ikev2.esp": "an object with crypto-alg, integ-alg, dh-group, key-size",
    }
)
_SECRET_PATHS = frozenset({"ikev2.psk"})
_CONTAINER_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type", "list_type"})
_INDEX = re.compile(r"\[\d+\]")


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shape_problems(exc: ValidationError, p: Problems) -> None:
    for err in exc.errors(include_url=False):
        path = _loc_path(err["loc"])
        generic = _INDEX.sub("[]", path)
        if err["type"] == "missing":
            # `input` of a missing-field error is the whole parent object: never shown.
            p.add(path, Shown("(missing)"), "required field", _REQUIRED_HINTS.get(generic, ""))
            continue
        reason, allowed = _TYPE_ERRORS.get(err["type"], (str(err["msg"]), ""))
        value = err.get("input")
        # Where an object or list belongs, a wrong value may be anything (even the PSK
        # itself, if `ikev2` were a string): show only its type there, as for the PSK.
        hide = generic in _SECRET_PATHS or err["type"] in _CONTAINER_ERRORS
        shown = describe_type(value) if hide else render(value)
        p.add(path, Shown(shown), reason, allowed)


_M = TypeVar("_M", bound=BaseModel)


def parse(model: type[_M], params: object, p: Problems) -> _M | None:
    if not isinstance(params, Mapping):
        p.add("params", Shown(describe_type(params)), "not an object", "a JSON object")
        return None
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        _shape_problems(exc, p)
    return None
