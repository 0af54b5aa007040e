"""Hugging Face datasets on disk: parquet files (``datasets`` / ``push_to_hub`` shards, TRL's
``images`` column), Arrow files (``Dataset.save_to_disk``'s ``data-NNNNN-of-NNNNN.arrow``, IPC
stream or file format), with the images embedded as ``{"bytes": ..., "path": ...}`` structs
(the storage of ``datasets.Image``).

The same record rules as the JSON pass run on each row (``RecordChecker.llava`` /
``.messages``); the embedded images are checked from their bytes at the ``--images`` level as
the file images are (``exists``: bytes present; ``header``: the format and size from the first
bytes, a decode when the bytes look cut short; ``decode``: Pillow decodes each one as LLaVA's and
TRL's ``Image.open(...).convert("RGB")`` does). Rows are read one row group (parquet) or record
batch (Arrow) at a time, so memory is bounded by one group, never by the table.

Locations: the file, the row (0-based, within the file, as ``Location.record`` and the first part
of the JSON pointer) and, for parquet, the row group in the message. pyarrow is an optional extra
(``pip install 'vlm-doctor[datasets]'``); without it the dataset checks are skipped with that hint.
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.common import Problem, Problems
from doctor.checks.dataset.images.blob import check_bytes, sampled
from doctor.checks.dataset.images.remote import RemoteProber, dataset_folder, is_url
from doctor.checks.dataset.images.run import ImageReport
from doctor.checks.dataset.parts import fold_checker, fold_problems
from doctor.checks.dataset.records import RecordChecker
from doctor.checks.dataset.scan import DatasetScan

from doctor.findings import Location, Severity
from doctor.io.jsonstream import open_binary

TABLE_SUFFIXES = (".parquet", ".arrow")
INSTALL_HINT = "pip install 'vlm-doctor[datasets]' (pyarrow) to check parquet and Arrow datasets"
PROGRESS_EVERY = 1024
IMAGE_COLUMNS = ("images", "image")
EMBEDDED_PREFIX = "<embedded>"

# Problem codes, the same as for image files (DAT2xx) and records (DAT0xx).
IMAGE_EMPTY = DAT.IMAGE_EMPTY
MISSING_COLUMN = DAT.UNKNOWN_RECORD_FORMAT
# Columns that decide the record format (records.detect_format reads the same keys in a record).
FORMAT_COLUMNS = (("conversations", "llava"), ("messages", "messages"), ("instruction", "alpaca"))


class TableUnavailable(Exception):
    """pyarrow is not installed, or the file is not a table it can open."""


@dataclass
class TableScan(DatasetScan):
    """A ``DatasetScan`` of a parquet / Arrow file: ``images`` is filled during the scan (the
    images are in the rows), and ``iter_records`` reads the rows again for the token pass."""

    kind: str = "parquet"  # parquet | arrow
    row_groups: int = 0
    columns: list[str] = field(default_factory=list)
    images: ImageReport | None = None
    group_of_row: array = field(default_factory=lambda: array("q"))  # first row of each group
    part_images: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # merged image results

    def iter_records(self) -> Iterator[tuple[Any, int | None, int | None, int]]:
        """(row, None, None, row index) for every row, images as the record pass saw them."""
        n = 0
        for _g, rows in _row_groups(self.path, self.kind, self.columns):
            for row in rows:
                yield _substitute(row, n)[0], None, None, n
                n += 1

    def record(self, index: int) -> Any:
        """Row ``index`` again (for the few findings that quote a record)."""
        for i, (row, _l, _c, _o) in enumerate(self.iter_records()):
            if i == index:
                return row
        raise IndexError(index)

    def group_of(self, row: int) -> int:
        lo, hi = 0, len(self.group_of_row) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.group_of_row[mid] <= row:
                lo = mid
            else:
                hi = mid - 1
        return lo


def is_table(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(TABLE_SUFFIXES)


def scan_table(path: str, options: Any, progress: Callable[..., Any] | None = None) -> TableScan:
    """Read the table once: the record rules on every row, the embedded images at ``--images``."""
    started = time.perf_counter()
    scan = new_scan(path, options)
    if scan.fmt is not None:
        bar = progress("Reading rows", None) if progress else nullcontext(lambda n=1: None)
        with bar as advance:
            part = scan_part(path, options, None, 0, advance)
        merge_parts(scan, [part])
    return finish(scan, options, started)


@dataclass
class TablePart:
    """What one reader of some row groups found: the unit a worker of ``--engine ray`` returns."""

    groups: list[int]
    group_rows: list[int]  # first row of each group
    rows: int
    checker: RecordChecker
    # reference -> (width, height, format, bytes, [(code, severity, detail)], row, where)
    images: dict[str, tuple[Any, ...]]


def new_scan(path: str, options: Any) -> TableScan:
    """The scan of ``path`` before any row is read: its columns and format (or DAT011)."""
    kind = "arrow" if str(path).lower().endswith(".arrow") else "parquet"
    scan = TableScan(path=str(path), kind=kind, layout="table", complete=True)
    scan.checker = RecordChecker(scan.problems)
    scan.columns = _schema(path, kind)
    scan.fmt = table_format(scan.columns)
    if scan.fmt is None:
        scan.problems.add(MISSING_COLUMN, Problem(
            f"the table has no \"messages\" (TRL, LLaMA-Factory), \"conversations\" (LLaVA, sharegpt) or "
            f"\"instruction\" (alpaca) column; its columns are {', '.join(repr(c) for c in scan.columns[:12]) or 'none'}: "
            "the trainers' collators find no conversation in any row", path=str(path)))
    return scan


def table_format(columns: list[str]) -> str | None:
    return next((fmt for column, fmt in FORMAT_COLUMNS if column in columns), None)


def group_rows(path: str) -> list[int]:
    """The first row of each row group (parquet) or record batch (Arrow): the blocks of
    ``--engine ray``. Parquet says it in its footer; an Arrow stream is read through (memory-mapped,
    no copy)."""
    pa, pq = _pyarrow()
    sizes: list[int]
    if not str(path).lower().endswith(".arrow"):
        meta = pq.ParquetFile(_source(path)).metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    else:
        with _open_arrow(path) as reader:
            if hasattr(reader, "get_batch"):
                sizes = [reader.get_batch(g).num_rows for g in range(reader.num_record_batches)]
            else:
                sizes = [batch.num_rows for batch in reader]
    firsts, n = [], 0
    for size in sizes:
        firsts.append(n)
        n += size
    return firsts


def scan_part(path: str, options: Any, groups: list[int] | None, first_row: int,
              advance: Callable[[int], Any] | None = None) -> TablePart:
    """Run the record rules and the image checks over ``groups`` (all when None), whose first row
    is ``first_row`` of the file."""
    kind = "arrow" if str(path).lower().endswith(".arrow") else "parquet"
    columns = _schema(path, kind)
    fmt = table_format(columns)
    assert fmt is not None, "new_scan reports a table without a conversation column"
    checker = RecordChecker(Problems())
    level = getattr(options, "images", "header")
    given = getattr(options, "image_folder", None)
    root = (str(given).rstrip("/") if is_url(given) else str(Path(given))) if given else dataset_folder(path)
    probe = _EmbeddedImages(level, float(getattr(options, "decode_sample", 100.0)), root)
    part = TablePart(groups=[], group_rows=[], rows=0, checker=checker, images={})
    n = first_row
    for g, rows in _row_groups(path, kind, columns, groups):
        part.groups.append(g)
        part.group_rows.append(n)
        for row in rows:
            row, embedded = _substitute(row, n)
            if type(row) is dict:
                checker.check(fmt, row, n, None, None)  # no text positions in a table
            for ref, k, key, value in embedded:
                if ref in checker.refs and ref not in part.images:
                    parts = (key, k) if k is not None else (key,)
                    where = (f"image at row {n}" + (f" (row group {g})" if kind == "parquet" else "")
                             + f", {'/'.join(str(p) for p in parts)}")
                    part.images[ref] = (*probe.check(value), n, parts, where)
            n += 1
            if advance is not None and not (n - first_row) % PROGRESS_EVERY:
                advance(PROGRESS_EVERY)
    part.rows = n - first_row
    if advance is not None:
        advance(part.rows % PROGRESS_EVERY)
    return part


def merge_parts(scan: TableScan, parts: list[TablePart]) -> None:
    """Fold the parts, in row order, into ``scan`` exactly as one reader of every row would have
    filled it: problems in row order under the same cap, image references numbered by first use."""
    checker, problems = scan.checker, scan.problems
    assert checker is not None
    images: dict[str, tuple[Any, ...]] = {}
    for part in sorted(parts, key=lambda p: p.group_rows[0] if p.group_rows else 0):
        scan.row_groups += len(part.groups)
        scan.group_of_row.extend(part.group_rows)
        scan.records += part.rows
        fold_problems(problems, part.checker.problems)
        fold_checker(checker, part.checker)
        for ref, result in part.images.items():
            images.setdefault(ref, result)
    scan.objects = scan.records
    scan.part_images = images


def finish(scan: TableScan, options: Any, started: float) -> TableScan:
    """The image report, in reference order, from the merged parts."""
    given = getattr(options, "image_folder", None)
    root = (str(given).rstrip("/") if is_url(given) else str(Path(given))) if given else dataset_folder(scan.path)
    report = scan.images = ImageReport(level=getattr(options, "images", "header"), root=root, root_given=bool(given))
    checker = scan.checker
    assert checker is not None
    if report.level == "none":
        report.skipped = "image checks are off (--images none)"
    elif not checker.refs:
        report.skipped = "the dataset references no images"
    results = getattr(scan, "part_images", {})
    report.widths = array("I", bytes(4 * len(checker.refs)))
    report.heights = array("I", bytes(4 * len(checker.refs)))
    for ref, ref_id in checker.refs.items():
        result = results.get(ref)
        if result is None:
            continue
        w, h, fmt, nbytes, found, row, parts, where = result
        report.widths[ref_id], report.heights[ref_id] = w, h
        report.bytes += nbytes
        if fmt:
            report.formats[fmt] = report.formats.get(fmt, 0) + 1
        for code, severity, detail in found:
            report.problems.add(code, Problem(f"{where}: {detail}", row, Location.json_pointer(row, *parts),
                                              severity=Severity(severity), path=scan.path))
    report.checked = len(results)
    scan.seconds = report.seconds = time.perf_counter() - started
    return scan


def _schema(path: str, kind: str) -> list[str]:
    pa, pq = _pyarrow()
    try:
        if kind == "parquet":
            return list(pq.ParquetFile(_source(path)).schema_arrow.names)
        with _open_arrow(path) as reader:
            return list(reader.schema.names)
    except (pa.ArrowException, OSError) as e:
        raise TableUnavailable(f"pyarrow cannot open {path} as {kind}: {e}") from None


def _row_groups(path: str, kind: str, columns: list[str],
                groups: list[int] | None = None) -> Iterator[tuple[int, list[Any]]]:
    """(group number, rows as Python dicts) per parquet row group / Arrow record batch, for
    ``groups`` (every group when None), in file order."""
    pa, pq = _pyarrow()
    wanted = None if groups is None else set(groups)
    if kind == "parquet":
        pf = pq.ParquetFile(_source(path))
        for g in range(pf.num_row_groups):
            if wanted is None or g in wanted:
                yield g, pf.read_row_group(g, columns=columns or None).to_pylist()
        return
    with _open_arrow(path) as reader:
        if hasattr(reader, "get_batch"):  # the IPC file format: random access
            for g in range(reader.num_record_batches):
                if wanted is None or g in wanted:
                    yield g, reader.get_batch(g).to_pylist()
            return
        for g, batch in enumerate(reader):  # the stream format (save_to_disk): read through
            if wanted is None or g in wanted:
                yield g, batch.to_pylist()


class _open_arrow:  # noqa: N801 - a context manager used like open()
    """Arrow IPC: ``save_to_disk`` writes the stream format; ``pa.ipc.new_file`` the file format."""

    def __init__(self, path: str) -> None:
        pa, _ = _pyarrow()
        self._source = pa.PythonFile(open_binary(path), mode="r") if is_url(path) else pa.memory_map(path, "r")
        try:
            self.reader = pa.ipc.open_file(self._source)
        except pa.ArrowInvalid:
            self._source.seek(0)
            self.reader = pa.ipc.open_stream(self._source)

    def __enter__(self) -> Any:
        return self.reader

    def __exit__(self, *exc: Any) -> None:
        self._source.close()


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TableUnavailable(f"pyarrow is not installed: {INSTALL_HINT}") from None
    return pa, pq


def _substitute(row: Any, n: int) -> tuple[Any, list[tuple[str, int | None, str, Any]]]:
    """The row with each embedded image (a ``{"bytes", "path"}`` struct) replaced by a reference
    string the record rules count like a path, and the list of (reference, index, column, struct)."""
    if type(row) is not dict:
        return row, []
    out: list[tuple[str, int | None, str, Any]] = []
    for key in IMAGE_COLUMNS:
        value = row.get(key)
        if value is None:
            continue
        if type(value) is dict:
            ref = _ref_of(value, n, key, None)
            row = {**row, key: ref}
            out.append((ref, None, key, value))
        elif type(value) is list:
            items = list(value)
            for k, item in enumerate(items):
                if type(item) is dict:
                    items[k] = _ref_of(item, n, key, k)
                    out.append((items[k], k, key, item))
            row = {**row, key: items}
    return row, out


def _ref_of(struct: dict, n: int, key: str, k: int | None) -> str:
    data = struct.get("bytes")
    if data:
        return f"{EMBEDDED_PREFIX}/{n}/{key}" + (f"/{k}" if k is not None else "")
    path = struct.get("path")
    return path if type(path) is str and path else f"{EMBEDDED_PREFIX}/{n}/{key}" + (f"/{k}" if k is not None else "")


def _source(path: str) -> Any:
    """What pyarrow opens: the path, or for a dataset given as a URL its fsspec file (read in
    ranges: the footer, then the row groups asked for)."""
    return open_binary(path) if is_url(path) else path


class _EmbeddedImages:
    """The image checks on one embedded image (its bytes), or on the file its ``path`` names:
    (width, height, format, bytes, [(code, severity, detail)])."""

    def __init__(self, level: str, decode_percent: float, root: str) -> None:
        from doctor.checks.dataset.images.probe import pillow_max_pixels

        self.level = level
        self.decode_percent = decode_percent
        self.root = root
        self.max_pixels = pillow_max_pixels()
        self._prober: Any = None

    def check(self, struct: dict) -> tuple[int, int, str | None, int, list[tuple[str, str, str]]]:
        if self.level == "none":
            return 0, 0, None, 0, []
        data = struct.get("bytes")
        if not data:
            path = struct.get("path")
            if type(path) is str and path:
                return self._file(path)
            return 0, 0, None, 0, [(IMAGE_EMPTY, "error", "the image has neither bytes nor a path: datasets' Image "
                                    "feature decodes it to None and the processor gets no image for its placeholder")]
        return check_bytes(data, self.level, self.level == "decode" and sampled(data, self.decode_percent),
                           self.max_pixels)

    def _file(self, path: str) -> tuple[int, int, str | None, int, list[tuple[str, str, str]]]:
        from doctor.checks.dataset.images.probe import Prober

        if self._prober is None:
            kind = RemoteProber if is_url(self.root) else Prober
            self._prober = kind(self.root, self.level, self.decode_percent, self.max_pixels)
        w, h, fmt, nbytes, problems = self._prober.probe(path)
        return w, h, fmt, nbytes, [(code, severity, f"image file {path!r}: {detail}")
                                   for code, severity, detail in problems]
