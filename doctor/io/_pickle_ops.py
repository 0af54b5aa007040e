"""Opcode table of the static pickle machine (``_pickle_vm``): one small function per opcode,
following CPython's ``Lib/pickle.py`` semantics, with inert stand-ins instead of real imports
and calls. Each returns True only for STOP."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from doctor.io._pickle_vm import (
    MAX_KEPT_BYTES,
    Blob,
    Call,
    PickleFormatError,
    _Reader,
    _State,
    decode_string_literal,
    describe,
    key,
)

Op = Callable[[_State, _Reader, int, int], bool]
OPS: dict[int, Op] = {}


def op(*codes: bytes) -> Callable[[Op], Op]:
    def deco(func: Op) -> Op:
        for c in codes:
            OPS[c[0]] = func
        return func
    return deco


def _push(value: Any) -> Op:
    def push(s: _State, r: _Reader, offset: int, code: int) -> bool:
        s.push(value() if callable(value) else value)
        return False
    return push


for _code, _value in ((b"N", None), (b"\x88", True), (b"\x89", False), (b")", tuple)):
    OPS[_code[0]] = _push(_value)
OPS[b"]"[0]] = _push(list)
OPS[b"}"[0]] = _push(dict)
OPS[b"\x8f"[0]] = _push(set)


# ---- framing and protocol -------------------------------------------------------------------
@op(b"\x80")
def _proto(s: _State, r: _Reader, offset: int, code: int) -> bool:
    proto = r.read(1)[0]
    if proto > 5:
        raise PickleFormatError(f"unsupported pickle protocol {proto}", offset)
    s.run.protocol = proto
    return False


@op(b"\x95")
def _frame(s: _State, r: _Reader, offset: int, code: int) -> bool:
    r.read(8)  # frames only group opcodes; the walk continues through them
    return False


@op(b".")
def _stop(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.run.result = s.pop()
    return True


# ---- numbers --------------------------------------------------------------------------------
def _fixed(fmt: str) -> Op:
    size = struct.calcsize(fmt)

    def read(s: _State, r: _Reader, offset: int, code: int) -> bool:
        s.push(struct.unpack(fmt, r.read(size))[0])
        return False
    return read


OPS[b"J"[0]] = _fixed("<i")
OPS[b"K"[0]] = _fixed("<B")
OPS[b"M"[0]] = _fixed("<H")
OPS[b"G"[0]] = _fixed(">d")


@op(b"\x8a", b"\x8b")
def _long(s: _State, r: _Reader, offset: int, code: int) -> bool:
    n = r.read(1)[0] if code == 0x8A else struct.unpack("<i", r.read(4))[0]
    if n < 0:
        raise PickleFormatError("negative LONG4 length", offset)
    s.push(int.from_bytes(r.read(n), "little", signed=True) if n <= 4096 else Blob(n, "long"))
    return False



@op(b"I")
def _int(s: _State, r: _Reader, offset: int, code: int) -> bool:
    text = r.line()
    s.push({b"00": False, b"01": True}.get(text) if text in (b"00", b"01") else int(text))
    return False


@op(b"L")
def _long_text(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(int(r.line().rstrip(b"L")))
    return False


@op(b"F")
def _float(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(float(r.line()))
    return False


# ---- strings and bytes ----------------------------------------------------------------------
def _sized(width: str, kind: str) -> Op:
    size = struct.calcsize(width)

    def read(s: _State, r: _Reader, offset: int, code: int) -> bool:
        n = struct.unpack(width, r.read(size))[0]
        if n < 0:
            raise PickleFormatError(f"negative length {n}", offset)
        if n > MAX_KEPT_BYTES:
            r.skip(n)
            s.push(Blob(n, kind))
            return False
        raw = r.read(n)
        if kind == "str":
            s.push(raw.decode("utf-8", "surrogatepass"))
        elif kind == "bytes8str":  # (SHORT_)BINSTRING: str under the default ASCII encoding
            s.push(raw.decode("latin-1"))
        elif kind == "bytearray":
            s.push(bytearray(raw))
        else:
            s.push(raw)
        return False
    return read


OPS[b"\x8c"[0]] = _sized("<B", "str")       # SHORT_BINUNICODE
OPS[b"X"[0]] = _sized("<I", "str")          # BINUNICODE
OPS[b"\x8d"[0]] = _sized("<Q", "str")       # BINUNICODE8
OPS[b"U"[0]] = _sized("<B", "bytes8str")    # SHORT_BINSTRING
OPS[b"T"[0]] = _sized("<i", "bytes8str")    # BINSTRING
OPS[b"C"[0]] = _sized("<B", "bytes")        # SHORT_BINBYTES
OPS[b"B"[0]] = _sized("<I", "bytes")        # BINBYTES
OPS[b"\x8e"[0]] = _sized("<Q", "bytes")     # BINBYTES8
OPS[b"\x96"[0]] = _sized("<Q", "bytearray")  # BYTEARRAY8


@op(b"S")
def _string(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(decode_string_literal(r.line()))
    return False


@op(b"V")
def _unicode(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(r.line().decode("raw-unicode-escape"))
    return False


# ---- containers -----------------------------------------------------------------------------
@op(b"(")
def _mark(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.mark()
    return False


@op(b"t")
def _tuple(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(tuple(s.pop_mark()))
    return False


@op(b"\x85", b"\x86", b"\x87")
def _tuple_n(s: _State, r: _Reader, offset: int, code: int) -> bool:
    n = code - 0x84  # TUPLE1, TUPLE2, TUPLE3
    if len(s.stack) < n:
        raise IndexError("stack underflow")
    items = tuple(s.stack[-n:])
    del s.stack[-n:]
    s.push(items)
    return False



@op(b"l")
def _list(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(s.pop_mark())
    return False


@op(b"d")
def _dict(s: _State, r: _Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    if len(items) % 2:
        raise PickleFormatError("DICT with an odd number of items", offset)
    s.push({key(items[i]): items[i + 1] for i in range(0, len(items), 2)})
    return False


@op(b"\x91")
def _frozenset(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(frozenset(key(item) for item in s.pop_mark()))
    return False


@op(b"\x90")
def _additems(s: _State, r: _Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    target = s.top()
    if isinstance(target, set):
        target.update(key(item) for item in items)
    elif isinstance(target, Call):
        target.list_items.extend(items)
    else:
        raise PickleFormatError(f"ADDITEMS on {describe(target)}", offset)
    return False


@op(b"a")
def _append(s: _State, r: _Reader, offset: int, code: int) -> bool:
    item = s.pop()
    _extend(s.top(), [item], offset)
    return False


@op(b"e")
def _appends(s: _State, r: _Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    _extend(s.top(), items, offset)
    return False


def _extend(target: Any, items: list[Any], offset: int) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Call):
        target.list_items.extend(items)
    else:
        raise PickleFormatError(f"APPEND to {describe(target)}", offset)


@op(b"s")
def _setitem(s: _State, r: _Reader, offset: int, code: int) -> bool:
    value = s.pop()
    key = s.pop()
    _set(s.top(), [key, value], offset)
    return False


@op(b"u")
def _setitems(s: _State, r: _Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    _set(s.top(), items, offset)
    return False


def _set(target: Any, items: list[Any], offset: int) -> None:
    if len(items) % 2:
        raise PickleFormatError("SETITEMS with an odd number of items", offset)
    if isinstance(target, dict):
        dest = target
    elif isinstance(target, Call):
        dest = target.items
    else:
        raise PickleFormatError(f"SETITEM on {describe(target)}", offset)
    for i in range(0, len(items), 2):
        dest[key(items[i])] = items[i + 1]



# ---- stack and memo -------------------------------------------------------------------------
@op(b"0")
def _pop(s: _State, r: _Reader, offset: int, code: int) -> bool:
    if s.stack:
        s.stack.pop()
    else:
        s.pop_mark()
    return False


@op(b"1")
def _pop_mark(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.pop_mark()
    return False


@op(b"2")
def _dup(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(s.top())
    return False


def _memo_key(width: str) -> Callable[[_Reader], int]:
    if width == "line":
        return lambda r: int(r.line())
    size = struct.calcsize(width)
    return lambda r: struct.unpack(width, r.read(size))[0]


def _put(width: str) -> Op:
    key = _memo_key(width)

    def put(s: _State, r: _Reader, offset: int, code: int) -> bool:
        k = key(r)
        if k < 0:
            raise PickleFormatError("negative memo key", offset)
        s.memo[k] = s.top()
        return False
    return put


def _get(width: str) -> Op:
    key = _memo_key(width)

    def get(s: _State, r: _Reader, offset: int, code: int) -> bool:
        k = key(r)
        if k not in s.memo:
            raise PickleFormatError(f"memo key {k} was never stored", offset)
        s.push(s.memo[k])
        return False
    return get


OPS[b"p"[0]], OPS[b"q"[0]], OPS[b"r"[0]] = _put("line"), _put("<B"), _put("<I")
OPS[b"g"[0]], OPS[b"h"[0]], OPS[b"j"[0]] = _get("line"), _get("<B"), _get("<I")


@op(b"\x94")
def _memoize(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.memo[len(s.memo)] = s.top()
    return False


from doctor.io import _pickle_calls  # noqa: E402,F401  (registers the import/call opcodes)
