"""The opcodes where a real unpickler would import or call something (GLOBAL, STACK_GLOBAL,
INST, OBJ, NEWOBJ, REDUCE, BUILD, EXT*, PERSID): here they only record what would happen."""

from __future__ import annotations

import struct

from doctor.io._pickle_ops import OPS, Op, op
from doctor.io._pickle_vm import (
    Call,
    Global,
    Opaque,
    PersId,
    PickleFormatError,
    Problem,
    _Reader,
    _State,
    describe,
)


# ---- imports, calls and objects: where code would run ----------------------------------------
@op(b"c")
def _global(s: _State, r: _Reader, offset: int, code: int) -> bool:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    s.push(s.add_global(module, name, "GLOBAL", offset))
    return False


@op(b"\x93")
def _stack_global(s: _State, r: _Reader, offset: int, code: int) -> bool:
    name = s.pop()
    module = s.pop()
    if type(module) is str and type(name) is str:
        s.push(s.add_global(module, name, "STACK_GLOBAL", offset))
        return False
    detail = f"STACK_GLOBAL imports module {describe(module)}, name {describe(name)}: not constant strings"
    s.run.problems.append(Problem("unresolved-global", "STACK_GLOBAL", offset, detail))
    s.push(Opaque("an import that cannot be resolved statically"))
    return False


def _ext(width: str) -> Op:
    size = struct.calcsize(width)

    def ext(s: _State, r: _Reader, offset: int, code: int) -> bool:
        code = struct.unpack(width, r.read(size))[0]
        s.run.problems.append(Problem(
            "unresolved-global", "EXT", offset,
            f"extension code {code} imports whatever copyreg's extension registry maps it to at load time"))
        s.push(Opaque(f"extension code {code}"))
        return False
    return ext


OPS[b"\x82"[0]], OPS[b"\x83"[0]], OPS[b"\x84"[0]] = _ext("<B"), _ext("<H"), _ext("<i")


@op(b"R")
def _reduce(s: _State, r: _Reader, offset: int, code: int) -> bool:
    args = s.pop()
    func = s.top()
    if not isinstance(args, (tuple, Opaque)):
        raise PickleFormatError(f"REDUCE arguments are {describe(args)}, not a tuple", offset)
    s.callable_use(func, "call", "REDUCE", offset)
    s.stack[-1] = Call(func, args, "reduce", offset)
    return False


@op(b"\x81")
def _newobj(s: _State, r: _Reader, offset: int, code: int) -> bool:
    args = s.pop()
    cls = s.pop()
    s.callable_use(cls, "new", "NEWOBJ", offset)
    s.push(Call(cls, args, "new", offset))
    return False


@op(b"\x92")
def _newobj_ex(s: _State, r: _Reader, offset: int, code: int) -> bool:
    kwargs = s.pop()
    args = s.pop()
    cls = s.pop()
    s.callable_use(cls, "new", "NEWOBJ_EX", offset)
    call = Call(cls, args, "new", offset)
    call.state = kwargs
    s.push(call)
    return False


@op(b"o")
def _obj(s: _State, r: _Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    if not items:
        raise PickleFormatError("OBJ without a class", offset)
    s.callable_use(items[0], "call", "OBJ", offset)
    s.push(Call(items[0], tuple(items[1:]), "obj", offset))
    return False


@op(b"i")
def _inst(s: _State, r: _Reader, offset: int, code: int) -> bool:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    cls = s.add_global(module, name, "INST", offset)
    cls.uses.add("call")
    s.push(Call(cls, tuple(s.pop_mark()), "inst", offset))
    return False


@op(b"b")
def _build(s: _State, r: _Reader, offset: int, code: int) -> bool:
    state = s.pop()
    target = s.top()
    if isinstance(target, Call):
        target.state = state
        if isinstance(target.func, Global):
            target.func.uses.add("build")
    return False


@op(b"P")
def _persid(s: _State, r: _Reader, offset: int, code: int) -> bool:
    pid = PersId(r.line().decode("ascii", "replace"))
    s.run.persids.append(pid.pid)
    s.push(pid)
    return False


@op(b"Q")
def _binpersid(s: _State, r: _Reader, offset: int, code: int) -> bool:
    pid = PersId(s.pop())
    s.run.persids.append(pid.pid)
    s.push(pid)
    return False


@op(b"\x97")
def _next_buffer(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.push(Opaque("an out-of-band buffer"))
    return False


@op(b"\x98")
def _readonly_buffer(s: _State, r: _Reader, offset: int, code: int) -> bool:
    s.top()
    return False
