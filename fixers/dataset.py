"""Fixer for the DAT family: write a repaired copy of a dataset beside it, never in place.

``data.json`` -> ``data.fixed.json`` (``.fixed.jsonl`` for JSON Lines that stays JSON Lines;
``output=PATH`` through the Python API elsewhere), plus ``data.rejected.jsonl`` with one line per dropped record:
``{"index", "line", "reasons", "record"}``.

Safe repairs (``--fix``), for the codes whose findings were passed in: the file's shape (no BOM,
no trailing comma, JSON Lines <-> array, a single or wrapped record unwrapped into an array, one
record per line), role aliases (user -> human, ...), LLaVA's own drop of a leading non-human turn,
one ``<image>`` at the start of the first human turn of one-image records, ids as strings.
Unsafe (``--unsafe-fixes``): drop the records that still have a problem (every line of the
rejected file says which), remove a placeholder from a text-only record, drop a leading assistant
message. ``--diff`` prints what would change (the first records in full) and writes nothing.

The file is streamed twice at most (never loaded whole): once to decide the output, once to write.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from doctor.checks.dataset.codes import DAT
from doctor.checks.dataset.file_level import wrapped_records_key
from doctor.checks.dataset.records import detect_format
from doctor.checks.dataset.repair import DROPPABLE, Rechecker, repair

from doctor.atomic import atomic_file
from doctor.findings import Applicability
from doctor.io.jsonstream import JsonStream, ParseError
from doctor.report import FixOutcome

if TYPE_CHECKING:
    from doctor.artifacts import Artifact
    from doctor.findings import Finding
    from doctor.runner import Options

DIFF_RECORDS = 20
TO_LINES = frozenset({DAT.ARRAY_IN_JSON_LINES_FILE, DAT.NOT_ONE_RECORD_PER_LINE})


def apply(artifact: Artifact, findings: list[Finding], options: Options) -> FixOutcome:
    """Write ``<name>.fixed.json`` (and ``<name>.rejected.jsonl``) for the findings passed in."""
    outcome = FixOutcome(fixer="dataset", path=artifact.path)
    if "://" in artifact.path:  # inputs are never modified, and nothing is written beside a URL
        outcome.error = (f"{artifact.path}: a dataset given as a URL is not repaired (nothing is written to object "
                         "storage, nor silently elsewhere); copy it here (e.g. fsspec / aws s3 cp) and run --fix on "
                         "the local copy")
        return outcome
    src = Path(artifact.path)
    codes = {f.code for f in findings}
    unsafe = bool(options.unsafe_fixes) and any(f.fix and f.fix.applicability is Applicability.UNSAFE
                                                for f in findings)
    bad_images: dict[str, str] = {}
    bad_records: dict[int, str] = {}
    for f in findings:
        params = f.fix.params if f.fix else {}
        bad_images.update(params.get("images", {}))
        bad_records.update(params.get("records", {}))
    if src.suffix.lower() in (".parquet", ".arrow"):
        outcome.error = (f"{src}: repaired copies are written for JSON / JSONL datasets only; for a parquet or "
                         "Arrow dataset drop the rows the findings name with datasets' Dataset.filter (the "
                         "findings' record numbers are row numbers within this file)")
        return outcome
    probe, first, fmt = _probe(src)
    if probe.layout == "array" and probe.fatal is not None:
        outcome.error = (f"{src}: {probe.fatal.message} at line {probe.fatal.line}, column {probe.fatal.column}; "
                         "the records after it cannot be read, so no repaired copy is written. Fix that place by "
                         f"hand ({DAT.INVALID_JSON}), then run --fix again.")
        return outcome
    array_out = _array_output(src, probe.layout, codes)
    extra = getattr(options, "extra", {}) or {}
    out = Path(extra.get("output") or src.with_name(f"{src.stem}.fixed{'.json' if array_out else '.jsonl'}"))
    rejected_path = src.with_name(f"{src.stem}.rejected.jsonl")
    plan = _Plan(src, fmt, codes, unsafe, bad_images, bad_records, bool(options.diff))
    records = _records(src, probe.layout, first, codes)
    if options.diff:
        for item in records:
            plan.take(*item)
        outcome.diff = plan.diff(out)
    else:
        with atomic_file(out) as fh:
            _write(fh, records, plan, array_out)
        outcome.written.append(str(out))
        if plan.rejected:
            with atomic_file(rejected_path) as fh:
                for entry in plan.rejected:
                    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            outcome.written.append(str(rejected_path))
    outcome.summary = plan.summary(out, probe, array_out)
    return outcome


class _Plan:
    """Repairs records one by one and remembers what it did."""

    def __init__(self, src: Path, fmt: str | None, codes: set[str], unsafe: bool, bad_images: dict[str, str],
                 bad_records: dict[int, str], keep_diffs: bool) -> None:
        self.src, self.fmt, self.codes, self.unsafe = src, fmt, codes, unsafe
        self.bad_images, self.bad_records, self.keep_diffs = bad_images, bad_records, keep_diffs
        self.rejected: list[dict[str, Any]] = []
        self.changed = self.kept = self.unfixed = 0
        self.diffs: list[str] = []
        self.recheck = Rechecker(fmt or "llava")

    def take(self, index: int, line: int, value: Any) -> Any:
        """The record to write, or None when it is dropped."""
        if isinstance(value, ParseError):
            return self._drop(index, line, None, [f"{DAT.INVALID_JSON}: {value.message} (line {value.line}, column {value.column})"])
        if not isinstance(value, dict) or self.fmt is None:
            reasons = self.recheck(value, index) if not isinstance(value, dict) else {}
            return self._keep_or_drop(index, line, value, value, [], reasons)
        found = self.recheck(value, index)
        new, changes = value, []
        todo = found.keys() & self.codes | ({DAT.MIXED_FIELD_TYPES} & self.codes)
        if todo and self.fmt != "alpaca":  # copy and repair only what this record needs (alpaca: drops only)
            new, changes = repair(value, self.fmt, todo, self.unsafe)
            if changes:
                found = self.recheck(new, index)
        reasons = {c: m for c, m in found.items() if c in DROPPABLE and c in self.codes}
        for path in _paths(new):
            if path in self.bad_images:
                code, _, detail = self.bad_images[path].partition(": ")
                reasons.setdefault(code, f"image {path!r}: {detail}")
        if index in self.bad_records:
            code, _, detail = self.bad_records[index].partition(": ")
            reasons[code] = detail
        return self._keep_or_drop(index, line, value, new, changes, reasons)

    def _keep_or_drop(self, index: int, line: int, old: Any, new: Any, changes: list[str],
                      reasons: dict[str, str]) -> Any:
        if reasons and self.unsafe:
            return self._drop(index, line, old, [f"{c}: {m}" for c, m in reasons.items()])
        if reasons:
            self.unfixed += 1
        if changes:
            self.changed += 1
            if self.keep_diffs and len(self.diffs) < DIFF_RECORDS:
                self.diffs.append(_record_diff(index, old, new, changes))
        self.kept += 1
        return new

    def _drop(self, index: int, line: int, record: Any, reasons: list[str]) -> None:
        self.rejected.append({"index": index, "line": line, "reasons": reasons, "record": record})
        if self.keep_diffs and len(self.diffs) < DIFF_RECORDS:
            self.diffs.append(f"- record {index} (line {line}) dropped: {'; '.join(reasons)}\n")
        return None

    def diff(self, out: Path) -> str:
        head = f"--- {self.src}\n+++ {out}\n"
        more = self.changed + len(self.rejected) - len(self.diffs)
        tail = f"... and {more:,} more changed or dropped records\n" if more > 0 else ""
        return head + "".join(self.diffs) + tail

    def summary(self, out: Path, probe: JsonStream, array_out: bool) -> str:
        parts = []
        if probe.bom:
            parts.append("removed the byte-order mark")
        if probe.trailing_comma:
            parts.append("removed the trailing comma")
        if probe.layout == "values" and array_out:
            parts.append("wrote JSON Lines as one JSON array")
        if probe.layout == "array" and not array_out:
            parts.append("wrote the array as JSON Lines")
        parts.append(f"repaired {self.changed:,} record(s)")
        if self.rejected:
            parts.append(f"dropped {len(self.rejected):,} to {self.src.stem}.rejected.jsonl")
        if self.unfixed:
            parts.append(f"{self.unfixed:,} record(s) keep problems that only --unsafe-fixes removes (by dropping them)")
        return "; ".join(parts) + f" -> {out}"


def _write(fh: TextIO, records: Any, plan: _Plan, array_out: bool) -> None:
    first = True
    if array_out:
        fh.write("[\n")
    for index, line, value in records:
        new = plan.take(index, line, value)
        if new is None:
            continue
        text = json.dumps(new, ensure_ascii=False)
        if array_out:
            fh.write(("" if first else ",\n") + text)
        else:
            fh.write(text + "\n")
        first = False
    if array_out:
        fh.write(("" if first else "\n") + "]\n")


def _records(src: Path, layout: str, first: Any, codes: set[str]) -> Any:
    """(index, line, value) for every record, unwrapping a single or wrapped top-level object."""
    if layout == "values" and isinstance(first, dict) and DAT.TOP_LEVEL_NOT_ARRAY in codes:
        key = None if ("conversations" in first or "messages" in first) else wrapped_records_key(first)
        if key is not None:
            return ((i, 1, rec) for i, rec in enumerate(first[key]))
    return ((i, line, value) for i, (value, line, _col, _off) in enumerate(JsonStream(src)))


def _probe(src: Path) -> tuple[JsonStream, Any, str | None]:
    """Read the whole file once (parsing only): its shape, its first value and record format."""
    stream = JsonStream(src)
    first: Any = None
    fmt = None
    for k, (value, *_rest) in enumerate(stream):
        if k == 0:
            first = value
        if fmt is None and k < 100 and isinstance(value, dict):
            fmt = detect_format(value)
    key = wrapped_records_key(first) if stream.records == 1 else None
    if fmt is None and key:
        inner = first[key][0]
        fmt = detect_format(inner) if isinstance(inner, dict) else None
    return stream, first, fmt


def _array_output(src: Path, layout: str, codes: set[str]) -> bool:
    if codes & {DAT.JSON_LINES_IN_JSON_FILE, DAT.TOP_LEVEL_NOT_ARRAY}:  # a .json file: its loader wants an array
        return True
    if codes & TO_LINES:  # a .jsonl file its loader reads line by line
        return False
    if DAT.JSON_LINES_FOR_LLAVA in codes:  # LLaVA records in JSON Lines: haotian-liu/LLaVA needs an array
        return True
    return src.suffix.lower() != ".jsonl"


def _paths(rec: dict) -> list[str]:
    out: list[str] = []
    for key in ("image", "images"):
        value = rec.get(key)
        for item in value if isinstance(value, list) else [value]:
            path = item.get("path") if isinstance(item, dict) else item
            if isinstance(path, str):
                out.append(path)
    return out


def _record_diff(index: int, old: Any, new: Any, changes: list[str]) -> str:
    a = json.dumps(old, indent=2, ensure_ascii=False).splitlines(keepends=True)
    b = json.dumps(new, indent=2, ensure_ascii=False).splitlines(keepends=True)
    body = "".join(difflib.unified_diff(a, b, f"record {index}", f"record {index} (fixed)", n=1))
    return f"@@ record {index}: {'; '.join(changes)}\n" + "".join(body.splitlines(keepends=True)[2:])
