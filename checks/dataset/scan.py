"""The one streaming pass over a dataset: parse each record once, run the record checks,
collect image references and the numbers of the summary. Every DAT0xx/1xx check reads its
problems from the result; the image and token checks start from its image references."""

from __future__ import annotations

import gc
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import DROP, Problem, Problems, repair
from doctor.checks.dataset.file_level import file_problems
from doctor.checks.dataset.parts import fold_checker, fold_problems
from doctor.checks.dataset.records import RecordChecker, detect_format, llava_decoder

from doctor.findings import Severity
from doctor.io.jsonstream import (
    JsonStream,
    ParseError,
    Window,
    compiled_available,
    raw_list_decoder,
    read_value_at,
    read_window_positions,
)

PROGRESS_EVERY = 4096
FAST = True  # the compiled path (msgspec windows, typed LLaVA records); False: the exact reader only
DETECT_WITHIN = 100  # records without "conversations"/"messages" before the format is called unknown
_PARSE_CODES = {"syntax": DAT.INVALID_JSON, "encoding": DAT.NOT_UTF8, "too-deep": DAT.NESTING_TOO_DEEP, "too-large": DAT.TOP_LEVEL_NOT_ARRAY}


@dataclass
class DatasetScan:
    path: str
    layout: str = "unknown"  # array | values | empty
    fmt: str | None = None  # llava | messages | None
    problems: Problems = field(default_factory=Problems)
    records: int = 0  # top-level values read, unparseable ones included
    objects: int = 0
    complete: bool = False
    stopped_at: ParseError | None = None
    checker: RecordChecker | None = None
    offsets: array = field(default_factory=lambda: array("q"))
    lines: array = field(default_factory=lambda: array("q"))
    first_value: Any = None
    bom: bool = False
    trailing_comma: tuple[int, int] | None = None
    multiline_values: int = 0
    shared_lines: int = 0
    seconds: float = 0.0
    bytes: int = 0
    # Windows of clean records read as typed structs: (first record, records, byte offset, size,
    # line, column); their records' offsets and lines are -1 until asked for (``line_of``).
    windows: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)

    @property
    def extension(self) -> str:
        return Path(self.path).suffix.lower()

    @property
    def refs(self) -> dict[str, int]:
        return self.checker.refs if self.checker else {}

    def pointer_of_ref(self, ref_id: int) -> tuple[int, tuple[Any, ...]]:
        """(first record using image reference ``ref_id``, pointer parts of its image field)."""
        assert self.checker is not None
        return self.checker.ref_first[ref_id], self.checker.keys[self.checker.ref_key[ref_id]]

    def iter_records(self) -> Any:
        """(record, line, column, offset) for every top-level value, read again from the file."""
        return iter(JsonStream(self.path))

    def record(self, index: int) -> Any:
        """Read record ``index`` again from the file (for the few a finding needs to quote)."""
        return read_value_at(self.path, self.offset_of(index))

    def line_of(self, index: int) -> int:
        """The line where record ``index`` starts."""
        line = self.lines[index]
        if line < 0:
            self._place(index)
            line = self.lines[index]
        return line

    def offset_of(self, index: int) -> int:
        """The byte offset where record ``index`` starts."""
        offset = self.offsets[index]
        if offset < 0:
            self._place(index)
            offset = self.offsets[index]
        return offset

    def _place(self, index: int) -> None:
        """Compute the positions of the window holding record ``index`` (once)."""
        k = bisect_right(self.windows, (index, 1 << 62)) - 1
        first, n, offset, size, line, column = self.windows[k]
        for j, (ln, _col, off) in enumerate(read_window_positions(self.path, offset, size, line, column), first):
            self.lines[j] = ln
            self.offsets[j] = off


def scan_dataset(path: str, progress: Callable[..., Any] | None = None, fast: bool | None = None) -> DatasetScan:
    """Stream ``path`` once; see the module docstring. ``fast=False`` (or ``FAST = False``) reads
    with the exact Python reader only; the differential tests prove both give identical findings."""
    fast = FAST if fast is None else fast
    started = time.perf_counter()
    scan = DatasetScan(path=str(path))
    problems = scan.problems
    checker = scan.checker = RecordChecker(problems)
    stream = JsonStream(path, fast=fast)
    ids = _Ids()
    pending: list[tuple[dict, int, int, int]] = []
    check: Callable[[dict, int, int, int], None] | None = None
    undecided = True
    offsets, lines = scan.offsets, scan.lines
    bar = progress("Reading records", None) if progress else nullcontext(lambda n=1: None)
    i = -1
    # Records are acyclic and die young: the cyclic collector only costs time here (json.load,
    # the anchor, pays it too).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with bar as advance:
            for rec, line, col, off in stream:
                if type(rec) is Window:
                    n = len(rec.items)
                    if checker.llava_window(rec.items, i + 1):
                        scan.windows.append((i + 1, n, rec.offset, rec.size, rec.line, rec.column))
                        offsets.extend(repeat(-1, n))
                        lines.extend(repeat(-1, n))
                        ids.add_window(rec.items, i + 1)
                        before, i = i, i + n
                        if (i + 1) // PROGRESS_EVERY != (before + 1) // PROGRESS_EVERY:
                            advance((i + 1) // PROGRESS_EVERY * PROGRESS_EVERY - (before + 1) // PROGRESS_EVERY
                                    * PROGRESS_EVERY)
                        continue
                    items = rec.records()  # a record a check may report on: each one as a dict
                else:
                    items = ((rec, line, col, off),)
                for rec, line, col, off in items:
                    i += 1
                    offsets.append(off)
                    lines.append(line)
                    if type(rec) is dict:
                        if check is not None:
                            check(rec, i, line, col)
                        elif undecided:
                            check = _detect(rec, scan, checker)
                            if check is None:
                                pending.append((rec, i, line, col))
                                if len(pending) >= DETECT_WITHIN:
                                    undecided = False
                                    _unknown_format(problems, pending)
                                    pending.clear()
                            else:
                                for args in pending:
                                    check(*args)
                                pending.clear()
                                check(rec, i, line, col)
                                if scan.fmt == "llava" and fast and compiled_available():
                                    stream.typed = llava_decoder()
                        rid = rec.get("id")
                        if rid is not None:
                            ids.add(rid, i)
                    else:
                        _not_a_record(problems, rec, i, line, col, stream.layout)
                    if i == 0:
                        scan.first_value = rec
                    if not (i + 1) % PROGRESS_EVERY:
                        advance(PROGRESS_EVERY)
            advance((i + 1) % PROGRESS_EVERY)
    finally:
        if collecting:
            gc.enable()
    if pending:
        _unknown_format(problems, pending)
    scan.records = i + 1
    scan.objects = len(checker.chars) + len(pending)
    for name in ("layout", "bom", "trailing_comma", "complete", "multiline_values", "shared_lines", "bytes"):
        setattr(scan, name, getattr(stream, name))
    scan.stopped_at = stream.fatal
    file_problems(scan)
    ids.finish(scan)
    scan.seconds = time.perf_counter() - started
    return scan


@dataclass
class ScanPart:
    """What one reader of a byte range of a JSON Lines file found (a worker's result under
    ``--engine ray``): its records' problems and registrations, positions, and ids unhashed
    (``hash`` of a string differs between processes), for ``fold_parts``."""

    first: int  # index of its first record in the file
    checker: RecordChecker
    offsets: array
    lines: array
    ids: list[tuple[Any, int]]
    first_value: Any
    records: int
    lines_read: int  # non-blank lines: a part is exact only when this equals ``records``
    multiline_values: int
    shared_lines: int
    complete: bool
    fatal: ParseError | None
    bytes: int
    ends_in_error: bool = False  # its last line did not parse: maybe the start of a value the next part ends
    trailing_comma: tuple[int, int] | None = None  # a JSON array's part: the array's own, when it ends here
    windows: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)  # as DatasetScan.windows


def scan_part(path: str, fmt: str, start: int, end: int, first: int, first_line: int,
              nonblank: int) -> ScanPart:
    """Check the records of bytes [start, end) of a JSON Lines file, numbered from ``first``, with
    positions of the whole file, in format ``fmt`` (the file's, found by the driver)."""
    checker = RecordChecker(Problems())
    problems = checker.problems
    check = getattr(checker, fmt)
    stream = JsonStream(path, fast=False, part=(start, end, first_line))
    offsets, lines = array("q"), array("q")
    ids: list[tuple[Any, int]] = []
    first_value: Any = None
    i = first - 1
    rec: Any = None
    for rec, line, col, off in stream:
        i += 1
        _part_record(check, problems, rec, i, line, col, off, offsets, lines, ids, "values")
        if i == first:
            first_value = rec
    return ScanPart(first, checker, offsets, lines, ids, first_value, i + 1 - first, nonblank,
                    stream.multiline_values, stream.shared_lines, stream.complete, stream.fatal, stream.bytes,
                    ends_in_error=type(rec) is ParseError)


def fold_parts(path: str, fmt: str, parts: list[ScanPart], started: float) -> DatasetScan | None:
    """One ``DatasetScan`` from the parts of a JSON Lines file, as ``scan_dataset`` would have
    made it; None when a part cannot be placed exactly (a value spanning lines, two values on one
    line, a fatal error, a part whose last line does not parse, which may be a value the cut split:
    only one reader of the whole file knows where those leave the next part), and the caller scans
    the file in one process instead."""
    for k, p in enumerate(parts):
        if p.records != p.lines_read or p.multiline_values or p.shared_lines or p.fatal is not None or not p.complete:
            return None
        if p.ends_in_error and k < len(parts) - 1:
            return None  # a value cut by the part boundary reads as broken lines on both sides
    scan = DatasetScan(path=str(path), layout="values", fmt=fmt)
    checker = scan.checker = RecordChecker(scan.problems)
    ids = _Ids()
    for p in parts:
        fold_problems(scan.problems, p.checker.problems)
        fold_checker(checker, p.checker)
        scan.offsets.extend(p.offsets)
        scan.lines.extend(p.lines)
        for rid, i in p.ids:
            ids.add(rid, i)
        scan.bytes += p.bytes
    scan.records = sum(p.records for p in parts)
    scan.objects = len(checker.chars)
    scan.first_value = parts[0].first_value if parts else None
    scan.complete = True
    file_problems(scan)
    ids.finish(scan)
    scan.seconds = time.perf_counter() - started
    return scan


@dataclass
class ArrayCount:
    """The first pass over a byte range [cut, end) of a JSON array (``count_array_part``): where
    its first element starts (guessed, or given), how many elements start before ``end``, where the
    next one starts (None: the array ended), whether reading failed, and the range's
    ``segment_stats`` (its newlines and the characters after the last one)."""

    start: int | None
    records: int
    next: int | None
    error: bool
    stats: tuple[int, int]


def count_array_part(path: str, cut: int, end: int, start: int | None = None) -> ArrayCount:
    """Count the elements of a JSON array that start in [cut, end): from ``start`` when it is known
    (the array's first element, or the end of the element before, found by the driver), else from
    ``find_array_start``'s guess, which the driver checks against the part before."""
    from doctor.io.jsonstream import find_array_start, open_binary, segment_stats

    with open_binary(path) as f:
        stats = segment_stats(f, cut, end)
        if start is None:
            start = find_array_start(f, cut, end)
    if start is None:
        return ArrayCount(None, 0, None, False, stats)
    stream = JsonStream(path, fast=FAST, array_part=(start, end, 1, 1))
    if FAST and compiled_available():
        stream.typed = raw_list_decoder()  # windows of elements are counted, not built
    n = 0
    error = False
    for value, _line, _col, _off in stream:
        if type(value) is Window:
            n += len(value.items)
            continue
        if type(value) is ParseError:
            error = True
            break
        n += 1
    error = error or stream.fatal is not None or (stream.next_start is None and not stream.complete)
    return ArrayCount(start, n, stream.next_start[2] if stream.next_start else None, error, stats)


def scan_array_part(path: str, fmt: str, start: int, end: int, first: int, cut: int, line: int,
                    column: int) -> ScanPart:
    """Check the elements of a JSON array that start in [start, end) (``start`` verified by the
    driver), numbered from ``first``; (line, column) are those of byte ``cut`` <= ``start``."""
    from doctor.io.jsonstream import advance, open_binary, segment_stats

    if start > cut:
        with open_binary(path) as f:
            line, column = advance(line, column, segment_stats(f, cut, start))
    checker = RecordChecker(Problems())
    problems = checker.problems
    check = getattr(checker, fmt)
    stream = JsonStream(path, fast=FAST, array_part=(start, end, line, column))
    if fmt == "llava" and FAST and compiled_available():
        stream.typed = llava_decoder()
    offsets, lines = array("q"), array("q")
    windows: list[tuple[int, int, int, int, int, int]] = []
    ids: list[tuple[Any, int]] = []
    first_value: Any = None
    i = first - 1
    rec: Any = None
    for rec, line, col, off in stream:
        if type(rec) is Window:
            n = len(rec.items)
            if checker.llava_window(rec.items, i + 1):
                if i + 1 == first:
                    first_value = rec.records()[0][0]
                windows.append((i + 1, n, rec.offset, rec.size, rec.line, rec.column))
                offsets.extend(repeat(-1, n))
                lines.extend(repeat(-1, n))
                ids.extend((r.id, k) for k, r in enumerate(rec.items, i + 1) if r.id is not None)
                i += n
                continue
            items = rec.records()
        else:
            items = ((rec, line, col, off),)
        for rec, line, col, off in items:
            i += 1
            _part_record(check, problems, rec, i, line, col, off, offsets, lines, ids, "array")
            if i == first:
                first_value = rec
    return ScanPart(first, checker, offsets, lines, ids, first_value, i + 1 - first, i + 1 - first, 0, 0,
                    stream.complete, stream.fatal, stream.bytes, ends_in_error=type(rec) is ParseError,
                    trailing_comma=stream.trailing_comma, windows=windows)


def fold_array_parts(path: str, fmt: str, parts: list[ScanPart], started: float, size: int) -> DatasetScan | None:
    """One ``DatasetScan`` from the checked parts of a JSON array, as ``scan_dataset`` would have
    made it; None when a part stopped on an error (one process reads the file and reports it)."""
    if not parts or any(p.fatal is not None or p.ends_in_error for p in parts) or not parts[-1].complete:
        return None
    scan = DatasetScan(path=str(path), layout="array", fmt=fmt)
    checker = scan.checker = RecordChecker(scan.problems)
    ids = _Ids()
    for p in parts:
        fold_problems(scan.problems, p.checker.problems)
        fold_checker(checker, p.checker)
        scan.offsets.extend(p.offsets)
        scan.lines.extend(p.lines)
        scan.windows.extend(p.windows)
        for rid, i in p.ids:
            ids.add(rid, i)
    scan.records = sum(p.records for p in parts)
    scan.objects = len(checker.chars)
    scan.first_value = parts[0].first_value
    scan.trailing_comma = parts[-1].trailing_comma
    scan.complete = True
    scan.bytes = size
    file_problems(scan)
    ids.finish(scan)
    scan.seconds = time.perf_counter() - started
    return scan


def _part_record(check: Callable[..., None], problems: Problems, rec: Any, i: int, line: int, col: int, off: int,
                 offsets: array, lines: array, ids: list[tuple[Any, int]], layout: str) -> None:
    """One value of a part (JSON Lines range or JSON array range): positioned, checked, its id kept."""
    offsets.append(off)
    lines.append(line)
    if type(rec) is dict:
        check(rec, i, line, col)
        rid = rec.get("id")
        if rid is not None:
            ids.append((rid, i))
    else:
        _not_a_record(problems, rec, i, line, col, layout)


def _not_a_record(problems: Problems, rec: Any, i: int, line: int, col: int, layout: str) -> None:
    """A top-level value that is not an object: a parse error, or another JSON value."""
    if type(rec) is ParseError:
        _parse_error(problems, rec, i, layout)
    else:
        problems.record(DAT.RECORD_NOT_OBJECT, i, line, col, (), f"record {i} is {_what(rec)}, not an object",
                        fix=DROP)


def _detect(rec: dict, scan: DatasetScan, checker: RecordChecker) -> Callable[[dict, int, int, int], None] | None:
    fmt = detect_format(rec)
    if fmt is None:
        return None
    scan.fmt = fmt
    return getattr(checker, fmt)


def _unknown_format(problems: Problems, pending: list[tuple[dict, int, int, int]]) -> None:
    rec, i, line, col = pending[0]
    keys = ", ".join(f'"{k}"' for k in list(rec)[:8]) or "no keys"
    problems.add(DAT.UNKNOWN_RECORD_FORMAT, Problem(
        f"the first {len(pending)} record(s) have neither \"conversations\" (LLaVA, sharegpt) nor \"messages\" "
        "(TRL, LLaMA-Factory) nor \"instruction\" (alpaca); "
        f"record {i} has {keys}", i, f"/{i}", line, col))


def _parse_error(problems: Problems, err: ParseError, i: int, layout: str) -> None:
    code = _PARSE_CODES[err.kind]
    if layout == "array" and err.kind != "encoding":
        tail = "; json.load fails here and nothing after this point was checked"
        fix = None
    elif err.kind == "encoding":
        tail = "; nothing after this point was checked"
        fix = None
    else:
        tail = "; JSON Lines readers fail on this line" if err.kind != "too-large" else ""
        fix = DROP if err.kind != "too-large" else None
    problems.add(code, Problem(f"{err.message} (line {err.line}, column {err.column}){tail}", i, None,
                               err.line, err.column, fix=fix))


def _what(value: Any) -> str:
    from doctor.checks.dataset.common import kind

    return kind(value)


class _Ids:
    """Record ids, kept as 64-bit hashes (12 bytes a record, not a set of strings): duplicates
    are found with one sort at the end and confirmed by reading those records again."""

    def __init__(self) -> None:
        self.hashes = array("q")
        self.index = array("q")
        self.types: dict[type, list[int]] = {}  # type -> [count, first record]

    def add_window(self, items: list, first: int) -> None:
        """``add`` for every record of a typed window (the common case: string ids, all there)."""
        rids = [r.id for r in items]
        if all(type(r) is str for r in rids):
            self.hashes.extend(map(hash, rids))
            self.index.extend(range(first, first + len(rids)))
            seen = self.types.get(str)
            if seen is None:
                self.types[str] = [len(rids), first]
            else:
                seen[0] += len(rids)
            return
        for k, rid in enumerate(rids, first):
            if rid is not None:
                self.add(rid, k)

    def add(self, rid: Any, i: int) -> None:
        t = type(rid)
        if t is str or t is int:
            self.hashes.append(hash(rid))
            self.index.append(i)
        seen = self.types.get(t)
        if seen is None:
            self.types[t] = [1, i]
        else:
            seen[0] += 1

    def finish(self, scan: DatasetScan) -> None:
        self._mixed(scan)
        if len(self.hashes) > 1:
            self._duplicates(scan)

    def _mixed(self, scan: DatasetScan) -> None:
        if len(self.types) < 2:
            return
        names = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "a list",
                 dict: "an object"}
        parts = sorted(self.types.items(), key=lambda kv: -kv[1][0])
        desc = ", ".join(f"{names.get(t, t.__name__)} in {n:,} records" for t, (n, _) in parts)
        rare_type, (_, first) = parts[-1]
        fixable = set(self.types) <= {str, int, float}
        scan.problems.add(DAT.MIXED_FIELD_TYPES, Problem(
            f"\"id\" is {desc} (first {names.get(rare_type, rare_type.__name__)} at record {first}): "
            "datasets before 5.0 (LLaMA-Factory pins <=4.0.0) refuse the file (\"changed from string to number\"); "
            "datasets 5 loads them as one Json column and turns numeric-looking string ids into numbers "
            "(\"000123\" -> 123)", first, f"/{first}/id",
            scan.line_of(first), severity=Severity.WARNING,
            fix=repair("write every id as a string") if fixable else None))

    def _duplicates(self, scan: DatasetScan) -> None:
        import numpy as np

        h = np.frombuffer(self.hashes, dtype=np.int64)
        idx = np.frombuffer(self.index, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        repeat = np.nonzero(hs[1:] == hs[:-1])[0] + 1
        if not len(repeat):
            return
        firsts = idx[order[np.searchsorted(hs, hs[repeat], side="left")]]
        later = idx[order[repeat]]
        by_position = np.argsort(later, kind="stable")
        shown = 0
        for k in by_position:
            i, j = int(later[k]), int(firsts[k])
            if shown < scan.problems.cap:
                rid = _id_of(scan, i)
                if rid is None or rid != _id_of(scan, j) or type(rid) is not type(_id_of(scan, j)):
                    continue  # a 64-bit hash collision: not a duplicate
                shown += 1
                scan.problems.add(DAT.DUPLICATE_ID, Problem(
                    f"record {i} repeats id {rid!r} of record {j} (line {scan.line_of(j)})", i, f"/{i}/id",
                    scan.line_of(i), severity=Severity.WARNING))
            else:
                scan.problems.counts[DAT.DUPLICATE_ID] = scan.problems.count(DAT.DUPLICATE_ID) + 1


def _id_of(scan: DatasetScan, i: int) -> Any:
    try:
        rec = scan.record(i)
    except (OSError, ValueError):
        return None
    return rec.get("id") if isinstance(rec, dict) else None
