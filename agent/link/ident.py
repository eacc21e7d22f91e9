"""Who the device is and where the controller lives: machine id, token, URLs, TLS.

Small helpers shared by registration and the websocket session. The device
token is handled as a `Secret` from the moment it is read; the only textual
URL that may be logged is `redacted_websocket_url`.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import quote

from agent.config import MACHINE_ID_RE, ControllerConfig
from agent.secret import Secret

MACHINE_ID_FILE = Path("/etc/machine-id")


class LinkSetupError(Exception):
    """The link cannot start: a local problem an operator must fix."""


def resolve_machine_id(cfg: ControllerConfig, machine_id_file: Path = MACHINE_ID_FILE) -> str:
    """`controller.machine_id`, or the host's /etc/machine-id when it is empty."""
    if cfg.machine_id:
        return cfg.machine_id
    try:
        value = machine_id_file.read_text().strip()
    except OSError as exc:
        raise LinkSetupError(
            f"controller.machine_id is empty and {machine_id_file} is unreadable "
            f"({exc.strerror}): set controller.machine_id"
        ) from None
    if not MACHINE_ID_RE.match(value):
        raise LinkSetupError(f"{machine_id_file} does not hold a machine id flexiManage "
                             "registers (1-50 hex digits or '-'): set controller.machine_id")
    return value


def read_token(cfg: ControllerConfig) -> Secret | None:
    """The device token from `controller.token_file`, None if absent or empty."""
    try:
        value = cfg.token_file.read_text().strip()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    return Secret(value) if value else None


def _base(cfg: ControllerConfig, secure_scheme: str, plain_scheme: str) -> str:
    scheme, _, rest = cfg.url.partition("://")
    secure = scheme in ("wss", "https")
    return f"{secure_scheme if secure else plain_scheme}://{rest}"


def websocket_url(cfg: ControllerConfig, machine_id: str, token: Secret) -> str:
    """`wss://<server>/<machineId>?token=<deviceToken>`: contains the secret, never log it."""
    return f"{_base(cfg, 'wss', 'ws')}/{machine_id}?token={quote(token.reveal(), safe='')}"


def redacted_websocket_url(cfg: ControllerConfig, machine_id: str) -> str:
    return f"{_base(cfg, 'wss', 'ws')}/{machine_id}?token={Secret.MASK}"


def registration_url(cfg: ControllerConfig) -> str:
    return f"{_base(cfg, 'https', 'http')}/api/connect/register"


def user_agent(cfg: ControllerConfig) -> str:
    return f"fwagent/{cfg.fwagent_version}"


def ssl_context(cfg: ControllerConfig) -> ssl.SSLContext | None:
    """Verifying TLS context (system CAs + `ca_file`), None for ws:// / http://."""
    if not cfg.secure:
        return None
    ctx = ssl.create_default_context()
    if cfg.ca_file:
        try:
            ctx.load_verify_locations(cafile=cfg.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise LinkSetupError(f"controller.ca_file: cannot load {cfg.ca_file}: {exc}") from None
    return ctx


def redact(text: str, token: Secret | None) -> str:
    """Remove the token (raw and URL-quoted) from a text such as an exception message."""
    if token is None or not token.reveal():
        return text
    for form in {token.reveal(), quote(token.reveal(), safe="")}:
        text = text.replace(form, Secret.MASK)
    return text
