"""Where the pickles are: the containers torch and others put them in, found the way the
loaders find them, plus what a file really is when it is not what its name says.

- torch zip (``torch.save`` since 1.6): every ``*.pkl`` entry of the archive, whatever the
  folder name, and any other entry that starts like a pickle (raw ``data/N`` storages are
  skipped); stored or deflated, data descriptors, comments, prefixes: Python's ``zipfile``
  reads the central directory.
- torch legacy (``_use_new_zipfile_serialization=False``): five pickles in a row (magic number,
  protocol, sys info, the object, the storage keys), then the raw storages, walked by their
  8-byte element counts; anything after them is scanned too.
- torch tar (before 0.4): the ``sys_info``, ``pickle``, ``storages`` and ``tensors`` members,
  pickles interleaved with raw data, walked as torch's ``legacy_load`` reads them.
- a plain pickle stream: every concatenated pickle up to the end of the file.

torch decides "zip" only when the file starts with ``PK\\x03\\x04``; a zip with a prefix is read
as a legacy pickle, so both the prefix and the zip entries are scanned (a polyglot).
"""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

from doctor.io._pickle_vm import Global, PersId, PickleFormatError, PickleRun, run_pickle

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LFS_PREFIX = b"version https://git-lfs.github.com/spec/"
_IN_MEMORY = 64 << 20  # zip entries up to this size are read into memory for speed
_META_ENTRIES = {"version", "byteorder", ".format_version", ".storage_alignment", "serialization_id"}
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


def walk_file(path: str) -> Walk:
    """Find and walk every pickle in ``path``. Raises OSError only when the file cannot be read."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
        if size == 0:
            return Walk("empty", "an empty file")
        if head.startswith(b"PK\x03\x04"):
            return _walk_zip(path, Walk("zip"))
        if head.startswith(LFS_PREFIX):
            return Walk("lfs-pointer", "a Git-LFS pointer file (the download skipped LFS)")
        if len(head) >= 9:
            (n,) = struct.unpack("<Q", head[:8])
            if 0 < n <= size - 8 and head[8:9] == b"{":
                return Walk("safetensors", "a safetensors file")
        for magic, fmt, detail in _MAGICS:
            if head.startswith(magic):
                return Walk(fmt, detail)
        if _is_tar(f):
            return _walk_tar(f, Walk("torch-tar", "torch's old tar format"))
        walk = Walk("pickle")
        f.seek(0)
        _walk_pickles(f, 0, size, None, walk, head)
    if walk.format == "pickle" and _zip_inside(path):
        walk.note("polyglot", "a zip archive follows a pickle prefix: torch.load reads the prefix as a "
                  "legacy pickle, zip tools read the archive", None, 0)
        _walk_zip(path, walk)
    return walk


_MAGICS = (
    (b"GGUF", "gguf", "a GGUF file (llama.cpp)"),
    (b"\x93NUMPY", "numpy", "a NumPy .npy array"),
    (b"\x1f\x8b", "gzip", "a gzip-compressed file"),
    (b"\x89HDF\r\n\x1a\n", "hdf5", "an HDF5 file (Keras/TF .h5)"),
    (b"\x89PNG", "image", "a PNG image"),
    (b"\xff\xd8\xff", "image", "a JPEG image"),
)


def _is_tar(f: IO[bytes]) -> bool:
    f.seek(0)
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
    finally:
        f.seek(0)


def _zip_inside(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return False


def _walk_pickles(f: IO[bytes], start: int, end: int, entry: str | None, walk: Walk, head: bytes = b"") -> None:
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
    _walk_extra(f, pos, end, entry, walk)


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


def _walk_extra(f: IO[bytes], pos: int, end: int, entry: str | None, walk: Walk) -> None:
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


def _walk_zip(path: str, walk: Walk) -> Walk:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        walk.note("malformed", f"a zip archive that cannot be read: {e}")
        return walk
    with z:
        infos = z.infolist()
        pickles = [i for i in infos if not i.is_dir() and i.filename.endswith(".pkl")]
        names = [i.filename for i in infos]
        if walk.format == "zip":
            torch_like = any(n.endswith("/data.pkl") for n in names)
            script = any("/code/" in n for n in names)
            walk.format = "torch-zip" if torch_like else ("zip-pickle" if pickles else "zip")
            walk.detail = ("a TorchScript archive" if script else "a torch zip checkpoint") if torch_like else (
                "a zip archive with pickles" if pickles else f"a zip archive of {len(names)} entries without any pickle")
        if infos and min(i.header_offset for i in infos) > 0 and walk.format != "pickle":
            walk.note("polyglot", f"{min(i.header_offset for i in infos):,} bytes precede the zip archive: torch.load "
                      "does not see a zip there and unpickles the prefix instead", None, 0)
        for name in sorted({n for n in names if names.count(n) > 1}):
            walk.note("polyglot", f"the zip holds {names.count(name)} entries named {name}: zip readers "
                      "disagree on which one they load", name, None, "warning")
        for info in infos:
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                walk.note("malformed", "encrypted zip entry: it cannot be verified", info.filename)
                continue
            if info in pickles or _entry_looks_pickled(z, info):
                _scan_entry(z, info, walk)
    return walk


def _entry_looks_pickled(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    parts = info.filename.split("/")
    if parts[-1] in _META_ENTRIES or "data" in parts[:-1] or info.file_size < 2:
        return False
    try:
        with z.open(info) as f:
            head = f.read(2)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
        return True  # let _scan_entry report it
    return head[:1] == b"\x80" and 2 <= head[1] <= 5


def _scan_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, walk: Walk) -> None:
    import io

    try:
        with z.open(info) as raw:
            if info.file_size <= _IN_MEMORY:
                data = raw.read()
                _walk_pickles(io.BytesIO(data), 0, len(data), info.filename, walk)
            else:
                _walk_pickles(raw, 0, info.file_size, info.filename, walk)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        walk.note("malformed", f"zip entry cannot be read: {e}", info.filename)


def _walk_tar(f: IO[bytes], walk: Walk) -> Walk:
    from doctor.io._pickle_tar import walk_tar_members

    walk_tar_members(f, walk)
    return walk


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


def persistent_tuple(value: Any) -> tuple[Any, ...] | None:
    return value.pid if isinstance(value, PersId) and isinstance(value.pid, tuple) else None
