"""A pickle machine that never executes: it walks the opcodes of one pickle and simulates the
stack, the mark stack and the memo with inert stand-ins, so that it can say which globals a
pickle imports, how each is used (called, instantiated, passed along), which imports cannot be
resolved without running code, and what the final object looks like (for tensor metadata).

Every opcode of protocols 0-5 is understood: the data opcodes come from ``ops``, the opcodes
where a real unpickler would import or call something from ``calls``; both sit on ``values``.
"""

from __future__ import annotations

import struct
from typing import IO

from doctor.io.pickle import calls, ops
from doctor.io.pickle.values import Op, PickleFormatError, PickleRun, Reader, State


def _merge(*tables: dict[int, Op]) -> dict[int, Op]:
    merged: dict[int, Op] = {}
    for table in tables:
        clash = merged.keys() & table.keys()
        if clash:
            raise ValueError(f"opcodes defined twice: {sorted(clash)}")
        merged.update(table)
    return merged


OPS: dict[int, Op] = _merge(ops.TABLE.ops, calls.TABLE.ops)


def run_pickle(f: IO[bytes], start: int, end: int) -> PickleRun:
    """Walk one pickle from ``start`` (the stream is positioned there) to its STOP opcode.

    Raises ``PickleFormatError`` on malformed data; never imports or calls anything."""
    r = Reader(f, start, end)
    run = PickleRun(start=start)
    state = State(run)
    while True:
        offset = r.pos
        try:
            code = r.read(1)[0]
        except PickleFormatError as e:
            e.run = run
            raise
        op = OPS.get(code)
        if op is None:
            error = PickleFormatError(f"unknown opcode 0x{code:02x}", offset)
            error.run = run
            raise error
        run.opcodes += 1
        try:
            done = op(state, r, offset, code)
        except PickleFormatError as e:
            e.run = run
            raise
        except (IndexError, KeyError, TypeError, ValueError, UnicodeDecodeError, struct.error, OverflowError,
                RecursionError, MemoryError) as e:
            error = PickleFormatError(f"{_NAMES.get(code, hex(code))}: {type(e).__name__}: {e}", offset)
            error.run = run
            raise error from None
        if done:
            run.end = r.pos
            return run


def _opcode_names() -> dict[int, str]:
    import pickletools

    return {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}


_NAMES = _opcode_names()
