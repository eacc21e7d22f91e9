"""Fixtures shared by the agent's tests: a vppsim per test on a short socket path."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from agent.lab.vppsim.server import VppSim
from tests.real_vpp import fold_skip

WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults, writing to the captured stdout."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes; pytest's tmp_path may not."""
    d = Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def sim(short_dir: Path) -> AsyncIterator[VppSim]:
    s = VppSim(short_dir / "api.sock", interfaces=[WAN])
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


# Secrets used by the suite. Every test's captured output (stdout, stderr and
# log records, where all of the agent's log lines land) is scanned for them; a
# test whose run printed one fails, whatever it asserted itself.
SUITE_SECRETS = (
    "S3cr3tPSK",  # the add-tunnel fixture's PSK, and a prefix of the factory's
    "Integration-PSK-never-logged",
    "device-token-e2e-never-logged",
    "eyJorg.S3cr3t.token",
    "Top-Secret-Key-4711",
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    fold_skip(report)
    if item.get_closest_marker("prints_secrets"):
        return
    own = [content for name, content in report.sections if name.endswith(report.when)]
    leaked = [s for s in SUITE_SECRETS if any(s in content for content in own)]
    if leaked and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = (f"secret(s) {', '.join(repr(s[:4] + '...') for s in leaked)} "
                           f"appeared in the output captured during {report.when}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "prints_secrets: the test shows a secret on purpose (e.g. --show-secrets)")
