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
- a torch.distributed.checkpoint shard (``*.distcp``, FSDP's sharded saves): one ``torch.save``
  archive per item, each walked like a torch zip (``dcp`` finds them; its ``.metadata`` is a
  plain pickle stream).

torch decides "zip" only when the file starts with ``PK\\x03\\x04``; a zip with a prefix is read
as a legacy pickle, so both the prefix and the zip entries are scanned (a polyglot).
"""

from __future__ import annotations

import os
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from doctor.files import DISTCP_SUFFIX, LFS_POINTER_PREFIX
from doctor.io.pickle import dcp
from doctor.io.pickle.streams import Walk, walk_pickles
from doctor.io.pickle.tar import walk_tar_members

LFS_PREFIX = LFS_POINTER_PREFIX
_IN_MEMORY = 64 << 20  # zip entries up to this size are read into memory for speed
_META_ENTRIES = {"version", "byteorder", ".format_version", ".storage_alignment", "serialization_id"}


def walk_file(path: str) -> Walk:
    """Find and walk every pickle in ``path``. Raises OSError only when the file cannot be read."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
        if size == 0:
            return Walk("empty", "an empty file")
        if path.lower().endswith(DISTCP_SUFFIX):
            return _walk_distcp(path, f, size)
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
            walk = Walk("torch-tar", "torch's old tar format")
            walk_tar_members(f, walk)
            return walk
        walk = Walk("pickle")
        f.seek(0)
        walk_pickles(f, 0, size, None, walk, head)
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


def _walk_distcp(path: str, f: IO[bytes], size: int) -> Walk:
    walk = Walk("dcp", "a torch.distributed.checkpoint shard (a torch.save archive per item)")
    spans = dcp.item_spans(Path(path))
    if not spans:  # no metadata, or none that places anything in this file: find the archives themselves
        spans = dcp.archive_spans(Path(path))
        walk.detail += "; no .metadata beside it places its items: found by their zip records"
    for offset, length in spans:
        label = f"item at byte {offset:,}"
        if offset < 0 or length <= 0 or offset + length > size:
            walk.note("malformed", f"{label}: the metadata places {length:,} bytes there, past the end of the "
                      f"{size:,}-byte file (an interrupted save or copy)", None, offset)
            continue
        try:
            z = dcp.open_item(f, offset, length)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            walk.note("malformed", f"{label}: not a torch.save archive: {e}", None, offset)
            continue
        with z:
            _walk_archive(z, walk, f"{label}: ")
    return walk


def _walk_zip(path: str, walk: Walk) -> Walk:
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        walk.note("malformed", f"a zip archive that cannot be read: {e}")
        return walk
    with z:
        _walk_archive(z, walk)
    return walk


def _walk_archive(z: zipfile.ZipFile, walk: Walk, label: str = "") -> None:
    """Every pickle of one open archive; entries are named ``label`` + their name."""
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
        walk.note("polyglot", f"{min(i.header_offset for i in infos):,} bytes precede the zip archive: "
                  "torch.load does not see a zip there and unpickles the prefix instead", label[:-2] or None, 0)
    for name in sorted({n for n in names if names.count(n) > 1}):
        walk.note("polyglot", f"the zip holds {names.count(name)} entries named {name}: zip readers "
                  "disagree on which one they load", label + name, None, "warning")
    for info in infos:
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            walk.note("malformed", "encrypted zip entry: it cannot be verified", label + info.filename)
            continue
        if info in pickles or _entry_looks_pickled(z, info):
            _scan_entry(z, info, walk, label)


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


def _scan_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, walk: Walk, label: str = "") -> None:
    import io

    entry = label + info.filename
    try:
        with z.open(info) as raw:
            if info.file_size <= _IN_MEMORY:
                data = raw.read()
                walk_pickles(io.BytesIO(data), 0, len(data), entry, walk)
            else:
                walk_pickles(raw, 0, info.file_size, entry, walk)  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as e:
        walk.note("malformed", f"zip entry cannot be read: {e}", entry)


