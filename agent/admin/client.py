"""peerctl's side of the admin socket: one request, one answer, with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from agent.admin import protocol as proto


class AdminUnavailable(Exception):
    """The agent cannot be reached (not running, wrong socket, no permission)."""


class AdminRequestError(Exception):
    """The agent answered with an error; the message is its one line."""


async def call(socket_path: str | Path, cmd: str, args: dict[str, Any] | None = None,
               *, timeout: float = 20.0) -> Any:
    """Send one request and return its data; raise AdminUnavailable / AdminRequestError."""
    path = str(socket_path)
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(
                    path, limit=proto.MAX_RESPONSE)
            except FileNotFoundError:
                raise AdminUnavailable(
                    f"cannot reach the agent: {path} does not exist "
                    "(is peering-agent running? see --config / --socket)") from None
            except ConnectionRefusedError:
                raise AdminUnavailable(
                    f"cannot reach the agent: nothing listens on {path} "
                    "(is peering-agent running?)") from None
            except PermissionError:
                raise AdminUnavailable(
                    f"permission denied on {path}: run peerctl as root") from None
            except OSError as e:
                raise AdminUnavailable(
                    f"cannot reach the agent at {path}: {e.strerror or e}") from None
            try:
                writer.write(proto.request(cmd, args))
                await writer.drain()
                line = await reader.readline()
            except (ConnectionError, ValueError) as e:
                raise AdminUnavailable(f"connection to the agent failed: {e}") from None
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise AdminUnavailable(f"the agent did not answer within {timeout:g} s") from None
    if not line:
        raise AdminUnavailable("the agent closed the connection without answering")
    try:
        ok, data = proto.parse_response(line)
    except proto.ProtocolError as e:
        raise AdminUnavailable(str(e)) from None
    if not ok:
        raise AdminRequestError(str(data))
    return data
