"""Pure-Python safetensors header reader and validator.

Reads only the 8-byte length and the JSON header, never tensor data, and validates them by the
reference implementation's rules (safetensors ``src/tensor.rs``): header length limit, header
inside the file, UTF-8 JSON object, known dtypes, non-negative shapes, offsets sorted and
contiguous from 0, byte size = elements x dtype size, last offset = data length, no duplicate
names, string-only metadata. A malformed file yields ``HeaderProblem`` entries, never an
exception and never a large allocation.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.files import LFS_POINTER_PREFIX

MAX_HEADER_SIZE = 100_000_000
LFS_PREFIX = LFS_POINTER_PREFIX

# Element size in bits (sub-byte float formats pack several elements per byte).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64,
    "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
DTYPE_SIZES: dict[str, float] = {k: v / 8 for k, v in DTYPE_BITS.items()}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in the file
    end: int
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class HeaderProblem:
    """One violated rule. ``rule`` is a stable id: unreadable, file-too-small, lfs-pointer,
    header-too-large, header-truncated, header-not-utf8, header-not-json, header-not-object,
    duplicate-name, nul-in-name, bad-entry, bad-dtype, bad-shape, bad-offsets, offsets-gap,
    offsets-overlap, offsets-outside-file, size-mismatch, file-length-mismatch,
    metadata-not-strings."""

    rule: str
    message: str
    tensor: str | None = None


@dataclass
class SafetensorsHeader:
    path: str
    header_len: int = 0
    file_size: int = 0
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, str] | None = None
    problems: list[HeaderProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def is_lfs_pointer(path: str | os.PathLike[str]) -> bool:
    """A Git-LFS pointer text file standing in for the real weights."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_PREFIX)) == LFS_PREFIX
    except OSError:
        return False


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of one .safetensors file. Never raises for bad content."""
    result = SafetensorsHeader(str(path))
    problems = result.problems
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            result.file_size = size
            head = f.read(8)
            if head.startswith(LFS_PREFIX[:8]) and (head + f.read(len(LFS_PREFIX) - 8)) == LFS_PREFIX:
                problems.append(HeaderProblem(
                    "lfs-pointer", "this is a Git-LFS pointer file, not the weights: the download skipped LFS"))
                return result
            if len(head) < 8:
                problems.append(HeaderProblem("file-too-small", f"file is {size} bytes; a safetensors file starts with an 8-byte header length"))
                return result
            (n,) = struct.unpack("<Q", head)
            result.header_len = n
            if n > MAX_HEADER_SIZE:
                problems.append(HeaderProblem("header-too-large", f"declared header length {n:,} bytes exceeds the 100,000,000-byte limit (HeaderTooLarge): the file is corrupt or not safetensors"))
                return result
            if 8 + n > size:
                problems.append(HeaderProblem("header-truncated", f"declared header length {n:,} runs past the end of the {size:,}-byte file (InvalidHeaderLength): truncated download?"))
                return result
            raw = f.read(n)
    except OSError as e:
        problems.append(HeaderProblem("unreadable", f"cannot read file: {e.strerror or e}"))
        return result

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(HeaderProblem("header-not-utf8", f"header is not UTF-8 at byte {e.start} (InvalidHeader)"))
        return result
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen

    try:
        header = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as e:
        problems.append(HeaderProblem("header-not-json", f"header is not valid JSON: {e} (InvalidHeaderDeserialization)"))
        return result
    if not isinstance(header, dict):
        problems.append(HeaderProblem("header-not-object", f"header is a JSON {type(header).__name__}, not an object"))
        return result
    if not text.startswith("{"):
        shown = repr(text[: len(text) - len(text.lstrip())][:8])
        problems.append(HeaderProblem("header-not-brace", f"the header starts with {shown}, not '{{' (the format "
                                                          "says it starts with '{{'; safetensors reads it, stricter "
                                                          "readers may not)"))
    for name in duplicates:
        problems.append(HeaderProblem("duplicate-name", f"tensor name {name!r} appears twice in the header", name))

    meta = header.pop("__metadata__", None)
    if meta is not None:
        if isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            result.metadata = meta
        else:
            problems.append(HeaderProblem("metadata-not-strings", "__metadata__ must map strings to strings"))
    _validate_entries(result, header, data_start=8 + n, data_len=size - 8 - n)
    return result


def _validate_entries(result: SafetensorsHeader, header: dict[str, Any], data_start: int, data_len: int) -> None:
    problems = result.problems
    entries: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if "\x00" in name:
            problems.append(HeaderProblem("nul-in-name", f"tensor name {name!r} contains a NUL byte", name))
        if not isinstance(info, dict):
            problems.append(HeaderProblem("bad-entry", f"entry for {name!r} is not an object", name))
            continue
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            problems.append(HeaderProblem("bad-dtype", f"tensor {name!r} has unknown dtype {dtype!r}", name))
            continue
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            problems.append(HeaderProblem("bad-shape", f"tensor {name!r} has invalid shape {shape!r}", name))
            continue
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            problems.append(HeaderProblem("bad-offsets", f"tensor {name!r} has invalid data_offsets {offsets!r}", name))
            continue
        start, end = offsets
        numel = math.prod(shape)
        expected_bits = numel * DTYPE_BITS[dtype]
        if expected_bits % 8 or expected_bits // 8 != end - start:
            problems.append(HeaderProblem(
                "size-mismatch",
                f"tensor {name!r}: {dtype} {tuple(shape)} needs {expected_bits / 8:,.0f} bytes but data_offsets span {end - start:,}",
                name))
        entries.append((start, end, name))
        result.tensors[name] = TensorInfo(name, dtype, tuple(shape), data_start + start, data_start + end, result.path)

    entries.sort()
    cursor = 0
    for start, end, name in entries:
        if start > cursor:
            problems.append(HeaderProblem("offsets-gap", f"tensor {name!r} starts at {start:,}, leaving a gap after {cursor:,} (InvalidOffset)", name))
        elif start < cursor:
            problems.append(HeaderProblem("offsets-overlap", f"tensor {name!r} starts at {start:,}, overlapping data ending at {cursor:,} (InvalidOffset)", name))
        if end > data_len:
            problems.append(HeaderProblem("offsets-outside-file", f"tensor {name!r} ends at {end:,}, past the {data_len:,} bytes of data in the file", name))
        cursor = max(cursor, end)
    if cursor != data_len and not any(p.rule == "offsets-outside-file" for p in problems):
        problems.append(HeaderProblem(
            "file-length-mismatch",
            f"tensor data ends at {cursor:,} but the file holds {data_len:,} data bytes (MetadataIncompleteBuffer)"
            + (": truncated file" if cursor > data_len else ": trailing bytes")))


@dataclass
class FolderTensors:
    """Tensors of a model or adapter folder, from a single file or a sharded index."""

    folder: str
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    index: dict[str, Any] | None = None
    headers: dict[str, SafetensorsHeader] = field(default_factory=dict)
    problems: list[HeaderProblem] = field(default_factory=list)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.tensors.items()}


def read_folder_tensors(folder: str | os.PathLike[str], stem: str = "model") -> FolderTensors:
    """Read the headers of ``<stem>.safetensors`` or of the shards named by
    ``<stem>.safetensors.index.json`` in ``folder``. Problems are collected, never raised.

    A shard missing on disk or a weight_map entry pointing outside the folder is a problem
    (rule ``missing-shard`` / ``shard-outside-folder``); headers are read once per shard."""
    root = Path(folder)
    out = FolderTensors(str(root))
    index_path = root / f"{stem}.safetensors.index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_bytes())
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict):
                raise ValueError("no weight_map object")
        except (OSError, ValueError, RecursionError) as e:
            out.problems.append(HeaderProblem("bad-index", f"{index_path.name} is unreadable: {e}"))
            return out
        out.index = index
        shard_names = sorted({str(v) for v in weight_map.values()})
        for shard in shard_names:
            shard_path = (root / shard)
            if Path(shard).is_absolute() or ".." in Path(shard).parts:
                out.problems.append(HeaderProblem("shard-outside-folder", f"weight_map names {shard!r}, outside the folder"))
                continue
            if not shard_path.is_file():
                out.problems.append(HeaderProblem("missing-shard", f"shard {shard} named in {index_path.name} is missing"))
                continue
            _add_file(out, shard_path)
        return out
    single = root / f"{stem}.safetensors"
    candidates = [single] if single.is_file() else sorted(root.glob(f"{stem}*.safetensors"))
    for path in candidates:
        _add_file(out, path)
    return out


def _add_file(out: FolderTensors, path: Path) -> None:
    header = read_header(path)
    out.headers[str(path)] = header
    out.files.append(str(path))
    out.problems.extend(header.problems)
    for name, info in header.tensors.items():
        if name in out.tensors:
            out.problems.append(HeaderProblem("duplicate-name", f"tensor {name!r} is in both {Path(out.tensors[name].file).name} and {path.name}", name))
        out.tensors[name] = info
