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

import io
import os
import time
import warnings
from array import array
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.checks.dataset.common import Problem, Problems
from doctor.checks.dataset.images.header import sniff
from doctor.checks.dataset.images.run import ImageReport
from doctor.checks.dataset.records import RecordChecker
from doctor.checks.dataset.scan import DatasetScan

from doctor.findings import Location, Severity

TABLE_SUFFIXES = (".parquet", ".arrow")
INSTALL_HINT = "pip install 'vlm-doctor[datasets]' (pyarrow) to check parquet and Arrow datasets"
PROGRESS_EVERY = 1024
# Column names that hold the conversation, in the order the loaders look for them.
CONVERSATION_COLUMNS = ("messages", "conversations")
IMAGE_COLUMNS = ("images", "image")
EMBEDDED_PREFIX = "<embedded>"

# Problem codes, the same as for image files (DAT2xx) and records (DAT0xx).
IMAGE_EMPTY, NOT_IMAGE, CORRUPT, BOMB, MISSING_COLUMN = "DAT203", "DAT205", "DAT207", "DAT208", "DAT011"


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
    kind = "arrow" if str(path).lower().endswith(".arrow") else "parquet"
    scan = TableScan(path=str(path), kind=kind, layout="table", complete=True)
    problems = scan.problems
    checker = scan.checker = RecordChecker(problems)
    level = getattr(options, "images", "header")
    root = str(Path(options.image_folder) if getattr(options, "image_folder", None) else Path(path).resolve().parent)
    report = scan.images = ImageReport(level=level, root=root)
    if level == "none":
        report.skipped = "image checks are off (--images none)"
    probe = _EmbeddedImages(level, float(getattr(options, "decode_sample", 100.0)), root)
    schema_names = _schema(path, kind)
    scan.columns = list(schema_names)
    conv = next((c for c in CONVERSATION_COLUMNS if c in schema_names), None)
    if conv is None:
        problems.add(MISSING_COLUMN, Problem(
            f"the table has no \"messages\" (TRL, LLaMA-Factory) or \"conversations\" (LLaVA) column; its columns "
            f"are {', '.join(repr(c) for c in schema_names[:12]) or 'none'}: the trainers' collators find no "
            "conversation in any row", path=str(path)))
        scan.seconds = time.perf_counter() - started
        return scan
    scan.fmt = "messages" if conv == "messages" else "llava"
    check = checker.messages if conv == "messages" else checker.llava
    bar = progress("Reading rows", None) if progress else nullcontext(lambda n=1: None)
    n = 0
    with bar as advance:
        for g, rows in _row_groups(path, kind, scan.columns):
            scan.row_groups += 1
            scan.group_of_row.append(n)
            for row in rows:
                row, embedded = _substitute(row, n)
                if type(row) is dict:
                    check(row, n, None, None)
                for ref, k, key, value in embedded:
                    ref_id = checker.refs.get(ref)
                    if ref_id is None:
                        continue
                    probe.check(report, scan, ref_id, n, g, (key, k) if k is not None else (key,), value)
                n += 1
                if not n % PROGRESS_EVERY:
                    advance(PROGRESS_EVERY)
        advance(n % PROGRESS_EVERY)
    scan.records = scan.objects = n
    report.checked = len(checker.refs)
    if not checker.refs and report.skipped is None:
        report.skipped = "the dataset references no images"
    scan.seconds = report.seconds = time.perf_counter() - started
    return scan


def _schema(path: str, kind: str) -> list[str]:
    pa, pq = _pyarrow()
    try:
        if kind == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        with _open_arrow(path) as reader:
            return list(reader.schema.names)
    except (pa.ArrowException, OSError) as e:
        raise TableUnavailable(f"pyarrow cannot open {path} as {kind}: {e}") from None


def _row_groups(path: str, kind: str, columns: list[str]) -> Iterator[tuple[int, list[Any]]]:
    """(group number, rows as Python dicts) per parquet row group / Arrow record batch."""
    pa, pq = _pyarrow()
    if kind == "parquet":
        pf = pq.ParquetFile(path)
        for g in range(pf.num_row_groups):
            yield g, pf.read_row_group(g, columns=columns or None).to_pylist()
        return
    with _open_arrow(path) as reader:
        for g in range(reader.num_record_batches) if hasattr(reader, "num_record_batches") else iter(int, 1):
            try:
                batch = reader.get_batch(g) if hasattr(reader, "get_batch") else reader.read_next_batch()
            except StopIteration:
                return
            yield g, batch.to_pylist()


class _open_arrow:  # noqa: N801 - a context manager used like open()
    """Arrow IPC: ``save_to_disk`` writes the stream format; ``pa.ipc.new_file`` the file format."""

    def __init__(self, path: str) -> None:
        pa, _ = _pyarrow()
        self._source = pa.memory_map(path, "r")
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


class _EmbeddedImages:
    """The image checks on one embedded image (bytes), or on the file its ``path`` names."""

    def __init__(self, level: str, decode_percent: float, root: str) -> None:
        from doctor.checks.dataset.images.probe import pillow_max_pixels

        self.level = level
        self.decode_percent = decode_percent
        self.root = root
        self.max_pixels = pillow_max_pixels()
        self._prober: Any = None

    def check(self, report: ImageReport, scan: TableScan, ref_id: int, row: int, group: int,
              parts: tuple[Any, ...], struct: dict) -> None:
        while len(report.widths) <= ref_id:
            report.widths.append(0)
            report.heights.append(0)
        if self.level == "none":
            return
        data = struct.get("bytes")
        where = (f"row {row}" + (f" (row group {group})" if scan.kind == "parquet" else "")
                 + f", {'/'.join(str(p) for p in parts)}")
        if not data:
            path = struct.get("path")
            if type(path) is str and path:
                self._file(report, scan, ref_id, row, parts, path, where)
                return
            self._add(report, scan, IMAGE_EMPTY, Severity.ERROR, row, parts, where,
                      "the image has neither bytes nor a path: datasets' Image feature decodes it to None and "
                      "the processor gets no image for its placeholder")
            return
        if self.level == "exists":
            report.bytes += len(data)
            return
        report.bytes += len(data)
        fmt = sniff(bytes(data[:4096]))
        w, h, failure, pil_fmt = _open(data)
        if failure is not None:
            code = NOT_IMAGE if fmt is None and "cannot identify" in failure else CORRUPT
            self._add(report, scan, code, Severity.ERROR, row, parts, where, failure)
            return
        report.formats[pil_fmt or fmt or "?"] = report.formats.get(pil_fmt or fmt or "?", 0) + 1
        report.widths[ref_id], report.heights[ref_id] = w, h
        if self.max_pixels and w * h > 2 * self.max_pixels:
            self._add(report, scan, BOMB, Severity.ERROR, row, parts, where,
                      f"{w}x{h} = {w * h:,} pixels, over twice Pillow's MAX_IMAGE_PIXELS: Image.open raises "
                      "DecompressionBombError")
            return
        decode = self.level == "decode" and _sampled(row, self.decode_percent)
        if decode or _looks_cut(fmt, data):
            failure = _decode(data)
            if failure:
                self._add(report, scan, CORRUPT, Severity.ERROR, row, parts, where, failure)

    def _file(self, report: ImageReport, scan: TableScan, ref_id: int, row: int, parts: tuple[Any, ...],
              path: str, where: str) -> None:
        from doctor.checks.dataset.images.probe import Prober

        if self._prober is None:
            self._prober = Prober(self.root, self.level, self.decode_percent, self.max_pixels)
        w, h, fmt, nbytes, problems = self._prober.probe(path)
        report.widths[ref_id], report.heights[ref_id] = w, h
        report.bytes += nbytes
        if fmt:
            report.formats[fmt] = report.formats.get(fmt, 0) + 1
        for code, severity, detail in problems:
            self._add(report, scan, code, Severity.ERROR if severity == "error" else Severity.WARNING, row,
                      parts, where, f"image file {path!r}: {detail}")

    @staticmethod
    def _add(report: ImageReport, scan: TableScan, code: str, severity: Severity, row: int,
             parts: tuple[Any, ...], where: str, detail: str) -> None:
        report.problems.add(code, Problem(f"embedded image at {where}: {detail}", row,
                                          Location.json_pointer(row, *parts), severity=severity, path=scan.path))


def _open(data: bytes) -> tuple[int, int, str | None, str | None]:
    """(width, height, failure, format) from Pillow's header read (it stops after the header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], None, im.format
    except UnidentifiedImageError:
        return 0, 0, "Pillow cannot identify the bytes as an image (Image.open raises UnidentifiedImageError)", None
    except Image.DecompressionBombError as e:
        return 0, 0, f"Image.open raises DecompressionBombError: {e}", None
    except Exception as e:  # noqa: BLE001 - Pillow raises SyntaxError, ValueError, struct.error...
        return 0, 0, f"Image.open fails: {type(e).__name__}: {e}", None


def _looks_cut(fmt: str | None, data: bytes) -> bool:
    """Bytes that end where no complete image of their format ends: worth a full decode."""
    tail = bytes(data[-12:])
    if fmt == "JPEG":
        return b"\xff\xd9" not in bytes(data[-4096:])
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "GIF":
        return not tail.endswith(b"\x3b")
    return False


def _decode(data: bytes) -> str | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
        return f"decoding fails as in Image.open(...).convert('RGB'): {type(e).__name__}: {e}"
    return None


def _sampled(row: int, percent: float) -> bool:
    return percent >= 100 or (row * 2654435761) % 10000 < percent * 100
