"""sd_notify client and watchdog loop against a fake NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import structlog.testing

from agent.daemon.systemd import (
    Notifier,
    notify_address,
    start_keepalive,
    watchdog_interval,
    watchdog_loop,
)


class FakeSystemd:
    """A datagram socket like systemd's notify socket; a thread timestamps arrivals.

    Arrival times are taken on a separate thread so that they stay honest while the
    test deliberately blocks the event loop.
    """

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.received.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.received]

    def times(self) -> list[float]:
        with self._lock:
            return [t for t, _ in self.received]

    def wait_count(self, n: int, timeout: float = 2.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} datagrams, got {self.messages()!r}")
            time.sleep(0.005)
        return self.messages()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def fake_path(short_dir: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(short_dir / "notify.sock")
    fake = FakeSystemd(path)
    try:
        yield fake, path
    finally:
        fake.close()


@pytest.fixture
def fake_abstract() -> Iterator[tuple[FakeSystemd, str]]:
    name = f"pa-test-notify-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    try:
        yield fake, "@" + name
    finally:
        fake.close()


def test_messages_are_sent_exactly(fake_path: tuple[FakeSystemd, str]) -> None:
    fake, path = fake_path
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("connected to VPP 26.06, 3 peers")
    assert n.status("2 of 3 tunnels up")
    assert n.watchdog()
    assert n.ready()
    assert n.extend_timeout(1.5)
    assert n.stopping()
    assert fake.wait_count(6) == [
        "READY=1\nSTATUS=connected to VPP 26.06, 3 peers",
        "STATUS=2 of 3 tunnels up",
        "WATCHDOG=1",
        "READY=1",
        "EXTEND_TIMEOUT_USEC=1500000",
        "STOPPING=1",
    ]


def test_status_newlines_cannot_inject_assignments(fake_path: tuple[FakeSystemd, str]) -> None:
    fake, path = fake_path
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("vpp down\nREADY=1")
    assert fake.wait_count(1) == ["STATUS=vpp down READY=1"]


def test_abstract_namespace_socket(fake_abstract: tuple[FakeSystemd, str]) -> None:
    fake, name = fake_abstract
    assert name.startswith("@")
    n = Notifier.from_env({"NOTIFY_SOCKET": name})
    assert n.ready("up")
    assert n.watchdog()
    assert fake.wait_count(2) == ["READY=1\nSTATUS=up", "WATCHDOG=1"]


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/notify.sock"])
def test_not_under_systemd_is_a_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    n = Notifier.from_env(env)
    assert not n.enabled
    assert not n.ready("x")
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.stopping()


def test_address_forms() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@/org/freedesktop/systemd1/notify/123") == (
        "\0/org/freedesktop/systemd1/notify/123"
    )
    assert notify_address(None) is None


def test_missing_socket_fails_softly_and_logs_once(short_dir: Path) -> None:
    path = str(short_dir / "notify.sock")
    n = Notifier(path)
    assert n.enabled
    with structlog.testing.capture_logs() as logs:
        assert n.watchdog() is False  # reported, not raised
        assert n.watchdog() is False
        fake = FakeSystemd(path)  # systemd's socket is back
        try:
            assert n.watchdog() is True
            assert fake.wait_count(1) == ["WATCHDOG=1"]
        finally:
            fake.close()
    assert [e["event"] for e in logs] == [
        "systemd notification failed", "systemd notification works again"]


def test_default_env_is_process_environment(
        fake_path: tuple[FakeSystemd, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, path = fake_path
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().ready()
    assert fake.wait_count(1) == ["READY=1"]
    assert watchdog_interval() == 4.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # a child's env
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": "4242"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


async def test_watchdog_loop_returns_when_disabled(fake_path: tuple[FakeSystemd, str]) -> None:
    fake, path = fake_path
    await asyncio.wait_for(watchdog_loop(Notifier(None), 0.01), 1)
    await asyncio.wait_for(watchdog_loop(Notifier(path), None), 1)
    assert fake.messages() == []


async def test_blocked_loop_stops_the_pings(fake_path: tuple[FakeSystemd, str]) -> None:
    fake, path = fake_path
    interval = 0.02
    block = 0.6
    task = asyncio.create_task(watchdog_loop(Notifier(path), interval))
    try:
        deadline = time.monotonic() + 2
        while len(fake.times()) < 5:  # the loop pings while the event loop is free
            assert time.monotonic() < deadline, fake.messages()
            await asyncio.sleep(interval)
        before = len(fake.times())
        start = time.monotonic()
        time.sleep(block)  # deliberately block the event loop: this IS the scenario
        end = time.monotonic()
        # a datagram sent just before the block may be timestamped a little late
        during = [t for t in fake.times() if start + 0.1 < t <= end]
        assert during == [], f"{len(during)} pings while the loop was blocked"
        deadline = time.monotonic() + 2
        while not any(t > end for t in fake.times()):  # and resumes afterwards
            assert time.monotonic() < deadline, "pings did not resume"
            await asyncio.sleep(interval)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert set(fake.messages()) == {"WATCHDOG=1"}
    assert before >= 5


async def test_start_keepalive_extends_and_says_why_until_ready(
        fake_path: tuple[FakeSystemd, str]) -> None:
    fake, path = fake_path
    ready = asyncio.Event()
    task = asyncio.create_task(start_keepalive(Notifier(path), ready,
                                               lambda: "waiting for VPP", every=0.02))
    deadline = time.monotonic() + 2
    while len(fake.messages()) < 4:  # two rounds: extend, status, extend, status
        assert time.monotonic() < deadline, fake.messages()
        await asyncio.sleep(0.01)
    ready.set()
    await asyncio.wait_for(task, 1)  # returns once ready
    await asyncio.sleep(0.05)  # the receiving thread has read what was sent before
    sent = fake.messages()
    assert sent[:4] == ["EXTEND_TIMEOUT_USEC=60000", "STATUS=waiting for VPP"] * 2
    await asyncio.sleep(0.1)  # five rounds' worth of time
    assert fake.messages() == sent  # nothing once ready
    await asyncio.wait_for(start_keepalive(Notifier(None), asyncio.Event(), str), 1)
