"""The data opcodes of the static pickle machine (``vm``): one small function per opcode,
following CPython's ``Lib/pickle.py`` semantics, with inert stand-ins instead of real imports
and calls. Each returns True only for STOP."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from doctor.io.pickle.values import (
    MAX_KEPT_BYTES,
    Blob,
    Call,
    Op,
    OpTable,
    PickleFormatError,
    Reader,
    State,
    decode_string_literal,
    describe,
    key,
)

TABLE = OpTable()


def _push(value: Any) -> Op:
    def push(s: State, r: Reader, offset: int, code: int) -> bool:
        s.push(value() if callable(value) else value)
        return False
    return push


for _code, _value in ((b"N", None), (b"\x88", True), (b"\x89", False), (b")", tuple)):
    TABLE.add(_code, _push(_value))
TABLE.add(b"]", _push(list))
TABLE.add(b"}", _push(dict))
TABLE.add(b"\x8f", _push(set))


# ---- framing and protocol -------------------------------------------------------------------
@TABLE.op(b"\x80")
def _proto(s: State, r: Reader, offset: int, code: int) -> bool:
    proto = r.read(1)[0]
    if proto > 5:
        raise PickleFormatError(f"unsupported pickle protocol {proto}", offset)
    s.run.protocol = proto
    return False


@TABLE.op(b"\x95")
def _frame(s: State, r: Reader, offset: int, code: int) -> bool:
    r.read(8)  # frames only group opcodes; the walk continues through them
    return False


@TABLE.op(b".")
def _stop(s: State, r: Reader, offset: int, code: int) -> bool:
    s.run.result = s.pop()
    return True


# ---- numbers --------------------------------------------------------------------------------
def _fixed(fmt: str) -> Op:
    size = struct.calcsize(fmt)

    def read(s: State, r: Reader, offset: int, code: int) -> bool:
        s.push(struct.unpack(fmt, r.read(size))[0])
        return False
    return read


TABLE.add(b"J", _fixed("<i"))
TABLE.add(b"K", _fixed("<B"))
TABLE.add(b"M", _fixed("<H"))
TABLE.add(b"G", _fixed(">d"))


@TABLE.op(b"\x8a", b"\x8b")
def _long(s: State, r: Reader, offset: int, code: int) -> bool:
    n = r.read(1)[0] if code == 0x8A else struct.unpack("<i", r.read(4))[0]
    if n < 0:
        raise PickleFormatError("negative LONG4 length", offset)
    s.push(int.from_bytes(r.read(n), "little", signed=True) if n <= 4096 else Blob(n, "long"))
    return False



@TABLE.op(b"I")
def _int(s: State, r: Reader, offset: int, code: int) -> bool:
    text = r.line()
    s.push({b"00": False, b"01": True}.get(text) if text in (b"00", b"01") else int(text))
    return False


@TABLE.op(b"L")
def _long_text(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(int(r.line().rstrip(b"L")))
    return False


@TABLE.op(b"F")
def _float(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(float(r.line()))
    return False


# ---- strings and bytes ----------------------------------------------------------------------
def _sized(width: str, kind: str) -> Op:
    size = struct.calcsize(width)

    def read(s: State, r: Reader, offset: int, code: int) -> bool:
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


TABLE.add(b"\x8c", _sized("<B", "str"))       # SHORT_BINUNICODE
TABLE.add(b"X", _sized("<I", "str"))          # BINUNICODE
TABLE.add(b"\x8d", _sized("<Q", "str"))       # BINUNICODE8
TABLE.add(b"U", _sized("<B", "bytes8str"))    # SHORT_BINSTRING
TABLE.add(b"T", _sized("<i", "bytes8str"))    # BINSTRING
TABLE.add(b"C", _sized("<B", "bytes"))        # SHORT_BINBYTES
TABLE.add(b"B", _sized("<I", "bytes"))        # BINBYTES
TABLE.add(b"\x8e", _sized("<Q", "bytes"))     # BINBYTES8
TABLE.add(b"\x96", _sized("<Q", "bytearray"))  # BYTEARRAY8


@TABLE.op(b"S")
def _string(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(decode_string_literal(r.line()))
    return False


@TABLE.op(b"V")
def _unicode(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(r.line().decode("raw-unicode-escape"))
    return False


# ---- containers -----------------------------------------------------------------------------
@TABLE.op(b"(")
def _mark(s: State, r: Reader, offset: int, code: int) -> bool:
    s.mark()
    return False


@TABLE.op(b"t")
def _tuple(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(tuple(s.pop_mark()))
    return False


@TABLE.op(b"\x85", b"\x86", b"\x87")
def _tuple_n(s: State, r: Reader, offset: int, code: int) -> bool:
    n = code - 0x84  # TUPLE1, TUPLE2, TUPLE3
    if len(s.stack) < n:
        raise IndexError("stack underflow")
    items = tuple(s.stack[-n:])
    del s.stack[-n:]
    s.push(items)
    return False



@TABLE.op(b"l")
def _list(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(s.pop_mark())
    return False


@TABLE.op(b"d")
def _dict(s: State, r: Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    if len(items) % 2:
        raise PickleFormatError("DICT with an odd number of items", offset)
    s.push({key(items[i]): items[i + 1] for i in range(0, len(items), 2)})
    return False


@TABLE.op(b"\x91")
def _frozenset(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(frozenset(key(item) for item in s.pop_mark()))
    return False


@TABLE.op(b"\x90")
def _additems(s: State, r: Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    target = s.top()
    if isinstance(target, set):
        target.update(key(item) for item in items)
    elif isinstance(target, Call):
        target.list_items.extend(items)
    else:
        raise PickleFormatError(f"ADDITEMS on {describe(target)}", offset)
    return False


@TABLE.op(b"a")
def _append(s: State, r: Reader, offset: int, code: int) -> bool:
    item = s.pop()
    _extend(s.top(), [item], offset)
    return False


@TABLE.op(b"e")
def _appends(s: State, r: Reader, offset: int, code: int) -> bool:
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


@TABLE.op(b"s")
def _setitem(s: State, r: Reader, offset: int, code: int) -> bool:
    value = s.pop()
    key = s.pop()
    _set(s.top(), [key, value], offset)
    return False


@TABLE.op(b"u")
def _setitems(s: State, r: Reader, offset: int, code: int) -> bool:
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
@TABLE.op(b"0")
def _pop(s: State, r: Reader, offset: int, code: int) -> bool:
    if s.stack:
        s.stack.pop()
    else:
        s.pop_mark()
    return False


@TABLE.op(b"1")
def _pop_mark(s: State, r: Reader, offset: int, code: int) -> bool:
    s.pop_mark()
    return False


@TABLE.op(b"2")
def _dup(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(s.top())
    return False


def _memo_key(width: str) -> Callable[[Reader], int]:
    if width == "line":
        return lambda r: int(r.line())
    size = struct.calcsize(width)
    return lambda r: struct.unpack(width, r.read(size))[0]


def _put(width: str) -> Op:
    key = _memo_key(width)

    def put(s: State, r: Reader, offset: int, code: int) -> bool:
        k = key(r)
        if k < 0:
            raise PickleFormatError("negative memo key", offset)
        s.memo[k] = s.top()
        return False
    return put


def _get(width: str) -> Op:
    key = _memo_key(width)

    def get(s: State, r: Reader, offset: int, code: int) -> bool:
        k = key(r)
        if k not in s.memo:
            raise PickleFormatError(f"memo key {k} was never stored", offset)
        s.push(s.memo[k])
        return False
    return get


TABLE.add(b"p", _put("line"))
TABLE.add(b"q", _put("<B"))
TABLE.add(b"r", _put("<I"))
TABLE.add(b"g", _get("line"))
TABLE.add(b"h", _get("<B"))
TABLE.add(b"j", _get("<I"))


@TABLE.op(b"\x94")
def _memoize(s: State, r: Reader, offset: int, code: int) -> bool:
    s.memo[len(s.memo)] = s.top()
    return False
