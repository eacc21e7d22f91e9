"""structlog configuration: JSON lines for journald/files, readable text on a TTY.

Secrets are masked twice: values are `Secret` objects that render as ******,
and this processor masks known secret keys in case a raw value slips through.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset({"psk", "token", "password", "secret", "key", "auth_data",
                         "device_token", "org_token", "sk_d", "sk_ei", "sk_er", "sk_ai", "sk_ar"})
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
# A change touching up to this many tunnels is logged tunnel by tunnel at info; a bigger
# one (a 1000-peer job, a reconcile after a VPP restart) in one info line, each at debug.
LOG_EACH_UP_TO = 10


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event):
        if k.lower() in SECRET_KEYS:
            event[k] = "******"
    return event


def configure_logging(level: str = "info", *, json: bool | None = None,
                      stream: TextIO | None = None) -> None:
    """Configure structlog once, at startup (and again to change the level)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: expected one of {', '.join(LEVELS)}")
    out = stream or sys.stderr
    use_json = (not out.isatty()) if json is None else json
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def debug_enabled() -> bool:
    """Whether debug lines are emitted right now (follows run-time level changes).

    Lets hot paths skip building the fields of a debug line that would be dropped.
    """
    wrapper = structlog.get_config()["wrapper_class"]
    is_enabled_for = getattr(wrapper, "is_enabled_for", None)
    return True if is_enabled_for is None else bool(is_enabled_for(None, logging.DEBUG))
