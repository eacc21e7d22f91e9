"""The agent's configuration: a TOML file, overridable from the environment.

`peering-agent run --config FILE` calls `load_config(FILE, os.environ)` once at
start; everything downstream receives the resulting (frozen) `AgentConfig`.

Environment overrides
---------------------
``PEERING_AGENT_<SECTION>__<KEY>=value`` overrides ``[section] key`` (names are
case-insensitive, the separator is a double underscore because keys themselves
contain single underscores), e.g. ``PEERING_AGENT_CONTROLLER__URL=wss://x`` or
``PEERING_AGENT_CONTROLLER__ALLOW_INSECURE=true``. Values are text and are
converted like the TOML value would be (``true``/``false``, numbers).
The ``[interfaces]`` table is keyed by dev_ids that cannot be spelled in an
environment variable name, so ``PEERING_AGENT_INTERFACES`` takes a JSON object
that replaces the whole table. A ``PEERING_AGENT_*__*`` variable that names no
setting is an error (a typo must not be silently ignored); other
``PEERING_AGENT_*`` variables are left alone.

Every error names the key (and the variable when it came from the environment),
so a bad configuration stops the agent at start with an actionable message.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

ENV_PREFIX = "PEERING_AGENT_"

_VERSION_RE = re.compile(r"^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$")
_VPP_VERSION_RE = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?(-[a-z0-9]{1,10})?$", re.I)
_PLAIN_VERSION_RE = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?$")
# flexiManage 1309daf2 (backend/models/validators.js validateMachineID) registers only
# these; anything else is refused at registration (HTTP 408)
MACHINE_ID_RE = re.compile(r"^[A-Fa-f0-9-]{1,50}$")


class ConfigError(Exception):
    """An invalid configuration; `str()` is one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControllerConfig(_Section):
    url: str = Field(
        default="wss://manage.example.net",
        description="controller base URL; wss:// (TLS verified), ws:// only with allow_insecure",
    )
    machine_id: str = Field(
        default="",
        description="device machine id in the websocket URL; empty: read /etc/machine-id",
    )
    token_file: Path = Field(
        default=Path("/etc/peering-agent/device.token"),
        description="device token written by `peering-agent register` (mode 0600)",
    )
    ca_file: str = Field(
        default="", description="optional extra CA bundle (PEM) trusted for the controller"
    )
    allow_insecure: bool = Field(
        default=False,
        description="allow plain ws:// / http:// (lab use only; the token travels in clear)",
    )
    fwagent_version: str = Field(
        default="6.3.0",
        description="the agent version, used everywhere: User-Agent, registration, "
        "get-device-info device/agent/router (flexiManage: major 5-6; 6.3 enables "
        "notifications and per-tunnel thresholds)",
    )
    vpp_version: str = Field(
        default="26.06",
        description="VPP version reported while VPP has not answered show_version",
    )
    frr_version: str = Field(
        default="8.4.4",
        description="FRR version reported when `vtysh --version` is unavailable "
        "(flexiManage refuses an empty one)",
    )
    origin: str = Field(
        default="",
        description="Origin header of the websocket handshake; empty: https://<controller host>",
    )
    connect_timeout: float = Field(
        default=15.0, gt=0, description="seconds for TCP+TLS+websocket handshake"
    )
    backoff_min: float = Field(
        default=1.0, gt=0, description="first reconnect delay bound, seconds"
    )
    backoff_max: float = Field(
        default=60.0, gt=0, description="reconnect delay cap, seconds (full jitter below it)"
    )
    retry_quick_min: float = Field(
        default=5.0, gt=0, description="retry after HTTP 403 (not approved yet) or a local "
        "error (DNS, TCP, TLS, timeout): random delay from min to max seconds",
    )
    retry_quick_max: float = Field(default=15.0, gt=0, description="see retry_quick_min")
    retry_slow_min: float = Field(
        default=50.0, gt=0, description="retry after any other handshake status "
        "(400, 402, 404, 500...): random delay from min to max seconds",
    )
    retry_slow_max: float = Field(default=70.0, gt=0, description="see retry_slow_min")
    ping_interval: float = Field(
        default=20.0, gt=0, description="agent keepalive ping interval, seconds"
    )
    silence_timeout: float = Field(
        default=80.0,
        gt=0,
        description="connection with no inbound traffic this long is dead, seconds",
    )
    close_timeout: float = Field(
        default=5.0, gt=0, description="websocket closing handshake bound, seconds"
    )
    max_frame_size: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="largest accepted incoming message, bytes (a sync-device of 5000 peers "
        "is about 5.4 MiB)",
    )
    job_timeout: float = Field(
        default=170.0,
        gt=0,
        description="a job running longer is cancelled and fails (controller gives up at 180 s)",
    )
    query_timeout: float = Field(
        default=20.0,
        gt=0,
        description="bound for answering get-device-info / get-device-stats, seconds",
    )
    register_timeout: float = Field(
        default=30.0, gt=0, description="registration HTTP request bound, seconds"
    )
    journal_keep: int = Field(
        default=10000, ge=100, description="job outcomes kept in the journal (oldest pruned)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.rstrip("/")
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("wss", "ws", "https", "http"):
            raise PydanticCustomError("url", "must start with wss:// (or ws:// for lab use)")
        if not rest or "?" in rest or "#" in rest:
            raise PydanticCustomError("url", "must be scheme://host[:port][/path], no query")
        return v

    @field_validator("machine_id")
    @classmethod
    def _machine_id(cls, v: str) -> str:
        if v and not MACHINE_ID_RE.match(v):
            raise PydanticCustomError(
                "machine_id", "must be 1-50 hex digits or '-' (what flexiManage registers)"
            )
        return v

    @field_validator("fwagent_version")
    @classmethod
    def _fwagent_version(cls, v: str) -> str:
        m = _VERSION_RE.match(v)
        if not m:
            raise PydanticCustomError("version", "must be X.Y.Z, e.g. 6.3.0")
        if not 5 <= int(m.group(1)) <= 6:
            raise PydanticCustomError(
                "version", "flexiManage accepts fwagent majors 5 and 6 only"
            )
        return v

    @field_validator("vpp_version")
    @classmethod
    def _vpp_version(cls, v: str) -> str:
        if not _VPP_VERSION_RE.match(v):
            raise PydanticCustomError("version", "must be X.Y[.Z][-suffix], e.g. 26.06")
        return v

    @field_validator("frr_version")
    @classmethod
    def _frr_version(cls, v: str) -> str:
        if not _PLAIN_VERSION_RE.match(v):
            raise PydanticCustomError("version", "must be X.Y[.Z] without suffix, e.g. 8.4.4")
        return v

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s]+$", v):
            raise PydanticCustomError("origin", "must be an absolute URL such as https://host")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: str) -> str:
        if v and not Path(v).is_file():
            raise PydanticCustomError("ca_file", "file not found")
        return v

    @property
    def secure(self) -> bool:
        return self.url.startswith(("wss://", "https://"))

    @model_validator(mode="after")
    def _cross(self) -> ControllerConfig:
        if not self.secure and not self.allow_insecure:
            scheme = self.url.partition("://")[0]
            raise PydanticCustomError(
                "insecure",
                "controller.url: {scheme}:// requires controller.allow_insecure = true",
                {"scheme": scheme},
            )
        if self.backoff_min > self.backoff_max:
            raise PydanticCustomError(
                "backoff", "controller.backoff_min: must not exceed controller.backoff_max"
            )
        for kind in ("quick", "slow"):
            if getattr(self, f"retry_{kind}_min") > getattr(self, f"retry_{kind}_max"):
                raise PydanticCustomError(
                    "retry", "controller.retry_{kind}_min: must not exceed "
                    "controller.retry_{kind}_max", {"kind": kind})
        return self


class VppConfig(_Section):
    api_socket: Path = Field(default=Path("/run/vpp/api.sock"), description="VPP binary API socket")
    stats_socket: str = Field(
        default="/run/vpp/stats.sock",
        description="VPP stats segment socket (interface and tunnel rx/tx counters); "
        "empty: no counters",
    )
    call_timeout: float = Field(
        default=5.0, gt=0, description="bound for one VPP API call, seconds"
    )
    linux_cp: bool = Field(
        default=True,
        description="VPP runs linux-cp (needs /dev/vhost-net): each tunnel gets its Linux "
        "side peer<N> from the agent; false: no lcp step, peer<N> is provided by the host",
    )


class StateConfig(_Section):
    dir: Path = Field(
        default=Path("/var/lib/peering-agent"),
        description="persistent state (desired peers, job journal)",
    )
    recovery_grace: float = Field(
        default=600.0, gt=0,
        description="after a corrupt peers.sqlite was moved aside: seconds to wait for the "
        "controller's sync-device before removing the agent's objects from VPP",
    )


class SecurityConfig(_Section):
    allow_weak_crypto: bool = Field(
        default=False,
        description="accept weak transforms VPP implements (sha1-96, modp-768/1024/1536, "
        "ecp-192, the RFC 5114 groups 22 and 23); DES, 3DES and MD5 are always "
        "refused (VPP has none)",
    )
    psk_min_length: int = Field(
        default=8, ge=1, le=1024, description="shortest PSK accepted, bytes (flexiManage only "
        "requires a non-empty PSK without whitespace)"
    )


class MonitorConfig(_Section):
    interval: float = Field(default=1.0, gt=0, description="probe interval per target, seconds")
    timeout: float = Field(default=1.0, gt=0, description="a probe unanswered this long is lost")
    window: int = Field(default=30, ge=1, description="rounds per health window (rtt, drop "
                        "rate): a round is one probe of every target, lost when none answered")
    bind: Literal["device", "source"] = Field(
        default="device",
        description="probes leave through the tunnel's Linux interface (device) or from its "
        "/31 address (source; needs a Linux route into the tunnel)",
    )
    stats_period: float = Field(
        default=10.0, gt=0, description="seconds per get-device-stats history entry"
    )
    down_after: int = Field(default=3, ge=1, description="losses in a row, by every target, "
                            "that mark a tunnel down")
    up_after: int = Field(default=3, ge=1, description="consecutive replies from one target "
                          "that mark it up again")


class PeersConfig(_Section):
    sa_poll_interval: float = Field(default=2.0, gt=0, description="seconds between IKE SA "
                                    "state polls (VPP has no IKE events)")
    reinit_backoff_min: float = Field(default=2.0, gt=0, description="first delay between "
                                      "negotiation restarts after a failure, seconds (doubles "
                                      "each restart)")
    reinit_backoff_max: float = Field(default=60.0, gt=0, description="negotiation restart "
                                      "delay cap, seconds")
    sa_init_timeout: float = Field(default=30.0, gt=0, description="an initiation unanswered "
                                   "this long is down (no answer from the peer) and restarted; "
                                   "a lost SA is left to VPP's re-initiation this long")
    liveness_period: int = Field(default=10, ge=1, le=3600, description="seconds between VPP's "
                                 "IKE liveness (DPD) checks; one setting for all profiles")
    liveness_retries: int = Field(default=3, ge=1, le=100, description="unanswered liveness "
                                  "checks after which VPP drops the IKE SA")
    drift_check_interval: float = Field(
        default=30.0, gt=0, description="seconds between comparisons of VPP with the desired "
        "state; what changed behind the agent's back (a route, a profile, admin-down) is "
        "repaired, logged and reported to the controller (out of sync until its sync-device)")


class PolicyConfig(_Section):
    lan_interfaces: list[str] = Field(
        default=[], description="VPP interfaces whose received traffic multilink "
        "policies steer (ABF attachments); comma-separated in the environment")
    wan_interfaces: list[str] = Field(
        default=[], description="VPP WAN interfaces that rules with apply-on-wan-rx "
        "also attach to")
    period: float = Field(default=1.0, gt=0, description="seconds between re-decisions of "
                          "each rule's paths from tunnel health")
    hysteresis_rtt_ms: float = Field(default=30.0, ge=0, description="how much lower rtt "
                                     "another link needs before link-quality moves to it")
    hysteresis_drop_pct: float = Field(default=2.0, ge=0, description="how much lower drop "
                                       "(points) another link needs before link-quality moves")

    @field_validator("lan_interfaces", "wan_interfaces", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [n.strip() for n in v.split(",") if n.strip()]
        return v


class RoutingConfig(_Section):
    vtysh: str = Field(
        default="vtysh", description="FRR's vtysh (name or path); empty or not installed: "
        "routing messages are recorded, not applied")
    vty_socket: str = Field(
        default="", description="FRR's vty socket directory; empty: FRR's default")
    reconcile_period: float = Field(
        default=30.0, gt=0, description="seconds between re-applications of the recorded "
        "routing to FRR (an FRR restart loses it); no write when FRR holds it")


class AdminConfig(_Section):
    socket: Path = Field(
        default=Path("/run/peering-agent/admin.sock"),
        description="local admin socket used by peerctl",
    )


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="log level"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class MetricsConfig(_Section):
    listen: str = Field(
        default="", description="host:port for the metrics endpoint; empty disables it"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v:
            from agent.daemon.metrics import parse_listen

            try:
                parse_listen(v)
            except ValueError as e:
                raise PydanticCustomError("listen", f"invalid value {e}") from None
        return v


class RemoteConfig(_Section):
    allow: tuple[str, ...] = Field(
        default=(
            "vppctl show ...", "vppctl set logging class ikev2 level *", "vppctl clear logging",
            "swanctl --list-sas ...", "ip -br addr", "ip -br route", "ip -br link",
            "journalctl -u peering-agent -n <n>", "ping -c <n> -W 1 <ip>",
            "ping -c <n> -W 1 -I <name> <ip>", "vtysh -c 'show ...'",
        ),
        description="commands the controller's Command tab (exec_timeout) may run, never "
        "through a shell; `*` any one argument, `<n>` number, `<ip>` address, `<name>` "
        "interface-like name, `'show ...'` one argument of such words, a last `...` any "
        "further arguments; `vppctl` runs through VPP's API; `[]` refuses all",
    )
    output_max: int = Field(
        default=65536, ge=1024, le=8388608,
        description="characters of a command's output (and of its error text) in a reply; "
        "the rest is cut and the reply says so",
    )
    max_timeout: float = Field(
        default=90.0, gt=0, le=95.0,
        description="cap on exec_timeout's timeout, seconds (the controller gives up at 100 s)",
    )
    agent_log: str = Field(
        default="",
        description="file the Logs tab reads for `fwagent`; empty: the journal of "
        "peering-agent.service",
    )

    @field_validator("allow", mode="before")
    @classmethod
    def _allow_text(cls, v: Any) -> Any:
        if isinstance(v, str):  # from the environment: a JSON array
            try:
                return json.loads(v)
            except ValueError:
                raise PydanticCustomError("allow", "must be a JSON array of strings") from None
        return v

    @field_validator("allow")
    @classmethod
    def _allow(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from agent.remote.commands import parse_pattern

        for entry in v:
            try:
                parse_pattern(entry)
            except ValueError as e:
                raise PydanticCustomError("allow", "{problem}", {"problem": str(e)}) from None
        return v


class AgentConfig(_Section):
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    vpp: VppConfig = Field(default_factory=VppConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    interfaces: dict[str, str] = Field(
        default_factory=dict, description="dev_id (as the controller names it) -> VPP interface"
    )
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    peers: PeersConfig = Field(default_factory=PeersConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, v: dict[str, str]) -> dict[str, str]:
        for dev_id, name in v.items():
            if not dev_id or not name or len(dev_id) > 128 or len(name) > 63:
                raise PydanticCustomError(
                    "interfaces", "dev_id and interface name must be non-empty (name <= 63 chars)"
                )
        return v


_Overrides = tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]


def _env_overrides(env: Mapping[str, str]) -> _Overrides:
    """Collect overrides: ({section: {key: value}}, {"section.key": var}, problems)."""
    overrides: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    sections = AgentConfig.model_fields
    for var, value in sorted(env.items()):
        if not var.upper().startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        if rest == "interfaces":
            try:
                table = json.loads(value)
            except ValueError:
                table = None
            if not isinstance(table, dict):
                problems.append(f"interfaces (from {var}): must be a JSON object of dev_id -> name")
                continue
            overrides["interfaces"] = table
            origin["interfaces"] = var
            continue
        if "__" not in rest:
            continue  # not a setting (e.g. a variable of the service wrapper)
        section, key = rest.split("__", 1)
        model = sections.get(section)
        sub = model.annotation if model is not None else None
        if section == "interfaces" or not (isinstance(sub, type) and issubclass(sub, _Section)):
            problems.append(f"{var}: no configuration section [{section}]")
            continue
        if key not in sub.model_fields:
            problems.append(f"{var}: no setting {section}.{key}")
            continue
        overrides.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = var
    return overrides, origin, problems


def _format_errors(exc: ValidationError, origin: Mapping[str, str]) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if key in origin:
            key = f"{key} (from {origin[key]})"
        elif key.startswith("interfaces") and "interfaces" in origin:
            key = f"{key} (from {origin['interfaces']})"
        # cross-field rules name their keys themselves; their loc is only the section
        problems.append(msg if _names_own_key(msg) else f"{key}: {msg}")
    return problems


def _names_own_key(msg: str) -> bool:
    head = msg.split(":", 1)[0]
    return "." in head and " " not in head


def parse_config(data: Mapping[str, Any], env: Mapping[str, str]) -> AgentConfig:
    """Validate already-parsed TOML data with environment overrides applied."""
    overrides, origin, problems = _env_overrides(env)
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in overrides.items():
        if section == "interfaces":
            merged["interfaces"] = values
            continue
        base = merged.get(section)
        merged[section] = {**(base if isinstance(base, dict) else {}), **values}
    if problems:
        raise ConfigError(problems)
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def load_config(path: Path, env: Mapping[str, str]) -> AgentConfig:
    """Read FILE (TOML), apply `PEERING_AGENT_*` overrides, validate; raises ConfigError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read configuration: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data, env)


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    return repr(value)


def config_reference() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every setting, in file order, for the README."""
    rows: list[tuple[str, str, str]] = []
    for section, field in AgentConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, _Section):
            for key, f in sub.model_fields.items():
                rows.append((f"{section}.{key}", _default_text(f.default), f.description or ""))
        else:
            rows.append((section, "{}", field.description or ""))
    return rows


def config_reference_markdown() -> str:
    """The reference as a Markdown table (the README's configuration section)."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in config_reference():
        lines.append(f"| `{key}` | `{default}` | {meaning} |")
    return "\n".join(lines) + "\n"
