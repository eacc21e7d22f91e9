"""The agent's own VPP message codec: per-message Python compiled at connect time.

vpp-papi's serializer walks a tree of packer objects for every message, field by
field; on a real VPP that generic dispatch is most of the agent's apply time.
This module compiles, once per connection, one straight-line encoder and one
decoder per message: all fixed-size fields of a run go through a single
precompiled `struct.Struct`, variable-length parts are appended in between.

It compiles the very packer graph vpp-papi built from the `.api.json`
definitions the client loaded (and checked against VPP's CRCs), not the JSON a
second time: papi's registry has order-dependent quirks (an alias or enum field
with a `default` option re-registers the type globally, so later messages
inherit the default) and being byte-for-byte identical means honouring them.
Everything the compiler does not understand raises `Unsupported`; the client
then keeps using papi for that message. At run time an encoder that raises
hands the message to papi as well, so papi decides what is an error and says
so in its own words (tests/unit/test_vpp_codec.py compares both over generated
arguments).

Decoded messages are papi's own namedtuple classes (same attribute names, same
values and value types: ipaddress objects, papi's enum flags), so code that
reads replies cannot tell the difference.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from vpp_papi import vpp_format
from vpp_papi.vpp_serializer import (
    BaseTypes,
    FixedList,
    FixedList_u8,
    String,
    VLAList,
    VPPEnumType,
    VPPType,
    VPPTypeAlias,
    VPPUnionType,
)
from vpp_papi.vpp_serializer import types as papi_types

PackFn = Callable[[dict[str, Any], int, int, int], bytes]
UnpackFn = Callable[[bytes], Any]

# Decoded addresses, by their bytes: a dump repeats them (every route via a tunnel has
# the next hop 0.0.0.0; a union holds its bytes as IPv4 and as IPv6), and reconcile
# reads the same routes and profiles each period. ipaddress objects are immutable.
ADDRESS_CACHE_SIZE = 8192


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _ip4(packed: bytes) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(packed)


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _ip6(packed: bytes) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(packed)


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _net4(packed: bytes, plen: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((packed, plen), False)


# Top-level request fields the client fills in itself (parameters of the encoder).
_HEADER_PARAMS = MappingProxyType({"_vl_msg_id": "_mid", "client_index": "_ci", "context": "_ctx"})
_U32 = struct.Struct(">I")
_F64 = struct.Struct("=d")  # papi packs f64 in native order, unlike every other type


class Unsupported(Exception):
    """A definition this compiler does not handle; papi keeps serving the message."""


class _Src:
    """Source text of one generated function plus the objects it refers to."""

    def __init__(self, ns: dict[str, Any], counter: list[int]) -> None:
        self.lines: list[str] = []
        self.ns = ns
        self._counter = counter

    def var(self, prefix: str = "v") -> str:
        self._counter[0] += 1
        return f"{prefix}{self._counter[0]}"

    def const(self, obj: Any, prefix: str = "K") -> str:
        for name, value in self.ns.items():
            if value is obj and name.startswith(prefix):
                return name
        name = self.var(prefix)
        self.ns[name] = obj
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _fmt_char(base: BaseTypes) -> str:
    fmt = base.packer.format
    if fmt[0] != ">" or len(fmt) != 2:
        raise Unsupported(f"base type format {fmt!r}")
    return fmt[1]


def _default(packer: Any) -> Any:
    options = getattr(packer, "options", None)
    if options and "default" in options:
        return options["default"]
    return 0


def _try_convert(table: dict[str, Callable[[Any], Any]], swallow: bool) -> Callable[[Any], Any]:
    """papi's conversion of ipaddress objects and text, looked up by exact class name."""

    def convert(value: Any) -> Any:
        fn = table.get(type(value).__name__)
        if fn is None:
            return value
        if not swallow:
            return fn(value)
        try:
            return fn(value)
        except (OSError, TypeError):  # papi then packs the value unconverted (and fails)
            return value

    return convert


# -- encoders ---------------------------------------------------------------------------


class _PackGen:
    """Emits code that packs one value into the current fixed run or the parts list."""

    def __init__(self, src: _Src) -> None:
        self.src = src
        self.fmt: list[str] = []
        self.args: list[str] = []
        self.dynamic = False  # parts list in use

    # the fixed run ----------------------------------------------------------------
    def leaf(self, fmt: str, expr: str) -> None:
        self.fmt.append(fmt)
        self.args.append(expr)

    def flush(self, indent: int) -> None:
        if not self.fmt:
            return
        s = self.src.const(struct.Struct(">" + "".join(self.fmt)), "S")
        self.src.emit(indent, f"P.append({s}.pack({', '.join(self.args)}))")
        self.fmt, self.args = [], []

    def part(self, indent: int, expr: str) -> None:
        self.flush(indent)
        self.dynamic = True
        self.src.emit(indent, f"P.append({expr})")

    # values -----------------------------------------------------------------------
    def value(self, packer: Any, v: str, kw: str, indent: int) -> None:
        """Pack the value held in variable `v`; `kw` holds the enclosing struct's dict."""
        src = self.src
        if isinstance(packer, VPPEnumType):  # before BaseTypes: not a subclass, but be explicit
            ch = _fmt_char(papi_types[packer.enumtype])
            self._scalar(ch, _default(packer), v, indent)
        elif isinstance(packer, BaseTypes):
            if packer._elements:
                raise Unsupported("bare fixed base array")
            if packer.packer.format == "=d":
                x = src.var()
                self._defaulted(x, v, _default(packer), indent)
                self.leaf("8s", f"{src.const(_F64, 'F')}.pack({x})")
            else:
                self._scalar(_fmt_char(packer), _default(packer), v, indent)
        elif isinstance(packer, String):
            self._string(packer, v, indent)
        elif isinstance(packer, FixedList_u8):
            x = src.var()
            src.emit(indent, f"if not {v}:")
            src.emit(indent + 1, f"{x} = b''")
            src.emit(indent, f"elif len({v}) > {packer.num}:")
            src.emit(indent + 1, "raise ValueError('fixed u8 array too long')")
            src.emit(indent, "else:")
            src.emit(indent + 1, f"{x} = {v}")
            self.leaf(f"{packer.num}s", x)
        elif isinstance(packer, FixedList):
            elems = [src.var("e") for _ in range(packer.num)]
            src.emit(indent, f"if len({v}) != {packer.num}:")
            src.emit(indent + 1, "raise ValueError('fixed array length')")
            src.emit(indent, f"{', '.join(elems)}, = {v}")
            for e in elems:
                self.value(packer.packer, e, e, indent)
        elif isinstance(packer, VLAList):
            self._vla(packer, v, kw, indent)
        elif isinstance(packer, VPPUnionType):
            fn = _pack_function(packer, src)
            x = src.var()
            src.emit(indent, f"{x} = {fn}({v}, {kw})")
            self.leaf(f"{packer.size}s", x)
        elif isinstance(packer, VPPTypeAlias):
            x = src.var()
            src.emit(indent, f"{x} = {v}")
            if packer.name in vpp_format.conversion_table:
                conv = src.const(_try_convert(vpp_format.conversion_table[packer.name], True),
                                 "C")
                src.emit(indent, f"if {x} and type({x}) is not dict and type({x}) is not bytes:")
                src.emit(indent + 1, f"{x} = {conv}({x})")
            d = src.const(_default(packer), "D")
            src.emit(indent, f"if {x} is None:")
            src.emit(indent + 1, f"{x} = {d}")
            self.value(packer.packer, x, kw, indent)
        elif isinstance(packer, VPPType):
            self._struct(packer, v, indent)
        else:
            raise Unsupported(f"{type(packer).__name__}")

    def _defaulted(self, x: str, v: str, default: Any, indent: int) -> None:
        d = repr(default) if isinstance(default, int) else self.src.const(default, "D")
        self.src.emit(indent, f"{x} = {v} if {v} is not None else {d}")

    def _scalar(self, ch: str, default: Any, v: str, indent: int) -> None:
        x = self.src.var()
        self._defaulted(x, v, default, indent)
        self.leaf(ch, x)

    def _string(self, packer: String, v: str, indent: int) -> None:
        src = self.src
        limit = packer.limit
        x = src.var()
        if packer.fixed:
            if limit != packer.num:
                raise Unsupported("fixed string with a limit")
            src.emit(indent, f"if not {v}:")
            src.emit(indent + 1, f"{x} = b''")
            src.emit(indent, "else:")
            src.emit(indent + 1, f"if len({v}) > {limit - 1}:")
            src.emit(indent + 2, "raise ValueError('string too long')")
            src.emit(indent + 1, f"{x} = {v}.encode('ascii')")
            self.leaf(f"{limit}s", x)
            return
        self.flush(indent)
        self.dynamic = True
        u32 = src.const(_U32, "U")
        src.emit(indent, f"if not {v}:")
        src.emit(indent + 1, "P.append(b'\\x00\\x00\\x00\\x00')")
        src.emit(indent, "else:")
        if limit:
            src.emit(indent + 1, f"if len({v}) > {limit - 1}:")
            src.emit(indent + 2, "raise ValueError('string too long')")
        src.emit(indent + 1, f"P.append({u32}.pack(len({v})) + {v}.encode('ascii'))")

    def _vla(self, packer: VLAList, v: str, kw: str, indent: int) -> None:
        src = self.src
        self.flush(indent)
        self.dynamic = True
        length = _HEADER_PARAMS.get(packer.length_field)
        length_expr = length if length and kw == "d" else f"{kw}[{packer.length_field!r}]"
        src.emit(indent, f"if {v}:")
        src.emit(indent + 1, f"if len({v}) != {length_expr}:")
        src.emit(indent + 2, "raise ValueError('variable array length')")
        if packer.packer.size == 1 and packer.field_type == "u8":
            src.emit(indent + 1,
                     f"P.append(b''.join({v}) if isinstance({v}, list) else bytes({v}))")
        else:
            fn = _pack_function(packer.packer, src)
            e = src.var("e")
            src.emit(indent + 1, f"for {e} in {v}:")
            src.emit(indent + 2, f"P.append({fn}({e}, {e}))")

    def _struct(self, packer: VPPType, v: str, indent: int) -> None:
        src = self.src
        d = src.var("d")
        src.emit(indent, f"{d} = {v}")
        if packer.name in vpp_format.conversion_table:
            conv = src.const(_try_convert(vpp_format.conversion_table[packer.name], False), "C")
            src.emit(indent, f"if {d} and type({d}) is not dict and type({d}) is not bytes:")
            src.emit(indent + 1, f"{d} = {conv}({d})")
        src.emit(indent, f"if {d} and type({d}) is not dict:")
        src.emit(indent + 1, "raise ValueError('not a dict')")
        names = [src.var("f") for _ in packer.fields]
        src.emit(indent, f"if {d}:")
        for name, fname in zip(names, packer.fields, strict=True):
            src.emit(indent + 1, f"{name} = {d}.get({fname!r})")
        src.emit(indent, "else:")
        src.emit(indent + 1, f"{' = '.join(names)} = None")
        for name, sub in zip(names, packer.packers, strict=True):
            self.value(sub, name, d, indent)


def _pack_function(packer: Any, outer: _Src) -> str:
    """A standalone `fn(value, kwargs) -> bytes` for array elements and union arms."""
    key = ("pack", id(packer))
    cache: dict[Any, str] = outer.ns.setdefault("__fns__", {})
    if key in cache:
        return cache[key]
    src = _Src(outer.ns, outer._counter)
    name = src.var("pk")
    cache[key] = name
    if isinstance(packer, VPPUnionType):
        arms = {k: _pack_function(p, outer) for k, p in packer.packers.items()}
        for p in packer.packers.values():
            if isinstance(p, VPPType) and _has_vla(p):
                raise Unsupported("union arm with a variable-length array")
        table = src.const({k: outer.ns[f] for k, f in arms.items()}, "A")
        src.emit(0, f"def {name}(v, kw):")
        src.emit(1, "if not v:")
        src.emit(2, "return b''")
        src.emit(1, "for k, x in v.items():")
        src.emit(2, f"return {table}[k](x, kw)")
        src.emit(1, "return b''")
    else:
        body = _Src(outer.ns, outer._counter)
        gen = _PackGen(body)
        gen.value(packer, "v", "kw", 1)
        gen.flush(1)
        src.emit(0, f"def {name}(v, kw):")
        src.emit(1, "P = []")
        src.lines += body.lines
        src.emit(1, "return b''.join(P)")
    exec("\n".join(src.lines), outer.ns)  # generated from papi's definitions
    return name


def _has_vla(packer: VPPType) -> bool:
    return any(isinstance(p, VLAList | String) and not getattr(p, "fixed", False)
               for p in packer.packers)


def compile_pack(msgdef: VPPType) -> PackFn:
    """`fn(fields, msg_id, client_index, context) -> body bytes`, as papi packs them."""
    ns: dict[str, Any] = {}
    counter = [0]
    body = _Src(ns, counter)
    gen = _PackGen(body)
    names = []
    for fname, sub in zip(msgdef.fields, msgdef.packers, strict=True):
        if fname in _HEADER_PARAMS:
            var = _HEADER_PARAMS[fname]
        else:
            var = body.var("f")
            body.emit(1, f"{var} = d.get({fname!r})")
        names.append(var)
        gen.value(sub, var, "d", 1)
    lines = [f"def pack_{msgdef.name}(d, _mid, _ci, _ctx):"]
    if gen.dynamic:
        gen.flush(1)
        lines.append("    P = []")
        lines += body.lines
        lines.append("    return b''.join(P)")
    else:
        s = body.const(struct.Struct(">" + "".join(gen.fmt)), "S")
        lines += body.lines
        lines.append(f"    return {s}.pack({', '.join(gen.args)})")
    exec("\n".join(lines), ns)  # generated from papi's definitions
    fn: PackFn = ns[f"pack_{msgdef.name}"]
    return fn


# -- decoders ---------------------------------------------------------------------------


class _UnpackGen:
    """Emits code that reads one value; fixed runs are read with one struct each.

    Leaves are collected into the current run; the code that builds values from
    them is held back until the run is read (`flush`), which happens before any
    variable-length part and at the end.
    """

    def __init__(self, src: _Src, indent: int) -> None:
        self.src = src
        self.indent = indent
        self.fmt: list[str] = []
        self.vars: list[str] = []
        self.later: list[str] = []
        self.off_var = "b"  # runtime base of the current position
        self.off = 0  # static offset from off_var
        self.run_start = 0

    def pos(self, delta: int = 0) -> str:
        return f"{self.off_var} + {self.off + delta}"

    def leaf(self, fmt: str, size: int) -> str:
        if not self.fmt:
            self.run_start = self.off
        x = self.src.var("r")
        self.fmt.append(fmt)
        self.vars.append(x)
        self.off += size
        return x

    def build(self, line: str) -> None:
        self.later.append(line)

    def flush(self) -> None:
        if self.fmt:
            s = self.src.const(struct.Struct(">" + "".join(self.fmt)), "S")
            self.src.emit(self.indent, f"{', '.join(self.vars)}, = {s}.unpack_from(buf, "
                                       f"{self.off_var} + {self.run_start})")
            self.fmt, self.vars = [], []
        for line in self.later:
            self.src.emit(self.indent, line)
        self.later = []

    def moved(self, expr: str) -> None:
        """The position is now `expr` (after a variable-length part)."""
        o = self.src.var("o")
        self.src.emit(self.indent, f"{o} = {expr}")
        self.off_var, self.off = o, 0

    # values -----------------------------------------------------------------------
    def value(self, packer: Any, ntc: bool, siblings: list[str]) -> str:
        """Read one value; returns the variable that holds it once flushed."""
        src = self.src
        if isinstance(packer, VPPEnumType):
            base = papi_types[packer.enumtype]
            r = self.leaf(_fmt_char(base), base.size)
            x = src.var()
            self.build(f"{x} = {src.const(packer.enum, 'E')}({r})")
            return x
        if isinstance(packer, BaseTypes):
            if packer._elements:
                raise Unsupported("bare fixed base array")
            if packer.packer.format == "=d":
                r = self.leaf("8s", 8)
                x = src.var()
                self.build(f"{x}, = {src.const(_F64, 'F')}.unpack({r})")
                return x
            return self.leaf(_fmt_char(packer), packer.size)
        if isinstance(packer, String):
            if packer.fixed:
                r = self.leaf(f"{packer.num}s", packer.num)
                x = src.var()
                self.build(f"{x} = {r}.split(b'\\x00', 1)[0].decode('ascii')")
                return x
            self.flush()
            n, x = src.var("n"), src.var()
            u32 = src.const(_U32, "U")
            i = self.indent
            src.emit(i, f"{n}, = {u32}.unpack_from(buf, {self.pos()})")
            src.emit(i, f"if {n}:")
            src.emit(i + 1, f"if {self.pos(4)} + {n} > len(buf):")
            src.emit(i + 2, "raise ValueError('truncated string')")
            src.emit(i + 1, f"{x} = bytes(buf[{self.pos(4)}:{self.pos(4)} + {n}])"
                            ".decode('ascii', errors='replace')")
            src.emit(i, "else:")
            src.emit(i + 1, f"{x} = ''")
            # papi consumes no length word for an empty string; be identical
            self.moved(f"{self.pos()} + (4 + {n} if {n} else 0)")
            return x
        if isinstance(packer, FixedList_u8):
            return self.leaf(f"{packer.num}s", packer.num)
        if isinstance(packer, FixedList):
            if _flat_struct(packer.packer) and packer.num >= 4:
                size = packer.num * _fixed_size(packer.packer)
                r = self.leaf(f"{size}s", size)
                x = src.var()
                self.build(f"{x} = list({_cached_array_function(packer, ntc, src)}({r}))")
                return x
            elems = [self.value(packer.packer, ntc, []) for _ in range(packer.num)]
            x = src.var()
            self.build(f"{x} = [{', '.join(elems)}]")
            return x
        if isinstance(packer, VLAList):
            return self._vla(packer, ntc, siblings)
        if isinstance(packer, VPPUnionType):
            r = self.leaf(f"{packer.size}s", packer.size)
            arms = [_unpack_function(p, ntc, src) for p in packer.packers.values()]
            x = src.var()
            t = src.const(packer.tuple, "T")
            self.build(f"{x} = {t}({', '.join(f'{a}({r}, 0)[0]' for a in arms)})")
            return x
        if isinstance(packer, VPPTypeAlias):
            conv = not ntc and packer.name in vpp_format.conversion_unpacker_table
            inner = self.value(packer.packer, ntc or conv, siblings)
            if not conv:
                return inner
            x = src.var()
            fn = {"vl_api_ip4_address_t": _ip4, "vl_api_ip6_address_t": _ip6}.get(
                packer.name, vpp_format.conversion_unpacker_table[packer.name])
            self.build(f"{x} = {src.const(fn, 'C')}({inner})")
            return x
        if isinstance(packer, VPPType):
            return self._struct(packer, ntc)
        raise Unsupported(f"{type(packer).__name__}")

    def _vla(self, packer: VLAList, ntc: bool, siblings: list[str]) -> str:
        src = self.src
        self.flush()
        n = siblings[packer.index]
        x = src.var()
        i = self.indent
        if packer.packer.size == 1 and packer.field_type == "u8":
            src.emit(i, f"if {self.pos()} + {n} > len(buf):")
            src.emit(i + 1, "raise ValueError('truncated array')")
            src.emit(i, f"{x} = bytes(buf[{self.pos()}:{self.pos()} + {n}]) if {n} else b''")
            self.moved(f"{self.pos()} + ({n} if {n} else 0)")
            return x
        size = _fixed_size(packer.packer)
        fn = _unpack_function(packer.packer, ntc, src)
        k = src.var("k")
        src.emit(i, f"{x} = [{fn}(buf, {self.pos()} + {k} * {size})[0] for {k} in range({n})]")
        self.moved(f"{self.pos()} + {n} * {size}")
        return x

    def _struct(self, packer: VPPType, ntc: bool) -> str:
        src = self.src
        conv = not ntc and packer.name in vpp_format.conversion_unpacker_table
        fast = conv and _address_shape(packer)
        if fast:
            return self._address(packer, fast)
        fields: list[str] = []
        for sub in packer.packers:
            fields.append(self.value(sub, ntc or conv, fields))
        x = src.var()
        self.build(f"{x} = {src.const(packer.tuple, 'T')}({', '.join(fields)})")
        if conv:
            fn = src.const(vpp_format.conversion_unpacker_table[packer.name], "C")
            self.build(f"{x} = {fn}({x})")
        return x

    def _address(self, packer: VPPType, shape: str) -> str:
        """address_t / prefix_t / address_with_prefix_t straight to ipaddress objects."""
        src = self.src
        x = src.var()
        if shape == "address":
            af = self.leaf("I" if _enum_size(packer.packers[0]) == 4 else "B",
                           _enum_size(packer.packers[0]))
            raw = self.leaf("16s", 16)
            a4, a6 = src.const(_ip4, "I"), src.const(_ip6, "I")
            self.build(f"{x} = {a4}({raw}[:4]) if {af} == 0 else "
                       f"{a6}({raw}) if {af} == 1 else None")
            return x
        addr = packer.packers[0]
        af = self.leaf("I" if _enum_size(addr.packers[0]) == 4 else "B",
                       _enum_size(addr.packers[0]))
        raw = self.leaf("16s", 16)
        plen = self.leaf("B", 1)
        if shape == "prefix":
            c4 = src.const(_net4, "I")
            c6 = src.const(ipaddress.IPv6Network, "I")
            self.build(f"{x} = {c4}({raw}[:4], {plen}) if {af} == 0 else "
                       f"{c6}(({raw}, {plen}), False) if {af} == 1 else None")
        else:
            c4 = src.const(ipaddress.IPv4Interface, "I")
            c6 = src.const(ipaddress.IPv6Interface, "I")
            self.build(f"{x} = {c4}(({raw}[:4], {plen})) if {af} == 0 else "
                       f"{c6}(({raw}, {plen})) if {af} == 1 else None")
        return x


def _enum_size(packer: Any) -> int:
    if not isinstance(packer, VPPEnumType):
        raise Unsupported("address family is not an enum")
    size: int = papi_types[packer.enumtype].size
    if size not in (1, 4):
        raise Unsupported("address family size")
    return size


def _address_shape(packer: VPPType) -> str:
    """Which fast path fits this converted struct, or '' for papi's converter."""
    def is_address(p: Any) -> bool:
        return (isinstance(p, VPPType) and p.fields == ["af", "un"]
                and isinstance(p.packers[0], VPPEnumType)
                and isinstance(p.packers[1], VPPUnionType)
                and list(p.packers[1].packers) == ["ip4", "ip6"] and p.packers[1].size == 16)

    def is_u8(p: Any) -> bool:
        return isinstance(p, BaseTypes) and p.packer.format == ">B"

    if packer.name == "vl_api_address_t" and is_address(packer):
        return "address"
    if (packer.name in ("vl_api_prefix_t", "vl_api_address_with_prefix_t")
            and packer.fields == ["address", "len"] and is_address(packer.packers[0])
            and is_u8(packer.packers[1])):
        return "prefix" if packer.name == "vl_api_prefix_t" else "interface"
    return ""


def _fixed_size(packer: Any) -> int:
    """Wire size of a fixed-size type; Unsupported for variable ones."""
    if isinstance(packer, VLAList) or (isinstance(packer, String) and not packer.fixed):
        raise Unsupported("variable-size element")
    if isinstance(packer, VPPType):
        return sum(_fixed_size(p) for p in packer.packers)
    if isinstance(packer, VPPTypeAlias):
        return _fixed_size(packer.packer)
    if isinstance(packer, FixedList):
        return packer.num * _fixed_size(packer.packer)
    size = packer.size
    if not isinstance(size, int):
        raise Unsupported("unknown size")
    return size


def _unpack_function(packer: Any, ntc: bool, outer: _Src) -> str:
    """A standalone `fn(buf, offset) -> (value, size)` for array elements and union arms."""
    key = ("unpack", id(packer), ntc)
    cache: dict[Any, str] = outer.ns.setdefault("__fns__", {})
    if key in cache:
        return cache[key]
    size = _fixed_size(packer)
    body = _Src(outer.ns, outer._counter)
    name = body.var("up")
    cache[key] = name
    gen = _UnpackGen(body, 1)
    x = gen.value(packer, ntc, [])
    gen.flush()
    lines = [f"def {name}(buf, b):", *body.lines, f"    return {x}, {size}"]
    exec("\n".join(lines), outer.ns)  # generated from papi's definitions
    return name


def _flat_struct(packer: Any) -> bool:
    """A struct of plain integers and enums only: its decoded tuple is immutable."""
    return (isinstance(packer, VPPType)
            and packer.name not in vpp_format.conversion_unpacker_table
            and all(isinstance(p, VPPEnumType) or (isinstance(p, BaseTypes) and not p._elements
                                                    and p.packer.format != "=d")
                    for p in packer.packers))


def _cached_array_function(packer: FixedList, ntc: bool, outer: _Src) -> str:
    """`fn(raw) -> tuple of elements` for a fixed array of flat structs, remembered by its
    bytes: a route's sixteen MPLS labels per path are nearly always all zero."""
    key = ("array", id(packer), ntc)
    cache: dict[Any, str] = outer.ns.setdefault("__fns__", {})
    if key in cache:
        return cache[key]
    up = outer.ns[_unpack_function(packer.packer, ntc, outer)]
    size, num = _fixed_size(packer.packer), packer.num

    def elements(raw: bytes) -> tuple[Any, ...]:
        return tuple(up(raw, k * size)[0] for k in range(num))

    name = outer.var("ar")
    outer.ns[name] = functools.lru_cache(maxsize=256)(elements)
    cache[key] = name
    return name


def compile_unpack(msgdef: VPPType) -> UnpackFn:
    """`fn(frame) -> papi's namedtuple`, equal in value and types to `msgdef.unpack`."""
    ns: dict[str, Any] = {}
    body = _Src(ns, [0])
    gen = _UnpackGen(body, 1)
    fields: list[str] = []
    for sub in msgdef.packers:
        fields.append(gen.value(sub, False, fields))
    gen.flush()
    t = body.const(msgdef.tuple, "T")
    lines = [f"def unpack_{msgdef.name}(buf, b=0):", *body.lines,
             f"    return {t}({', '.join(fields)})"]
    exec("\n".join(lines), ns)  # generated from papi's definitions
    fn: UnpackFn = ns[f"unpack_{msgdef.name}"]
    return fn


@dataclass
class CodecStats:
    """How often the compiled code served a message and how often papi had to."""

    packed: int = 0
    pack_fallbacks: int = 0
    unpacked: int = 0
    unpack_fallbacks: int = 0
    uncovered: dict[str, str] = field(default_factory=dict)  # name -> why not compiled


def try_compile(msgdef: VPPType, stats: CodecStats) -> tuple[PackFn | None, UnpackFn | None]:
    """Both directions for one message; None where papi has to serve it."""
    pack: PackFn | None = None
    unpack: UnpackFn | None = None
    try:
        pack = compile_pack(msgdef)
    except (Unsupported, KeyError, AttributeError, TypeError) as e:
        stats.uncovered[msgdef.name] = f"encode: {e!r}"
    try:
        unpack = compile_unpack(msgdef)
    except (Unsupported, KeyError, AttributeError, TypeError, IndexError) as e:
        stats.uncovered[msgdef.name] = f"decode: {e!r}"
    return pack, unpack


def papi_unpack(msgdef: VPPType, frame: bytes) -> Any:
    """papi's decode of `frame`, leaving papi as it was when it raises: vpp-papi 2.4.2
    sets `toplevelconversion` on a type while it converts it and clears it only on
    success, so after a frame it refuses, the next decode that meets that type inside
    another converted one converts it twice and fails (seen as a flaky test)."""
    try:
        return msgdef.unpack(frame)[0]
    except Exception:
        _clear_conversion(msgdef, set())
        raise


def _clear_conversion(packer: Any, seen: set[int]) -> None:
    if id(packer) in seen:
        return
    seen.add(id(packer))
    if isinstance(packer, VPPType | VPPTypeAlias):
        packer.toplevelconversion = False
    if isinstance(packer, VPPType):
        subs = list(packer.packers)
    elif isinstance(packer, VPPUnionType):
        subs = list(packer.packers.values())
    elif isinstance(packer, VPPTypeAlias | VLAList | FixedList):
        subs = [packer.packer]
    else:
        return
    for sub in subs:
        _clear_conversion(sub, seen)
