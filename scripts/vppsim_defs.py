#!/usr/bin/env python3
"""Extract the definitions vppsim serves from a VPP api directory.

    scripts/vppsim_defs.py --api-dir ../shared/vpp-api/v26.06 --out agent/lab/vppsim/defs

For every module in agent.lab.vppsim.catalog.MODULES it keeps the served
requests, their replies/details/events and, transitively, the types, unions,
enums, enumflags and aliases they use, plus the module metadata (module,
options, vl_api_version, imports, counters, paths). memclnt is copied whole.
Nothing is rewritten: names, fields and CRCs stay exactly VPP's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.lab.vppsim.catalog import MEMCLNT, MODULES

_TYPE_RE = re.compile(r"^vl_api_(.+)_t$")


def _field_types(entry: list[Any]) -> list[str]:
    """Type names referenced by the fields of a message/type/union entry."""
    out = []
    for field in entry[1:]:
        if isinstance(field, list) and field and isinstance(field[0], str):
            m = _TYPE_RE.match(field[0])
            if m:
                out.append(m.group(1))
    return out


def _messages_for(api: dict[str, Any], requests: tuple[str, ...]) -> list[str]:
    services = api.get("services", {})
    wanted: list[str] = []
    for req in requests:
        if req not in services:
            raise SystemExit(f"{api['module']}: {req} is not a service request")
        svc = services[req]
        for name in (req, svc.get("reply"), svc.get("stream_msg"), *svc.get("events", [])):
            if name and name != "null" and name not in wanted:
                wanted.append(name)
    return wanted


def extract(api: dict[str, Any], requests: tuple[str, ...]) -> dict[str, Any]:
    """Reduce one module's definition to what the requests need."""
    names = _messages_for(api, requests)
    by_name = {m[0]: m for m in api["messages"]}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"{api['module']}: messages not defined: {missing}")
    kinds = ("types", "unions", "enums", "enumflags")
    defs: dict[str, list[Any]] = {}
    for kind in kinds:
        for t in api.get(kind, []):
            defs.setdefault(t[0], t)
    aliases: dict[str, Any] = api.get("aliases", {})

    needed: set[str] = set()
    todo = [t for n in names for t in _field_types(by_name[n])]
    while todo:
        t = todo.pop()
        if t in needed:
            continue
        needed.add(t)
        if t in defs:
            todo.extend(_field_types(defs[t]))
        elif t in aliases:
            m = _TYPE_RE.match(aliases[t]["type"])
            if m:
                todo.append(m.group(1))
        else:
            raise SystemExit(f"{api['module']}: type {t} is not defined in the module")

    out: dict[str, Any] = {}
    for key, value in api.items():
        if key == "messages":
            out[key] = [m for m in value if m[0] in names]
        elif key in kinds:
            out[key] = [t for t in value if t[0] in needed]
        elif key == "aliases":
            out[key] = {k: v for k, v in value.items() if k in needed}
        elif key == "services":
            keep = set(names)
            out[key] = {k: v for k, v in value.items() if k in keep}
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-dir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for module, requests in MODULES.items():
        src = next(iter(args.api_dir.rglob(f"{module}.api.json")), None)
        if src is None:
            raise SystemExit(f"{module}.api.json not found under {args.api_dir}")
        api = json.loads(src.read_text())
        result = api if module == MEMCLNT else extract(api, requests)
        dest = args.out / f"{module}.api.json"
        dest.write_text(json.dumps(result, indent=4) + "\n")
        print(f"{dest}: {len(result['messages'])} messages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
