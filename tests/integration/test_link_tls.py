"""wss:// with certificate verification: `ca_file` trusts a private CA, nothing else does."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from agent.config import ControllerConfig
from agent.lab.controller_double import ControllerDouble
from agent.link.handler import Outcome
from agent.link.journal import Journal
from agent.link.session import LinkSession

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl CLI")


class Handler:
    async def run_job(self, message: str, params: object, jobid: str,
                      original: object = None) -> Outcome:
        return Outcome(True, "success")

    async def device_info(self, params: dict[str, object]) -> dict[str, object]:
        return {"device": "6.3.0"}

    async def device_stats(self) -> list[dict[str, object]]:
        return []

    def cfg_hash(self) -> str:
        return "h"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "ctl.pem", tmp_path / "ctl.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


async def run_until(session: LinkSession, predicate: object, timeout: float) -> None:
    task = asyncio.create_task(session.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():  # type: ignore[operator]
            assert loop.time() < deadline, "condition not met before the deadline"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_wss_verifies_the_controller_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    token = tmp_path / "device.token"
    token.write_text("t0k3n")
    async with ControllerDouble(
        machine_id="ab01",
        device_token="t0k3n",
        ssl_context=server_ctx,
        stats_interval=None,
        ping_interval=None,
    ) as ctl:
        common = dict(
            url=f"wss://localhost:{ctl.port}",
            machine_id="ab01",
            token_file=token,
            backoff_min=0.05,
            backoff_max=0.1,
            retry_quick_min=0.05,
            retry_quick_max=0.1,
            connect_timeout=2.0,
        )
        # Not trusted: every attempt fails verification, no connection is ever made.
        untrusted = LinkSession(
            ControllerConfig(**common),
            Handler(),  # type: ignore[arg-type]
            Journal(tmp_path / "a.db"),
        )
        await run_until(untrusted, lambda: untrusted.counters.attempts >= 3, 5)
        assert ctl.connections == [] and untrusted.counters.connections == 0

        trusted = LinkSession(
            ControllerConfig(**common, ca_file=str(cert)),  # type: ignore[arg-type]
            Handler(),
            Journal(tmp_path / "b.db"),
        )
        await run_until(trusted, lambda: bool(ctl.info_replies), 5)
        assert trusted.counters.connections == 1 and ctl.info_replies[0]["msg"]["ok"] == 1
