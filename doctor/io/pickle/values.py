"""The bottom layer of the static pickle reader: the inert stand-ins a walked pickle is made of
(``Global``, ``Call``, ``PersId``, ``Blob``, ``Opaque``), the simulated machine state (stack, mark
stack, memo), bounded reads, and ``OpTable``, the opcode table each opcode module fills for
itself. Nothing here knows any opcode; ``ops`` and ``calls`` sit above it and ``vm`` above them.

Lengths are checked against the bytes left before anything is read, and large byte strings are
skipped, never loaded: a hostile length field gives a ``PickleFormatError``, not a huge allocation.
"""

from __future__ import annotations

import _compat_pickle
import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

MAX_KEPT_BYTES = 1 << 20  # longer byte/str payloads are skipped and replaced by a Blob
MAX_LINE = 1 << 16


class PickleFormatError(Exception):
    """The bytes are not a well-formed pickle; ``offset`` is where reading failed."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset
        # what was read before the failure: an unpickler has already run those opcodes
        self.run: PickleRun | None = None


class Global:
    """An imported name. ``uses`` collects how the pickle uses it: call, new, value."""

    __slots__ = ("module", "name", "opcode", "offset", "uses")

    def __init__(self, module: str, name: str, opcode: str, offset: int) -> None:
        self.module, self.name, self.opcode, self.offset = module, name, opcode, offset
        self.uses: set[str] = set()

    @property
    def full(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"Global({self.full})"


class Call:
    """The inert result of REDUCE / NEWOBJ / OBJ / INST: ``func(*args)``, never evaluated."""

    __slots__ = ("func", "args", "kind", "offset", "items", "list_items", "state")

    def __init__(self, func: Any, args: Any, kind: str, offset: int) -> None:
        self.func, self.args, self.kind, self.offset = func, args, kind, offset
        self.items: dict[Any, Any] = {}
        self.list_items: list[Any] = []
        self.state: Any = None

    def __repr__(self) -> str:
        return f"Call({self.func!r}, {self.args!r})"


class PersId:
    """A persistent id (torch uses it for storages)."""

    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid


class Blob:
    """A byte or text payload too large to keep; only its length is known."""

    __slots__ = ("size", "kind")

    def __init__(self, size: int, kind: str) -> None:
        self.size, self.kind = size, kind


class Opaque:
    """A value that cannot be known without running code (already reported where it arose)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


@dataclass
class Problem:
    """Something a static reader must report: an unresolvable import or a computed callable."""

    kind: str  # "unresolved-global" | "indirect-call"
    opcode: str
    offset: int
    detail: str


@dataclass
class PickleRun:
    """What one pickle (start .. STOP) contains."""

    start: int
    end: int = 0
    protocol: int = 0
    result: Any = None
    globals: list[Global] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    persids: list[Any] = field(default_factory=list)
    opcodes: int = 0


class Reader:
    """Bounded reads over a seekable binary stream; ``end`` is the absolute end of the data."""

    def __init__(self, f: IO[bytes], pos: int, end: int) -> None:
        self.f, self.pos, self.end = f, pos, end

    def read(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise PickleFormatError(f"length {n} runs past the end of the data (truncated or corrupt pickle)", self.pos)
        data = self.f.read(n)
        if len(data) != n:
            raise PickleFormatError("unexpected end of data (truncated pickle)", self.pos)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n < 0 or n > self.end - self.pos:
            raise PickleFormatError(f"length {n} runs past the end of the data (truncated or corrupt pickle)", self.pos)
        self.f.seek(n, 1)
        self.pos += n

    def line(self) -> bytes:
        data = self.f.readline(min(MAX_LINE, self.end - self.pos))
        if not data.endswith(b"\n"):
            raise PickleFormatError("text argument is not terminated by a newline", self.pos)
        self.pos += len(data)
        return data[:-1]


def _map_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as the unpickler maps them (done for every protocol: conservative)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class State:
    """The simulated machine: stack, mark stack and memo."""

    def __init__(self, run: PickleRun) -> None:
        self.run = run
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}

    def push(self, value: Any) -> None:
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack:
            raise IndexError("stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise IndexError("stack underflow")
        return self.stack[-1]

    def mark(self) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise IndexError("no MARK on the stack")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def add_global(self, module: str, name: str, opcode: str, offset: int) -> Global:
        module, name = _map_name(module, name)
        g = Global(module, name, opcode, offset)
        self.run.globals.append(g)
        return g

    def callable_use(self, func: Any, how: str, opcode: str, offset: int) -> None:
        """Record how a callable is used; a callable that is not an imported name (the result of
        another call, say) cannot be judged statically."""
        if isinstance(func, Global):
            func.uses.add(how)
        elif not isinstance(func, Opaque):
            self.run.problems.append(Problem(
                "indirect-call", opcode, offset,
                f"{opcode} calls {describe(func)}, which is not an imported name: the callable is computed at load time"))


_SHALLOW = (str, int, float, bool, bytes, type(None), Global, Call, PersId, Blob, Opaque)


class KeyBox:
    """A nested tuple used as a dict key or set item, hashed by identity: CPython hashes tuples
    recursively without a depth guard, so a hostile 100,000-deep key would crash the scanner."""

    __slots__ = ("value",)

    def __init__(self, value: tuple[Any, ...]) -> None:
        self.value = value


def key(value: Any) -> Any:
    """``value`` made safe to hash (see ``KeyBox``); lists still raise TypeError like pickle."""
    if isinstance(value, tuple) and not all(isinstance(v, _SHALLOW) for v in value):
        return KeyBox(value)
    return value


def describe(value: Any) -> str:
    """A short human description of a simulated value."""
    if isinstance(value, Global):
        return value.full
    if isinstance(value, Call):
        return f"the result of calling {describe(value.func)}"
    if isinstance(value, Blob):
        return f"a {value.size}-byte {value.kind}"
    if isinstance(value, Opaque):
        return value.why
    if isinstance(value, PersId):
        return "a persistent id"
    if isinstance(value, (str, bytes)):
        return repr(value[:60])
    return type(value).__name__


def decode_string_literal(raw: bytes) -> str:
    """Protocol 0 STRING argument: a quoted, escaped literal (pickle's own rule)."""
    raw = raw.rstrip()
    if len(raw) < 2 or raw[:1] != raw[-1:] or raw[:1] not in (b"'", b'"'):
        raise ValueError("the STRING opcode argument must be quoted")
    return codecs.escape_decode(raw[1:-1])[0].decode("latin-1")


Op = Callable[["State", "Reader", int, int], bool]


class OpTable:
    """One module's opcodes: ``@TABLE.op(b"N")`` registers a handler in that module's own table
    (the VM merges the tables; no module writes into another's)."""

    def __init__(self) -> None:
        self.ops: dict[int, Op] = {}

    def op(self, *codes: bytes) -> Callable[[Op], Op]:
        def deco(func: Op) -> Op:
            for c in codes:
                self.add(c, func)
            return func
        return deco

    def add(self, code: bytes, func: Op) -> None:
        if code[0] in self.ops:
            raise ValueError(f"opcode {code!r} defined twice")
        self.ops[code[0]] = func
