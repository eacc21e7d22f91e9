"""A minimal raw client speaking the socket transport, for wire-level tests."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from agent.lab.vppsim.api import ApiCatalog

HDR = struct.Struct(">QII")


class RawClient:
    def __init__(self, catalog: ApiCatalog) -> None:
        self.cat = catalog
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.index = 0

    async def connect(self, path: str) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(path)
        self.send("sockclnt_create", name="raw", context=1)
        reply = await self.recv()
        self.index = reply.index

    def pack(self, msg: str, /, **fields: Any) -> bytes:
        md = self.cat.by_name[msg]
        if "client_index" in md.codec.field_by_name:
            fields.setdefault("client_index", self.index)
        body = md.codec.pack(fields | {"_vl_msg_id": md.msg_id})
        return HDR.pack(0, len(body), 0) + body

    def send(self, msg: str, /, **fields: Any) -> None:
        self.writer.write(self.pack(msg, **fields))

    async def recv(self, timeout: float = 2.0) -> Any:
        hdr = await asyncio.wait_for(self.reader.readexactly(16), timeout)
        body = await asyncio.wait_for(self.reader.readexactly(HDR.unpack(hdr)[1]), timeout)
        md = self.cat.by_id[int.from_bytes(body[:2], "big")]
        return md.codec.unpack(body)[0]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
