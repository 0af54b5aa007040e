"""Streams of pickles, the way loaders read them: a plain run of concatenated pickles, torch's
legacy (non-zip) format (five pickles, then raw storages walked by their element counts), and
whatever follows the data a loader reads. ``Walk`` collects every pickle found in a file and the
notes about it; the containers (zip, tar, the file itself) are in ``containers`` and ``tar``."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO, Any

from doctor.io.pickle.values import Global, PickleFormatError, PickleRun
from doctor.io.pickle.vm import run_pickle

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_ELEMENT_SIZE = {
    "Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
    "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4,
    "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1,
}


@dataclass
class Stream:
    """One pickle found in a file: ``where`` says where (entry, byte offset)."""

    entry: str | None
    index: int
    run: PickleRun
    extra: bool = False  # a pickle no standard loader reads (after the end of the real data)


@dataclass
class Walk:
    format: str
    detail: str = ""
    streams: list[Stream] = field(default_factory=list)
    # (kind, message, entry, offset, severity)
    notes: list[tuple[str, str, str | None, int | None, str]] = field(default_factory=list)
    tar_tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)

    def note(self, kind: str, message: str, entry: str | None = None, offset: int | None = None,
             severity: str = "error") -> None:
        self.notes.append((kind, message, entry, offset, severity))


def walk_pickles(f: IO[bytes], start: int, end: int, entry: str | None, walk: Walk, head: bytes = b"") -> None:
    """A stream of pickles: the torch legacy format when the first one is torch's magic number,
    otherwise plain concatenated pickles. The stream is positioned at ``start``."""
    try:
        first = run_pickle(f, start, end)
    except PickleFormatError as e:
        seen = keep_partial(walk, e, entry, 1)
        if not seen and entry is None and head[:1] != b"\x80" and (e.offset == start or _looks_like_text(f, start)):
            walk.format, walk.detail = _what_else(head, f)
            return
        walk.note("malformed", f"not a well-formed pickle: {e} at byte {e.offset}", entry, e.offset)
        return
    walk.streams.append(Stream(entry, 1, first))
    pos = first.end
    if type(first.result) is int and first.result == MAGIC_NUMBER:
        if entry is None:
            walk.format, walk.detail = "torch-legacy", "torch's legacy (non-zip) format"
        pos = _walk_legacy(f, pos, end, entry, walk)
        if pos is None:
            return
    walk_extra(f, pos, end, entry, walk)


def _walk_legacy(f: IO[bytes], pos: int, end: int, entry: str | None, walk: Walk) -> int | None:
    runs: list[PickleRun] = []
    for index in range(2, 6):  # protocol version, sys info, the object, the storage keys
        try:
            run = run_pickle(f, pos, end)
        except PickleFormatError as e:
            keep_partial(walk, e, entry, index)
            walk.note("malformed", f"legacy torch file: pickle #{index} is malformed: {e} at byte {e.offset}",
                      entry, e.offset)
            return None
        walk.streams.append(Stream(entry, index, run))
        runs.append(run)
        pos = run.end
    keys = runs[-1].result
    sizes = _legacy_element_sizes(runs[2].persids)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        walk.note("malformed", "legacy torch file: the storage-key list is not a list of strings", entry, runs[-1].start)
        return None
    f.seek(pos)
    for key in keys:
        raw = f.read(8) if end - pos >= 8 else b""
        if len(raw) != 8 or key not in sizes:
            walk.note("malformed", f"legacy torch file: storage {key!r} is missing or truncated", entry, pos, "warning")
            return None
        (count,) = struct.unpack("<q", raw)
        nbytes = count * sizes[key]
        if count < 0 or nbytes > end - pos - 8:
            walk.note("malformed", f"legacy torch file: storage {key!r} runs past the end of the file (truncated?)",
                      entry, pos, "warning")
            return None
        pos += 8 + nbytes
        f.seek(pos)
    return pos


def keep_partial(walk: Walk, error: PickleFormatError, entry: str | None, index: int, extra: bool = False) -> bool:
    """Keep what a malformed pickle did before it broke: an unpickler runs every opcode up to the
    failure, so imports and calls seen there are judged like any others. True if it had any."""
    run = error.run
    if run is None or not (run.globals or run.problems):
        return False
    run.end = error.offset
    walk.streams.append(Stream(entry, index, run, extra=extra))
    return True


def _legacy_element_sizes(persids: list[Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for pid in persids:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], Global):
            kind = pid[1].name.removesuffix("Storage")
            if kind in STORAGE_ELEMENT_SIZE and isinstance(pid[2], str):
                sizes[pid[2]] = STORAGE_ELEMENT_SIZE[kind]
    return sizes


def walk_extra(f: IO[bytes], pos: int, end: int, entry: str | None, walk: Walk) -> None:
    """Bytes after the data a loader reads: scanned as further pickles (a loader calling
    pickle.load again would run them); what is not a pickle is reported as trailing data."""
    index = len([s for s in walk.streams if s.entry == entry])
    while pos < end:
        f.seek(pos)
        try:
            run = run_pickle(f, pos, end)
        except PickleFormatError as e:
            if keep_partial(walk, e, entry, index + 1, extra=True):
                walk.note("malformed", f"a truncated pickle follows the data: {e} at byte {e.offset}", entry, e.offset)
            else:
                walk.note("trailing-data", f"{end - pos:,} bytes after the last pickle are not a pickle", entry, pos,
                          "warning")
            return
        index += 1
        walk.streams.append(Stream(entry, index, run, extra=True))
        pos = run.end


def _looks_like_text(f: IO[bytes], start: int) -> bool:
    f.seek(start)
    chunk = f.read(4096)
    if b"\x00" in chunk:
        return False
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(chunk) - 4  # a character cut at the chunk's end
    return True


def _what_else(head: bytes, f: IO[bytes]) -> tuple[str, str]:
    f.seek(0)
    chunk = f.read(4096)
    text = chunk.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "html", "an HTML/XML page (a failed download or an error page saved under this name)"
    if text.startswith((b"{", b"[")):
        return "json", "a JSON document"
    if _looks_like_text(f, 0):
        return "text", "a text file"
    return "unknown", "an unrecognised binary file (neither pickle, zip, tar nor safetensors)"
