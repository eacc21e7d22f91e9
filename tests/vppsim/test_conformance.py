"""Every message vppsim serves is VPP 26.06's, field for field and CRC for CRC."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.lab.vppsim.api import DEFS_DIR, ApiCatalog
from agent.lab.vppsim.catalog import MODULES

REF = Path(__file__).parents[2].parent / "shared/vpp-api/v26.06"
pytestmark = pytest.mark.skipif(not REF.is_dir(),
    reason=f"reference tier: {REF} absent (needs ../shared)")
TYPE_RE = re.compile(r"^vl_api_(.+)_t$")


def _defs(api: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("types", "unions", "enums", "enumflags"):
        for t in api.get(kind, []):
            out.setdefault(t[0], (kind, t))
    for name, alias in api.get("aliases", {}).items():
        out.setdefault(name, ("alias", alias))
    return out


def _strip(entry: list[Any]) -> list[Any]:
    """Drop comments: they are documentation, not wire format."""
    return [f for f in entry if not (isinstance(f, dict) and set(f) <= {"comment"})]


def _used_types(entry: list[Any], defs: dict[str, Any], seen: set[str]) -> None:
    for field in entry[1:]:
        if isinstance(field, list) and isinstance(field[0], str):
            m = TYPE_RE.match(field[0])
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                kind, t = defs[m.group(1)]
                if kind == "alias":
                    _used_types(["", [t["type"]]], defs, seen)
                else:
                    _used_types(t, defs, seen)


def test_served_messages_match_vpp_26_06() -> None:
    cat = ApiCatalog()
    served = json.loads(cat.api_json_text)
    served_modules = {api["module"]: api for api in served}
    assert set(served_modules) == set(MODULES) - {"memclnt"}
    checked = 0
    for module in MODULES:
        ours = json.loads((DEFS_DIR / f"{module}.api.json").read_text())
        ref = json.loads((REF / f"{module}.api.json").read_text())
        if module != "memclnt":
            assert served_modules[module] == ours, f"{module}: get_api_json differs from defs"
        for key in ("module", "options", "vl_api_version", "imports"):
            assert ours[key] == ref[key], f"{module}: {key} differs"
        ref_msgs = {m[0]: m for m in ref["messages"]}
        ref_defs, our_defs = _defs(ref), _defs(ours)
        for msg in ours["messages"]:
            name = msg[0]
            assert name in ref_msgs, f"{module}: {name} is not a VPP 26.06 message"
            assert _strip(msg) == _strip(ref_msgs[name]), f"{module}: {name} differs"
            md = cat.by_name[name]
            assert md.crc == ref_msgs[name][-1]["crc"]
            seen: set[str] = set()
            _used_types(msg, our_defs, seen)
            for t in seen:
                assert our_defs[t][0] == ref_defs[t][0], f"{module}: {t} kind differs"
                ours_t, ref_t = our_defs[t][1], ref_defs[t][1]
                if isinstance(ours_t, list):
                    ours_t, ref_t = _strip(ours_t), _strip(ref_t)
                assert ours_t == ref_t, f"{module}: type {t} used by {name} differs"
            checked += 1
        for req, svc in ours["services"].items():
            assert ref["services"][req] == svc, f"{module}: service {req} differs"
    # the table served at connect is exactly the catalogue, ids unique
    table = {e["name"]: e["index"] for e in cat.table()}
    assert len(table) == checked == len(set(table.values()))
    assert table["sockclnt_create_455fb9c4"] == 15
    assert table["sockclnt_create_reply_35166268"] == 16
    memclnt = json.loads((REF / "memclnt.api.json").read_text())["messages"]
    assert [table[f"{m[0]}_{m[-1]['crc'][2:]}"] for m in memclnt] == list(range(1, 29))
    assert min(i for i in table.values() if i > 28) == 29


def test_omitted_message_absent_from_table_and_json() -> None:
    cat = ApiCatalog(omit_messages=frozenset({"ikev2_sa_v3_dump"}))
    assert "ikev2_sa_v3_dump" not in cat.by_name
    assert "ikev2_sa_v3_details" not in cat.by_name
    assert "ikev2_sa_v2_dump" in cat.by_name
    assert "ikev2_sa_v3_dump" not in cat.api_json_text
    no_ike = ApiCatalog(omit_plugins=frozenset({"ikev2"}))
    assert not any(n.startswith("ikev2_") for n in no_ike.by_name)
    with pytest.raises(ValueError, match="unknown"):
        ApiCatalog(omit_messages=frozenset({"no_such_message"}))


def test_generator_reproduces_checked_in_defs(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    subprocess.run(
        [
            sys.executable,
            str(root / "scripts/vppsim_defs.py"),
            "--api-dir",
            str(REF),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for module in MODULES:
        assert (tmp_path / f"{module}.api.json").read_text() == (
            DEFS_DIR / f"{module}.api.json"
        ).read_text()
