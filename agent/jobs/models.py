"""pydantic models of the controller's job params, with flexiManage's field names.

These models check only the shape of a message: field presence and JSON types.
Meaning (address formats, ranges, vocabularies, crypto combinations) is checked
by `agent.jobs.validation`, which turns these models into a `PeerSpec`.

Type rules, matching what flexiManage actually sends:
- integers may arrive as JSON numbers or as strings of digits (ports always come
  as strings, `tunnel-id` sometimes does); booleans and floats are not integers;
- strings must be strings, booleans must be booleans;
- unknown fields are ignored (the controller sends many the agent has no use for).

The PSK is converted to `Secret` by the model itself, so a parsed model never
holds it as a plain string, and `hide_input_in_errors` keeps pydantic's own
error text free of input values. Callers must still never render pydantic's
`errors()` `input` entries for the PSK path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, Strict
from pydantic_core import PydanticCustomError

from agent.secret import Secret

_DIGITS = re.compile(r"-?[0-9]{1,12}")


def _wire_int(value: object) -> int:
    if isinstance(value, bool):  # bool is an int subclass; the controller never means it
        raise PydanticCustomError("wire_int", "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise PydanticCustomError("wire_int", "must be an integer")


def _wire_name(value: object) -> str:
    """Identifiers that flexiManage sends as either a number or a string (ospf-area)."""
    if isinstance(value, bool):
        raise PydanticCustomError("wire_name", "must be a string or an integer")
    if isinstance(value, int | str):
        return str(value)
    raise PydanticCustomError("wire_name", "must be a string or an integer")


def _number_text(value: object) -> str:
    """A number sent as a JSON number or as a string ("100", 100, 10.5) -> its text."""
    if isinstance(value, bool):
        raise PydanticCustomError("wire_number", "must be a number or a numeric string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = getattr(value, "text", None)
        return text if isinstance(text, str) else repr(value)
    if isinstance(value, str):
        return value.strip()
    raise PydanticCustomError("wire_number", "must be a number or a numeric string")


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    raise PydanticCustomError("psk_type", "must be a string")


WireInt = Annotated[int, BeforeValidator(_wire_int)]
WireStr = Annotated[str, Strict()]
WireBool = Annotated[bool, Strict()]
WireName = Annotated[str, BeforeValidator(_wire_name)]
WireNumberText = Annotated[str, BeforeValidator(_number_text)]
SecretStr = Annotated[Secret, PlainValidator(_to_secret)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
        validate_by_alias=True,
        validate_by_name=False,
    )


class MultilinkParams(WireModel):
    labels: list[WireStr] = Field(default_factory=list)


class PeerParams(WireModel):
    """`add-tunnel` `peer`: the in-tunnel addressing, routing and monitoring targets."""

    addr: WireStr
    routing: WireStr = "ospf"
    mtu: WireInt | None = None
    tcp_mss_clamp: WireInt | None = Field(default=None, alias="tcp-mss-clamp")
    # flexiManage stores the cost in a String field: "100", also "10.5" or "70000"
    ospf_cost: WireNumberText | None = Field(default=None, alias="ospf-cost")
    ospf_area: WireName | None = Field(default=None, alias="ospf-area")
    multilink: MultilinkParams | None = None
    urls: list[WireStr] = Field(default_factory=list)
    ips: list[WireStr] = Field(default_factory=list)


class TransformParams(WireModel):
    """`ikev2.ike` / `ikev2.esp`; `dh-group` is empty for ESP on the wire."""

    crypto_alg: WireStr = Field(alias="crypto-alg")
    integ_alg: WireStr = Field(alias="integ-alg")
    dh_group: WireStr = Field(default="", alias="dh-group")
    key_size: WireInt | None = Field(default=None, alias="key-size")


class SelectorParams(WireModel):
    protocol: WireStr
    start_port: WireInt = Field(alias="start-port")
    end_port: WireInt = Field(alias="end-port")
    start_addr: WireStr = Field(alias="start-addr")
    end_addr: WireStr = Field(alias="end-addr")


class Ikev2Params(WireModel):
    role: WireStr
    mode: WireStr
    psk: SecretStr
    local_id_type: WireStr = Field(alias="local-device-id-type")
    local_id: WireStr = Field(alias="local-device-id")
    remote_id_type: WireStr = Field(alias="remote-device-id-type")
    remote_id: WireStr = Field(alias="remote-device-id")
    # flexiManage's peer defaults (sessionLifeTime 3600, ikeLifeTime 86400) when absent.
    lifetime: WireInt = 3600
    ike_lifetime: WireInt = 86400
    pfs: WireBool = False
    ike: TransformParams
    esp: TransformParams
    # Absent selectors mean a route-based connection (full range), as on older controllers.
    local_ts: SelectorParams | None = Field(default=None, alias="local-ts")
    remote_ts: SelectorParams | None = Field(default=None, alias="remote-ts")


class AddTunnelParams(WireModel):
    """`add-tunnel` params of a peer tunnel (`peer` + `ikev2`)."""

    encryption_mode: WireStr = Field(alias="encryption-mode")
    dev_id: WireStr
    tunnel_id: WireInt = Field(alias="tunnel-id")
    src: WireStr
    # The org's VXLAN port; meaningless for ipip peer tunnels but range-checked when sent.
    src_port: WireInt | None = Field(default=None, alias="srcPort")
    dst: WireStr
    peer: PeerParams
    ikev2: Ikev2Params


class RemoveTunnelParams(WireModel):
    tunnel_id: WireInt = Field(alias="tunnel-id")


class MonitorTargetsParams(WireModel):
    """A list left out by the REST caller is absent: the stored value is kept."""

    urls: list[WireStr] | None = None
    ips: list[WireStr] | None = None


class ModifyTunnelParams(WireModel):
    """Shape 1: `peer` with new monitoring targets. Shape 2: `notificationsSettings`
    (per-tunnel alert thresholds) and no `peer`."""

    tunnel_id: WireInt = Field(alias="tunnel-id")
    peer: MonitorTargetsParams | None = None
    notifications: dict[str, Any] | None = Field(default=None, alias="notificationsSettings")


def describe_type(value: object) -> str:
    """A JSON-ish name for a value's type, for messages that must not show the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
