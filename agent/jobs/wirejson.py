"""JSON as flexiManage writes it: parse keeping number text, write canonically.

flexiManage hashes each queued task with json-stable-stringify (keys sorted, no
whitespace, non-ASCII left as is, numbers written the JavaScript way). The
device must hash the same bytes. Python writes some floats differently from
JavaScript (``1e-05`` vs ``0.00001``), so a non-integer number keeps the text it
arrived with (`WireFloat`) and `canonical` writes that text back unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from json.encoder import encode_basestring  # C-accelerated, leaves non-ASCII as is
from typing import Any


class WireFloat(float):
    """A float that remembers its JSON text (written back verbatim by `canonical`)."""

    text: str

    def __new__(cls, text: str) -> WireFloat:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def loads(text: str | bytes) -> Any:
    """`json.loads` keeping the text of every non-integer number."""
    return json.loads(text, parse_float=WireFloat)


def _js_number(value: float) -> str:
    """A float the way JavaScript's JSON.stringify writes it (for values made locally)."""
    if not math.isfinite(value):
        return "null"  # what JSON.stringify does with NaN/Infinity
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, _, exp = text.partition("e")
    e = int(exp)
    if -7 < e < 21:  # JavaScript writes these positionally
        return format(value, "f").rstrip("0").rstrip(".") if e < 0 else str(int(value))
    return f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"


def canonical(value: Any, known: Mapping[int, str] | None = None) -> str:
    """json-stable-stringify of `value`: sorted keys, no whitespace, UTF-8 text.

    `known`: the canonical text of some of its dicts, by `id` (objects that stay alive
    meanwhile), written as they are instead of walked again: a job's hash and its
    stored items are the same requests' params."""
    parts: list[str] = []
    _write(value, parts, known or None)
    text = "".join(parts)
    if not text.isascii() and _SURROGATE.search(text):
        # a lone surrogate (JSON's "\ud800" parses to one): JSON.stringify escapes it,
        # and UTF-8 has no bytes for it
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def _write(value: Any, out: list[str], known: Mapping[int, str] | None) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, WireFloat):
        out.append(value.text)
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_js_number(value))
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, dict):
        if known is not None and (text := known.get(id(value))) is not None:
            out.append(text)
            return
        out.append("{")
        first = True
        for key in sorted(value):
            if not first:
                out.append(",")
            first = False
            out.append(encode_basestring(str(key)))
            out.append(":")
            _write(value[key], out, known)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, known)
        out.append("]")
    else:
        raise TypeError(f"not JSON data: {type(value).__name__}")
