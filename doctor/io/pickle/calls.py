"""The opcodes where a real unpickler would import or call something (GLOBAL, STACK_GLOBAL,
INST, OBJ, NEWOBJ, REDUCE, BUILD, EXT*, PERSID): here they only record what would happen."""

from __future__ import annotations

import struct

from doctor.io.pickle.values import (
    Call,
    Global,
    Op,
    Opaque,
    OpTable,
    PersId,
    PickleFormatError,
    Problem,
    Reader,
    State,
    describe,
)

TABLE = OpTable()


# ---- imports, calls and objects: where code would run ----------------------------------------
@TABLE.op(b"c")
def _global(s: State, r: Reader, offset: int, code: int) -> bool:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    s.push(s.add_global(module, name, "GLOBAL", offset))
    return False


@TABLE.op(b"\x93")
def _stack_global(s: State, r: Reader, offset: int, code: int) -> bool:
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

    def ext(s: State, r: Reader, offset: int, code: int) -> bool:
        code = struct.unpack(width, r.read(size))[0]
        s.run.problems.append(Problem(
            "unresolved-global", "EXT", offset,
            f"extension code {code} imports whatever copyreg's extension registry maps it to at load time"))
        s.push(Opaque(f"extension code {code}"))
        return False
    return ext


TABLE.add(b"\x82", _ext("<B"))
TABLE.add(b"\x83", _ext("<H"))
TABLE.add(b"\x84", _ext("<i"))


@TABLE.op(b"R")
def _reduce(s: State, r: Reader, offset: int, code: int) -> bool:
    args = s.pop()
    func = s.top()
    if not isinstance(args, (tuple, Opaque)):
        raise PickleFormatError(f"REDUCE arguments are {describe(args)}, not a tuple", offset)
    s.callable_use(func, "call", "REDUCE", offset)
    s.stack[-1] = Call(func, args, "reduce", offset)
    return False


@TABLE.op(b"\x81")
def _newobj(s: State, r: Reader, offset: int, code: int) -> bool:
    args = s.pop()
    cls = s.pop()
    s.callable_use(cls, "new", "NEWOBJ", offset)
    s.push(Call(cls, args, "new", offset))
    return False


@TABLE.op(b"\x92")
def _newobj_ex(s: State, r: Reader, offset: int, code: int) -> bool:
    kwargs = s.pop()
    args = s.pop()
    cls = s.pop()
    s.callable_use(cls, "new", "NEWOBJ_EX", offset)
    call = Call(cls, args, "new", offset)
    call.state = kwargs
    s.push(call)
    return False


@TABLE.op(b"o")
def _obj(s: State, r: Reader, offset: int, code: int) -> bool:
    items = s.pop_mark()
    if not items:
        raise PickleFormatError("OBJ without a class", offset)
    s.callable_use(items[0], "call", "OBJ", offset)
    s.push(Call(items[0], tuple(items[1:]), "obj", offset))
    return False


@TABLE.op(b"i")
def _inst(s: State, r: Reader, offset: int, code: int) -> bool:
    module = r.line().decode("utf-8")
    name = r.line().decode("utf-8")
    cls = s.add_global(module, name, "INST", offset)
    cls.uses.add("call")
    s.push(Call(cls, tuple(s.pop_mark()), "inst", offset))
    return False


@TABLE.op(b"b")
def _build(s: State, r: Reader, offset: int, code: int) -> bool:
    state = s.pop()
    target = s.top()
    if isinstance(target, Call):
        target.state = state
        if isinstance(target.func, Global):
            target.func.uses.add("build")
    return False


@TABLE.op(b"P")
def _persid(s: State, r: Reader, offset: int, code: int) -> bool:
    pid = PersId(r.line().decode("ascii", "replace"))
    s.run.persids.append(pid.pid)
    s.push(pid)
    return False


@TABLE.op(b"Q")
def _binpersid(s: State, r: Reader, offset: int, code: int) -> bool:
    pid = PersId(s.pop())
    s.run.persids.append(pid.pid)
    s.push(pid)
    return False


@TABLE.op(b"\x97")
def _next_buffer(s: State, r: Reader, offset: int, code: int) -> bool:
    s.push(Opaque("an out-of-band buffer"))
    return False


@TABLE.op(b"\x98")
def _readonly_buffer(s: State, r: Reader, offset: int, code: int) -> bool:
    s.top()
    return False
