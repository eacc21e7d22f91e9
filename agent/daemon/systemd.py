"""A dependency-free sd_notify client and the watchdog loop.

systemd's notification protocol is one AF_UNIX datagram of newline-separated
``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET``; a leading ``@`` names a socket in
the abstract namespace. Everything here is a silent no-op when the variable is
absent (started by hand, in tests, in a container), so callers never branch on
"are we under systemd".

The watchdog pings come from a task on the agent's own event loop, not from a
thread: if the loop is stuck (a blocking call, a busy coroutine) the pings stop
and systemd restarts the service, which is exactly the failure worth catching.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)


def notify_address(value: str | None) -> str | None:
    """The socket address for `$NOTIFY_SOCKET`, or None when it is unset/unusable.

    Absolute paths and ``@abstract`` names are what systemd hands out; anything
    else (e.g. ``vsock:`` addresses of systemd >= 254 for VMs) is not supported
    and disables notification rather than failing the daemon.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends state changes to systemd; every method is a no-op without a socket.

    Sending never raises: a lost notification must not take the daemon down
    (systemd's own timeouts catch a daemon that never manages to notify).
    """

    def __init__(self, address: str | None) -> None:
        self._address = address
        self._failing = False  # log a failure once, not on every watchdog ping

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Build from `$NOTIFY_SOCKET` (default: the process environment)."""
        environ = os.environ if env is None else env
        raw = environ.get("NOTIFY_SOCKET")
        address = notify_address(raw)
        if raw and address is None:
            log.warning("NOTIFY_SOCKET not supported; systemd notifications disabled",
                        notify_socket=raw)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True if it was sent."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # never block the event loop on a full receive queue: drop instead
                sock.setblocking(False)
                sock.sendto(payload, self._address)
        except OSError as e:
            if not self._failing:
                log.warning("systemd notification failed", error=e.strerror or str(e),
                            message=assignments[0].partition("=")[0])
            self._failing = True
            return False
        if self._failing:
            log.info("systemd notification works again")
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with an optional STATUS=): start-up is complete."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status_line(status))

    def status(self, text: str) -> bool:
        """STATUS=: the one-line text `systemctl status` shows."""
        return self.notify(_status_line(text))

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """WATCHDOG=1: one keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: ask for more start/stop time (e.g. a slow VPP)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")


def _status_line(text: str) -> str:
    # one assignment per line: a newline in the text would start a bogus one
    return "STATUS=" + " ".join(text.splitlines())


def watchdog_interval(env: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds between watchdog pings, or None when the watchdog is off.

    Half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) recommends. When
    `$WATCHDOG_PID` is set it must be this process: the variables are inherited
    by children, which must not ping on the parent's behalf.
    """
    environ = os.environ if env is None else env
    raw_usec = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None:
        try:
            owner = int(raw_pid)
        except ValueError:
            return None
        if owner != (os.getpid() if pid is None else pid):
            return None
    return usec / 2 / 1_000_000


async def watchdog_loop(notifier: Notifier, interval: float | None) -> None:
    """Ping every `interval` seconds until cancelled; returns at once when disabled.

    Runs as a task of the agent's TaskGroup, so it shares the event loop with
    everything else: a blocked loop means no pings.
    """
    if interval is None or interval <= 0 or not notifier.enabled:
        return
    log.info("systemd watchdog enabled", interval_s=round(interval, 3))
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def start_keepalive(notifier: Notifier, ready: asyncio.Event,
                          status: Callable[[], str], every: float = 20.0) -> None:
    """Until `ready` is set, extend systemd's start timeout and say what start-up waits
    for (a VPP that is not up yet). The agent meanwhile talks to the controller, so
    its Command and Logs tabs stay usable; without this, TimeoutStartSec would kill
    and restart it every two minutes while VPP is down. A stuck event loop stops the
    extensions, and systemd's timeout then applies again."""
    if not notifier.enabled:
        return
    while not ready.is_set():
        notifier.extend_timeout(every * 3)
        notifier.status(status())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await ready.wait()
