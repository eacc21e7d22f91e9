"""Registration against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from agent.config import AgentConfig, ControllerConfig
from agent.lab.flexi_rules import validate_registration
from agent.link.register import DeviceFacts, RegistrationError, register, same_server
from agent.secret import Secret

ORG_TOKEN = "eyJorg.S3cr3t.token"


class FakeController:
    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, Any] = {"deviceToken": "dev-token-1", "server": "https://x"}
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []


@pytest.fixture
def controller() -> Iterator[tuple[FakeController, int]]:
    fake = FakeController()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = {
                k: v[0]
                for k, v in parse_qs(
                    self.rfile.read(length).decode(), keep_blank_values=True
                ).items()
            }
            fake.requests.append((self.path, form, dict(self.headers)))
            body = json.dumps(fake.body).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_cfg(port: int, tmp_path: Path) -> AgentConfig:
    return AgentConfig(
        controller=ControllerConfig(
            url=f"ws://127.0.0.1:{port}",
            allow_insecure=True,
            machine_id="ab-0001",
            token_file=tmp_path / "etc" / "device.token",
            register_timeout=5,
        ),
        interfaces={"pci:0000:00:03.00": "GigabitEthernet0/3/0"},
    )


FACTS = DeviceFacts(
    machine_name="edge-1",
    distro={"version": "12", "codename": "bookworm"},
    router_version="26.06",
    ip_list=["192.0.2.10"],
    default_dev="pci:0000:00:03.00",
)


async def test_success_posts_the_form_and_stores_the_token_0600(
    controller: tuple[FakeController, int], tmp_path: Path
) -> None:
    fake, port = controller
    cfg = make_cfg(port, tmp_path)
    old = os.umask(0)  # even a permissive umask must not widen the token file
    try:
        result = await register(cfg, Secret(ORG_TOKEN), facts=FACTS)
    finally:
        os.umask(old)
    path, form, headers = fake.requests[0]
    assert path == "/api/connect/register"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["User-Agent"] == "fwagent/6.3.0"
    assert form["token"] == ORG_TOKEN and form["machine_id"] == "ab-0001"
    assert form["fwagent_version"] == "6.3.0" and form["device_version"] == "6.3.0"
    assert form["router_version"] == "26.06" and form["machine_name"] == "edge-1"
    assert form["ip_list"] == "192.0.2.10"
    assert form["distro"] == "{'version': '12', 'codename': 'bookworm'}"  # dict text
    assert json.loads(form["interfaces"]) == []
    assert {"serial", "default_route", "default_dev", "cpuInfo"} <= form.keys()
    token_file = cfg.controller.token_file
    assert token_file.read_text() == "dev-token-1\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert [p.name for p in token_file.parent.iterdir()] == ["device.token"]  # no temp left
    assert result.server == "https://x"

    # Re-registration replaces the token atomically, still 0600.
    fake.body = {"deviceToken": "dev-token-2", "server": "https://x"}
    await register(cfg, Secret(ORG_TOKEN))
    assert token_file.read_text() == "dev-token-2\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    default_form = fake.requests[1][1]
    [itf] = json.loads(default_form["interfaces"])
    assert (itf["devId"], itf["name"], itf["driver"]) == (
        "pci:0000:00:03.00", "GigabitEthernet0/3/0", "vpp")
    assert "mtu" not in itf and "MAC" not in itf  # omitted, never '' (flexiManage: 408)
    # what flexiManage's routes/connect.js answers for the default form
    default_form["machine_id"] = "3f1c0000-0000-4000-8000-00000000e2e0"  # flexiManage's format
    assert validate_registration(default_form) == (200, "")


def test_flexiManage_refuses_what_the_old_form_sent() -> None:
    """The previous form (plain distro text, interfaces without driver) got 500/408."""
    form = {"fwagent_version": "6.3.0", "machine_id": "3f1c0000-0000-4000-8000-00000000e2e0",
            "machine_name": "edge-1", "distro": "Debian GNU/Linux 12 (bookworm)",
            "interfaces": json.dumps([{"devId": "pci:0000:00:03.00", "name": "x"}])}
    assert validate_registration(form)[0] == 500
    form["distro"] = "{'version': '12', 'codename': 'bookworm'}"
    assert validate_registration(form)[0] == 408
    form["interfaces"] = json.dumps([{"devId": "pci:0000:00:03.00", "name": "host-eth0",
                                      "driver": "vpp"}])
    assert validate_registration(form)[0] == 408  # '-' in a name



@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (401, "organisation token is invalid"),
        (402, "device quota is reached"),
        (404, "token was not found"),
        (407, "already registered"),
        (400, "refused this agent version"),
        (403, "refused this agent version"),
        (500, "registration failed: HTTP 500"),
    ],
)
async def test_errors_are_explained_without_the_token(
    controller: tuple[FakeController, int], tmp_path: Path, status: int, phrase: str
) -> None:
    fake, port = controller
    fake.status = status
    fake.body = {"error": f"bad token {ORG_TOKEN}"}  # a server echoing the token
    cfg = make_cfg(port, tmp_path)
    with pytest.raises(RegistrationError) as exc:
        await register(cfg, Secret(ORG_TOKEN), facts=FACTS)
    assert phrase in str(exc.value) and exc.value.status == status
    assert ORG_TOKEN not in str(exc.value)
    assert not cfg.controller.token_file.exists()


async def test_server_reason_is_shown(
    controller: tuple[FakeController, int], tmp_path: Path
) -> None:
    fake, port = controller
    fake.status, fake.body = 402, {"error": "Maximum number of devices reached"}
    with pytest.raises(RegistrationError, match="controller: Maximum number of devices"):
        await register(make_cfg(port, tmp_path), Secret(ORG_TOKEN), facts=FACTS)


async def test_answer_without_token_and_unreachable(
    controller: tuple[FakeController, int], tmp_path: Path, unused_tcp_port: int
) -> None:
    fake, port = controller
    fake.body = {"server": "x"}
    with pytest.raises(RegistrationError, match="no deviceToken"):
        await register(make_cfg(port, tmp_path), Secret(ORG_TOKEN), facts=FACTS)
    with pytest.raises(RegistrationError, match="cannot reach the controller"):
        await register(make_cfg(unused_tcp_port, tmp_path), Secret(ORG_TOKEN), facts=FACTS)


@pytest.mark.parametrize(("server", "url", "same"), [
    ("manage.example.net:443", "wss://manage.example.net", True),  # flexiManage's form
    ("manage.example.net", "wss://manage.example.net:443", True),
    ("Manage.Example.net:443/", "wss://manage.example.net/", True),
    ("broker.other.net:443", "wss://manage.example.net", False),
    ("manage.example.net:4433", "wss://manage.example.net", False),
    ("https://x", "ws://127.0.0.1:1234", False),
    ("host:notaport", "wss://host", False),
])
def test_the_registrations_server_is_compared_by_host_and_port(
        server: str, url: str, same: bool) -> None:
    assert same_server(server, url) is same
