"""vppsim's message catalogue: definitions, ids, and the codec.

Definitions come from vppsim's own `defs/*.api.json` (VPP 26.06 extracts), parsed
once with vpp-papi's serializer so that the bytes on the wire are exactly what
papi (and VPP) produce. Ids: memclnt 1-28 in file order, then the other
modules in catalog order.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpp_papi.vpp_papi import VPPApiJSONFiles

from agent.lab.vppsim.catalog import MEMCLNT, MODULES, PLUGINS

DEFS_DIR = Path(__file__).resolve().parent / "defs"

HEADER = struct.Struct(">QII")
_HEADER = HEADER


@dataclass(frozen=True)
class MessageDef:
    name: str
    crc: str  # "0x..."
    module: str
    msg_id: int
    codec: Any  # vpp_papi VPPMessage
    has_context: bool

    @property
    def name_crc(self) -> str:
        return f"{self.name}_{self.crc[2:]}"


class RawString:
    """Bytes for a fixed `string` field that may hold non-ASCII data.

    VPP copies IKE identity bytes (e.g. the 4 packed bytes of an ip4-addr ID)
    straight into `string data[64]`; papi's String packer only knows str, so
    this duck-types the two things it calls (`len` and `encode`).
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    def encode(self, *_args: object) -> bytes:
        return self._data


class ApiCatalog:
    """The messages served by one vppsim instance (after --omit-*)."""

    def __init__(
        self,
        defs_dir: Path = DEFS_DIR,
        omit_messages: frozenset[str] = frozenset(),
        omit_plugins: frozenset[str] = frozenset(),
    ) -> None:
        omit_modules = set()
        for plugin in omit_plugins:
            if plugin not in PLUGINS:
                raise ValueError(f"unknown plugin {plugin!r}; known: {sorted(PLUGINS)}")
            omit_modules.add(PLUGINS[plugin])
        self.modules: dict[str, dict[str, Any]] = {}
        for module in MODULES:
            if module in omit_modules:
                continue
            text = (defs_dir / f"{module}.api.json").read_text()
            self.modules[module] = json.loads(text)
        all_names = {m[0] for api in self.modules.values() for m in api["messages"]}
        unknown = set(omit_messages) - all_names
        if unknown:
            raise ValueError(f"cannot omit unknown message(s): {sorted(unknown)}")
        self._drop_messages(set(omit_messages))

        self.by_name: dict[str, MessageDef] = {}
        self.by_id: dict[int, MessageDef] = {}
        next_id = 1
        for module, api in self.modules.items():
            if module != MEMCLNT and next_id < 29:
                next_id = 29
            messages, _services = VPPApiJSONFiles.process_json_str(json.dumps(api))
            for entry in api["messages"]:
                name = entry[0]
                codec = messages[name]
                fields = [f[1] for f in entry[1:] if isinstance(f, list)]
                md = MessageDef(
                    name=name,
                    crc=entry[-1]["crc"],
                    module=module,
                    msg_id=next_id,
                    codec=codec,
                    has_context="context" in fields,
                )
                self.by_name[name] = md
                self.by_id[next_id] = md
                next_id += 1
        self.services: dict[str, dict[str, Any]] = {}
        for api in self.modules.values():
            self.services.update(api.get("services", {}))
        self.api_json_text = json.dumps(
            [api for module, api in self.modules.items() if module != MEMCLNT]
        )

    def _drop_messages(self, names: set[str]) -> None:
        """Remove messages (and replies nothing else uses) from the served modules."""
        if not names:
            return
        for api in self.modules.values():
            services = api.get("services", {})
            drop = set(names)
            for req in names & set(services):
                svc = services[req]
                drop.update(n for n in (svc.get("reply"), svc.get("stream_msg")) if n)
            remaining = {k: v for k, v in services.items() if k not in drop}
            still_used = {
                n
                for v in remaining.values()
                for n in (v.get("reply"), v.get("stream_msg"), *v.get("events", []))
                if n
            }
            drop -= still_used - set(names)
            api["messages"] = [m for m in api["messages"] if m[0] not in drop]
            api["services"] = {k: v for k, v in services.items() if k not in drop}

    def table(self) -> list[dict[str, Any]]:
        """The sockclnt_create_reply message table."""
        return [{"index": md.msg_id, "name": md.name_crc} for md in self.by_id.values()]

    def pack(self, name: str, fields: dict[str, Any]) -> bytes:
        md = self.by_name[name]
        fields["_vl_msg_id"] = md.msg_id
        body: bytes = md.codec.pack(fields)
        return frame(body)


def frame(body: bytes) -> bytes:
    """Prefix a message body with the socket transport's 16-byte header."""
    return _HEADER.pack(0, len(body), 0) + body
