"""Device registration: `peering-agent register` (organisation token on stdin or
from ``--token-file``, never on the command line where `ps` would show it).

POSTs the device's facts with the organisation token to
``https://<server>/api/connect/register`` (form-urlencoded, flexiManage field
names and formats: `distro` and `cpuInfo` are dict texts, `interfaces` the JSON
array of interface entries flexiManage's interface schema accepts) and stores
the returned device token in ``controller.token_file``,
created 0600 under a temporary name and renamed into place, so the token is
never readable by anyone else, even briefly, and a crash leaves either the old
file or the new one.

The HTTP request uses urllib in a worker thread (no extra dependency); proxies
from the environment and redirects are not followed, so the token goes only to
the configured controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog

from agent.config import AgentConfig
from agent.jobs.info import cpu_facts, distro_facts, interface_entry
from agent.link.ident import (
    MACHINE_ID_FILE,
    registration_url,
    resolve_machine_id,
    ssl_context,
    user_agent,
)
from agent.secret import Secret
from agent.vpp.readers import WanFacts

log = structlog.get_logger(__name__)

MAX_RESPONSE = 1 << 20

# flexiManage's registration answers, worded for the operator.
_ERRORS: dict[int, str] = {
    400: "the controller refused this agent version (400): upgrade the agent or "
    "check controller.fwagent_version",
    401: "the organisation token is invalid (401): copy it again from the controller",
    402: "the organisation's device quota is reached (402): free a device slot",
    403: "the controller refused this agent version (403): upgrade the agent or "
    "check controller.fwagent_version",
    404: "the organisation token was not found (404): it may have been deleted",
    407: "a device with this machine id is already registered (407): delete it in the "
    "controller first, or keep using its existing token",
}


class RegistrationError(Exception):
    """Registration failed; the message is for the operator and holds no secret."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeviceFacts:
    """What the device tells the controller about itself at registration.

    The caller (the CLI) fills what only other parts of the agent know (VPP
    version, addresses, interfaces); `default_facts` supplies the rest.
    `distro` is ``{"version": "12", "codename": "bookworm"}``.
    """

    machine_name: str
    distro: dict[str, str]
    router_version: str = ""
    serial: str = "0"
    ip_list: list[str] = field(default_factory=list)
    default_route: str = ""
    default_dev: str = ""
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    cpu_info: dict[str, Any] = field(default_factory=dict)


def dict_text(value: dict[str, Any]) -> str:
    """The text flexiManage parses after replacing ' by " (Python's dict text, as
    flexiagent sends it); quotes inside values would break that, so they are dropped."""
    clean = {k: v.replace("'", "").replace('"', "") if isinstance(v, str) else v
             for k, v in value.items()}
    return str(clean)


_MACHINE_NAME_BAD = re.compile(r"[^a-z0-9._-]")


def machine_name(hostname: str) -> str:
    """flexiManage accepts ``[a-z0-9-_.]{1,253}``: lower-cased, others become '-'."""
    return (_MACHINE_NAME_BAD.sub("-", hostname.lower()) or "edge")[:253]


def configured_interfaces(cfg: AgentConfig) -> list[dict[str, Any]]:
    """Interface entries from the [interfaces] table alone (VPP not reachable)."""
    return [interface_entry(WanFacts(dev, name, "", 0, False, None, ""))
            for dev, name in sorted(cfg.interfaces.items())]


def default_facts(cfg: AgentConfig,
                  interfaces: list[dict[str, Any]] | None = None) -> DeviceFacts:
    """Facts knowable without VPP: host name, distribution, CPUs, configured interfaces."""
    entries = configured_interfaces(cfg) if interfaces is None else interfaces
    wan = next((e for e in entries if e.get("gateway")), None)
    return DeviceFacts(
        machine_name=machine_name(socket.gethostname()),
        distro=distro_facts(),
        ip_list=[e["IPv4"] for e in entries if e.get("IPv4")][:4],
        default_route=wan["gateway"] if wan else "",
        default_dev=wan["name"] if wan else "",
        interfaces=entries,
        cpu_info=cpu_facts(),
    )


@dataclass(frozen=True)
class Registration:
    server: str  # the server the controller told the device to use
    token_file: Path


def registration_form(
    cfg: AgentConfig, org_token: Secret, machine_id: str, facts: DeviceFacts
) -> dict[str, str]:
    """The form fields, exactly as flexiManage names them."""
    version = cfg.controller.fwagent_version
    return {
        "token": org_token.reveal(),
        "fwagent_version": version,
        "router_version": facts.router_version,
        "device_version": version,
        "machine_id": machine_id,
        "serial": facts.serial,
        "machine_name": facts.machine_name,
        "ip_list": ",".join(facts.ip_list),
        "default_route": facts.default_route,
        "default_dev": facts.default_dev,
        "interfaces": json.dumps(facts.interfaces),
        "cpuInfo": dict_text(facts.cpu_info),
        "distro": dict_text(facts.distro),
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect becomes an HTTPError: the token goes nowhere else


def _post(cfg: AgentConfig, url: str, body: bytes) -> tuple[int, bytes]:
    ctx = ssl_context(cfg.controller)
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({}),
        _NoRedirect(),
    ]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": user_agent(cfg.controller),
            "Accept": "application/json",
        },
    )
    try:
        with opener.open(request, timeout=cfg.controller.register_timeout) as resp:
            return int(resp.status), resp.read(MAX_RESPONSE)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read(MAX_RESPONSE)


def _server_reason(body: bytes, org_token: Secret) -> str:
    """A short, printable reason from an error body, without the token."""
    try:
        doc = json.loads(body)
        text = (doc.get("error") or doc.get("message")) if isinstance(doc, dict) else None
    except ValueError:
        text = None
    if not isinstance(text, str):
        return ""
    text = "".join(ch for ch in text if ch.isprintable())[:200]
    if org_token.reveal() and org_token.reveal() in text:
        return ""
    return text


def store_token(path: Path, token: Secret) -> None:
    """Write the token with mode 0600 atomically (temp file + fsync + rename + dir fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # umask can only narrow the mode; make it exact
            data = (token.reveal() + "\n").encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def register(
    cfg: AgentConfig,
    org_token: Secret,
    *,
    facts: DeviceFacts | None = None,
    machine_id_file: Path = MACHINE_ID_FILE,
) -> Registration:
    """Register this device and store its token; raises RegistrationError."""
    ctl = cfg.controller
    machine_id = resolve_machine_id(ctl, machine_id_file)
    form = registration_form(cfg, org_token, machine_id, facts or default_facts(cfg))
    url = registration_url(ctl)
    log.info("registering device", url=url, machine_id=machine_id)
    try:
        status, body = await asyncio.to_thread(_post, cfg, url, urlencode(form).encode())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistrationError(f"cannot reach the controller at {url}: {reason}") from None
    if status != 200:
        known = _ERRORS.get(status, f"registration failed: HTTP {status}")
        extra = _server_reason(body, org_token)
        log.error("registration refused", status=status)
        raise RegistrationError(f"{known}{f' (controller: {extra})' if extra else ''}", status)
    try:
        doc = json.loads(body)
        device_token = doc["deviceToken"]
        server = doc.get("server", "")
    except (ValueError, KeyError, TypeError):
        raise RegistrationError("the controller's answer has no deviceToken", status) from None
    if not isinstance(device_token, str) or not device_token.strip():
        raise RegistrationError("the controller's answer has an empty deviceToken", status)
    server = server if isinstance(server, str) else ""
    store_token(ctl.token_file, Secret(device_token.strip()))
    log.info("device registered", token_file=str(ctl.token_file), server=server)
    if server and not same_server(server, ctl.url):
        # flexiagent connects to this broker; the agent keeps controller.url
        log.warning(
            "the controller names another websocket server than controller.url: "
            "set controller.url to it if the device does not connect",
            server=server,
            configured=ctl.url,
        )
    return Registration(server=server, token_file=ctl.token_file)


def same_server(server: str, url: str) -> bool:
    """Whether registration's `server` (flexiManage's agent broker, `host:port` without
    a scheme) is the host and port of `controller.url`."""
    def host_port(text: str, default_port: int) -> tuple[str, int] | None:
        try:
            parts = urlsplit(text if "://" in text else f"//{text}")
            return (parts.hostname or "").lower(), parts.port or default_port
        except ValueError:
            return None

    scheme = url.partition("://")[0]
    port = 443 if scheme in ("wss", "https") else 80
    mine = host_port(url, port)
    return mine is not None and host_port(server.rstrip("/"), port) == mine
