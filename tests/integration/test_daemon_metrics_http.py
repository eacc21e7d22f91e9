"""The metrics endpoint over real loopback TCP: scrapes, errors, abuse, and VPP state."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.daemon.metrics import (
    CONTENT_TYPE,
    AgentMetricsSource,
    JobMetrics,
    JobSnapshot,
    MetricsServer,
    TunnelMetrics,
    metrics_registry,
    render_metrics,
    run_metrics_server,
)
from agent.lab.vppsim.server import VppSim
from agent.vpp.client import VppClient
from tests.waiting import until

WAN = ("GigabitEthernet0/3/0", "192.168.1.10/24")


class Source:
    def __init__(self) -> None:
        self.recorder = JobMetrics()
        self.fail = False
        self.recorder.observe("add-tunnel", True, 0.25)

    def tunnels(self) -> list[TunnelMetrics]:
        if self.fail:
            raise RuntimeError("monitor exploded")
        return [TunnelMetrics(7, "203.0.113.10", True, 10.0, 1.0, 0.0, True, 60.0, 1)]

    def jobs(self) -> JobSnapshot:
        return self.recorder.snapshot()

    def vpp_connected(self) -> bool:
        return True

    def vpp_reconnects(self) -> int:
        return 0


@pytest.fixture
async def served() -> AsyncIterator[tuple[MetricsServer, Source]]:
    source = Source()
    server = MetricsServer(metrics_registry(source), "127.0.0.1", 0, max_clients=4,
                           read_timeout=0.5)
    await server.start()
    try:
        yield server, source
    finally:
        await server.stop()


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def _raw(port: int, data: bytes, *, close_write: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_scrape_with_urllib(served: tuple[MetricsServer, Source]) -> None:
    server, source = served
    status, headers, body = await asyncio.to_thread(
        _get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    assert body == render_metrics(metrics_registry(source))
    assert 'peering_agent_tunnel_up{peer="203.0.113.10",tunnel_id="7"} 1.0\n' in body
    assert int(headers["Content-Length"]) == len(body.encode())
    # the endpoint reads the source on every scrape, nothing is cached
    source.recorder.observe("add-tunnel", False, 1.0)
    _, _, again = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics?x=1")
    assert 'peering_agent_jobs_total{message="add-tunnel",outcome="failed"} 1.0\n' in again


async def test_head_unknown_path_and_method(served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    base = f"http://127.0.0.1:{server.port}"
    status, headers, body = await asyncio.to_thread(_get, base + "/metrics", "HEAD")
    assert (status, body) == (200, "") and int(headers["Content-Length"]) > 0
    status, _, body = await asyncio.to_thread(_get, base + "/")
    assert status == 404 and "/metrics" in body
    status, _, _ = await asyncio.to_thread(_get, base + "/metrics/../etc/passwd")
    assert status == 404
    status, headers, _ = await asyncio.to_thread(_get, base + "/metrics", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"garbage\r\n\r\n",
        b"GET /metrics\r\n\r\n",  # HTTP/0.9 style: no version
        b"GET /metrics SMTP/1.0\r\n\r\n",
        b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x",  # headers cut short
        b"\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(served: tuple[MetricsServer, Source],
                                          request_bytes: bytes) -> None:
    server, _ = served
    reply = await _raw(server.port, request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    status, _, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200  # and the server keeps serving


async def test_oversized_requests(served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    reply = await _raw(server.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(200))
    reply = await _raw(server.port, b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")


async def test_client_that_closes_at_once(served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    assert await _raw(server.port, b"") == b""
    status, _, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200


async def test_slow_client_times_out_and_frees_its_slot(
        served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    started = time.monotonic()
    reply = await _raw(server.port, b"GET /metrics HTTP/1.1\r\n", close_write=False)
    elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.4 <= elapsed < 3  # read_timeout is 0.5 s


async def test_idle_clients_do_not_lock_out_scrapes() -> None:
    """8 idle sockets (re-opened as fast as they are closed) take every slot; each of 24
    scrapes still gets its answer: the oldest idle socket makes room."""
    server = MetricsServer(metrics_registry(Source()), "127.0.0.1", 0, max_clients=8,
                           read_timeout=10)
    await server.start()
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(8)]
    try:
        await until(lambda: server._clients == 8)
        answered = 0
        for _ in range(24):
            status, _, _ = await asyncio.to_thread(
                _get, f"http://127.0.0.1:{server.port}/metrics")
            answered += status == 200
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        assert answered == 24
        assert server._clients <= 8 + 1
    finally:
        for _, w in idle:
            w.close()
        await server.stop()


async def test_source_failure_is_500_not_a_crash(served: tuple[MetricsServer, Source]) -> None:
    server, source = served
    source.fail = True
    status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 500 and "monitor exploded" not in body
    source.fail = False
    status, _, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200


async def test_ipv6_loopback() -> None:
    server = MetricsServer(metrics_registry(Source()), "::1", 0)
    try:
        await server.start()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        status, _, _ = await asyncio.to_thread(_get, f"http://[::1]:{server.port}/metrics")
        assert status == 200
    finally:
        await server.stop()


async def test_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetricsServer(metrics_registry(Source()), "0.0.0.0", 0)
    with pytest.raises(ValueError, match="loopback"):
        await run_metrics_server(metrics_registry(Source()), "0.0.0.0:9465")


async def test_run_metrics_server_serves_until_cancelled() -> None:
    # empty listen: no-op
    await asyncio.wait_for(run_metrics_server(metrics_registry(Source()), ""), 1)
    with socket.socket() as probe:  # a free loopback port for the host:port form
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(
        run_metrics_server(metrics_registry(Source()), f"127.0.0.1:{port}"))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                status, _, _ = await asyncio.to_thread(_get, url)
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "endpoint never came up"
                await asyncio.sleep(0.02)
        assert status == 200
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(urllib.error.URLError):  # the port is released on cancellation
        await asyncio.to_thread(_get, url)


async def test_vpp_state_from_a_real_client(short_dir: Path) -> None:
    """VPP connection gauge and reconnect counter follow vppsim going away and back."""
    sock = short_dir / "api.sock"
    sim = VppSim(sock, interfaces=[WAN])
    await sim.start()
    client = VppClient(str(sock), connect_timeout=2, call_timeout=2, backoff_max=0.2)
    manager = type("M", (), {"desired": {}, "states": {}})()
    monitor = type("Mon", (), {"health": lambda self, tid: None})()
    server = MetricsServer(
        metrics_registry(AgentMetricsSource(manager, monitor, client, JobMetrics())),
        "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"

    async def scrape() -> str:
        return (await asyncio.to_thread(_get, url))[2]

    try:
        await client.start()
        await client.wait_connected(5)
        text = await scrape()
        assert "peering_agent_vpp_connected 1.0\n" in text
        assert "peering_agent_vpp_reconnects_total 0.0\n" in text
        await sim.stop()
        await until(lambda: not client.connected)
        assert "peering_agent_vpp_connected 0.0\n" in await scrape()
        await sim.start()
        await client.wait_connected(5)
        text = await scrape()
        assert "peering_agent_vpp_connected 1.0\n" in text
        assert "peering_agent_vpp_reconnects_total 1.0\n" in text
    finally:
        await server.stop()
        await client.close()
        await sim.stop()
